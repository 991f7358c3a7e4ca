"""vLLM-shaped replies to `POST /v1/completions`, computed without a model: for MOCK_LLM mode, the local mock
replica and the tests. Standard library only, like chalicelib.chat.mock.replies, whose answers these are.

Each prompt is answered as a chat whose one user message is that prompt would be (same words, same
sampling parameters: `max_tokens`, `stop`, `n`, `min_tokens`, `ignore_eos`). A prompt of token ids reads
as the words `t<id>`, one token each. With a list of prompts there are n choices per prompt, indexed
prompt by prompt as vLLM does; `echo` puts a string prompt before its text.

Wire decisions, as vLLM's: objects are `text_completion`; a streamed choice's tokens come one per chunk
(`text`, `finish_reason` null), then a chunk of its own with `text` "" and the finish; with
`stream_options.include_usage`, one more chunk `"choices": []` with the usage, before `data: [DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from chalicelib.chat.mock import replies

MAX_CHOICES = 128  # prompts times n: the mock model's bound, as vLLM's is its memory
_PROMPT_PROBLEM = "prompt: Field required (a string, a list of strings, of token ids or of lists of token ids)."


def request_problem(request: dict[str, Any]) -> str | None:
    """Why vLLM would refuse this completion request with a 400, or None (for callers that have not validated it)."""
    if not is_prompt(request.get("prompt")):
        return _PROMPT_PROBLEM
    problem = replies.request_problem({**request, "messages": [{"role": "user", "content": ""}]})
    if problem:
        return problem
    too_large = size_problem(request)
    return too_large[1] if too_large else None


def size_problem(request: dict[str, Any]) -> tuple[str, str] | None:
    """(param, message) when a valid request asks for more choices than the mock model makes, or None."""
    prompt = request.get("prompt")
    count = len(prompt) if isinstance(prompt, list) and not _token_ids(prompt) else 1
    if count * (request.get("n") or 1) > MAX_CHOICES:
        return "n", f"n: the mock model makes at most {MAX_CHOICES} choices per request (prompts times n)."
    return None


def is_prompt(prompt: Any) -> bool:
    """A string, or a non-empty list of strings, of token ids, or of non-empty lists of token ids."""
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list) or not prompt:
        return False
    if all(isinstance(item, str) for item in prompt) or _token_ids(prompt):
        return True
    return all(isinstance(item, list) and item and _token_ids(item) for item in prompt)


def _token_ids(items: list[Any]) -> bool:
    return all(isinstance(item, int) and not isinstance(item, bool) for item in items)


def completion(request: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A non-streamed `text_completion` object as vLLM returns it."""
    choices = []
    for index, text, answer in _choices(request):
        choices.append({"index": index, "text": text + answer.content, "logprobs": None,
                        "finish_reason": answer.finish_reason, "stop_reason": answer.stop_reason,
                        "prompt_logprobs": None})
    usage = {**_usage(request), "prompt_tokens_details": None}
    return {"id": _completion_id(), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def stream_chunks(request: dict[str, Any], *, model: str) -> Iterator[dict[str, Any]]:
    """The `text_completion` chunks of a streamed reply, in order, without the final `[DONE]`."""
    header = {"id": _completion_id(), "object": "text_completion", "created": int(time.time()), "model": model}

    running = replies.running_usage(request, _usage(request)["prompt_tokens"])

    def chunk(index: int, text: str, finish_reason: str | None = None, stop_reason: str | None = None,
              tokens: int = 1) -> dict:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason,
                  "stop_reason": stop_reason}
        return running({**header, "choices": [choice]}, tokens if text else 0)

    for index, echoed, answer in _choices(request):
        if echoed:
            yield chunk(index, echoed, tokens=0)  # the prompt, echoed: no completion token
        for piece in answer.pieces:
            yield chunk(index, piece)
        yield chunk(index, "", answer.finish_reason, answer.stop_reason)
    if (request.get("stream_options") or {}).get("include_usage"):
        yield {**header, "choices": [], "usage": _usage(request)}


def stream_events(request: dict[str, Any], *, model: str) -> Iterator[bytes]:
    """The whole streamed reply as SSE bytes, one event per chunk, ending with `data: [DONE]`."""
    for chunk in stream_chunks(request, model=model):
        yield replies.encode_event(chunk)
    yield replies.DONE_EVENT


def prompts(request: dict[str, Any]) -> list[tuple[str, int]]:
    """Each prompt's text and token count: a string (or a list of them), token ids (or a list of those)."""
    prompt = request.get("prompt", "")
    if isinstance(prompt, str) or (prompt and all(isinstance(item, int) for item in prompt)):
        prompt = [prompt]
    return [_text_and_count(item) for item in prompt]


def _text_and_count(prompt: str | list[int]) -> tuple[str, int]:
    if isinstance(prompt, str):
        return prompt, len(replies.tokenize(prompt))
    return " ".join(f"t{token}" for token in prompt), len(prompt)


def _choices(request: dict[str, Any]) -> Iterator[tuple[int, str, replies.Answer]]:
    """(index, echoed prompt text, answer) of every choice, n per prompt."""
    index = 0
    for text, _ in prompts(request):
        echoed = text if request.get("echo") else ""
        for answer in replies.answer_choices({**request, "messages": [{"role": "user", "content": text}]}):
            yield index, echoed, answer
            index += 1


def _usage(request: dict[str, Any]) -> dict[str, int]:
    prompt = sum(count for _, count in prompts(request))
    completion_tokens = sum(len(answer.pieces) for _, _, answer in _choices(request))
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion_tokens, "completion_tokens": completion_tokens}


def _completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"
