"""vLLM-shaped replies computed without a model: for MOCK_LLM mode, the local mock replica and the tests.

Standard library only, as the chat Lambda imports this module on its cold start.

The answer is deterministic: the same request gives the same content (ids and `created` differ). It reads
"Mock answer to: <up to 8 words of the last user message>" then filler words, DEFAULT_ANSWER_TOKENS tokens in
all. vLLM's own sampling parameters shape it: `max_tokens` / `max_completion_tokens` cap it (finish_reason
"length"), `stop` cuts it before the first stop string (finish_reason "stop", stop_reason the string),
`min_tokens` lengthens it, `ignore_eos` makes it run to the cap, `n` gives n choices (different filler).

Tokens: a word or a single punctuation mark (`tokenize`). The streamed pieces carry their leading space, as
a BPE tokenizer's would, so the pieces concatenated are the content and `len(tokenize(content))` is the
completion token count (unless a stop string cuts a piece down to whitespace).

Wire decisions (the proxy relies on them):
- Regular stream chunks carry no `usage` key at all (vLLM serialises chunks with `exclude_unset`); with
  `stream_options.include_usage` exactly one extra chunk, `"choices": []` with `usage`, comes before
  `data: [DONE]`. Its usage has no `prompt_tokens_details` key (vLLM drops nulls there); the non-streamed
  reply's usage has `"prompt_tokens_details": null`.
- With `include_usage` and `continuous_usage_stats` both (vLLM's running usage), every chunk also carries the
  usage so far: the prompt, and the completion tokens sent up to and including that chunk.
- The finish comes in a chunk of its own, `delta {"content": ""}` with `finish_reason` and `stop_reason`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_ANSWER_TOKENS = 16
MAX_ANSWER_TOKENS = 8192  # a bound on `ignore_eos` / `min_tokens`, so a typo cannot exhaust memory
DEFAULT_MAX_MODEL_LEN = 8192
DONE_EVENT = b"data: [DONE]\n\n"

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_ECHOED_WORDS = 8
_FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
           "et dolore magna aliqua").split()
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "min_tokens", "n")


@dataclass(frozen=True)
class Answer:
    pieces: tuple[str, ...]  # the streamed token texts, leading spaces included
    finish_reason: str
    stop_reason: str | None

    @property
    def content(self) -> str:
        return "".join(self.pieces)


def tokenize(text: str) -> list[str]:
    """The mock tokenizer: words and single punctuation marks."""
    return _TOKEN.findall(text)


def message_text(content: Any) -> str:
    """A message's text: string content, or the text parts of a list content joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return " ".join(texts)
    return ""


def prompt_tokens(request: dict[str, Any]) -> int:
    """Tokens of all message contents (roles and chat-template overhead are not counted)."""
    return sum(len(tokenize(message_text(message.get("content")))) for message in request["messages"])


def request_problem(request: Any) -> str | None:
    """Why vLLM would refuse this request with a 400, or None: for callers that have not validated it yet."""
    if not isinstance(request, dict):
        return "The request body must be a JSON object."
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "messages: Field required (a non-empty list of message objects)."
    for field in _INTEGER_FIELDS:
        value = request.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"{field}: must be a non-negative integer."
    stop = request.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        return "stop: must be a string or a list of strings."
    return None


def completion(request: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A non-streamed `chat.completion` object as vLLM returns it."""
    answers = answer_choices(request)
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "reasoning_content": None, "content": answer.content, "tool_calls": []},
            "logprobs": None,
            "finish_reason": answer.finish_reason,
            "stop_reason": answer.stop_reason,
        }
        for index, answer in enumerate(answers)
    ]
    usage = {**_usage(request, answers), "prompt_tokens_details": None}
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage, "prompt_logprobs": None}


def stream_chunks(request: dict[str, Any], *, model: str) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply, in order, without the final `[DONE]`.

    Per choice: a role chunk, one chunk per token, a finish chunk; then the usage chunk when asked for.
    Lazy, so a server can pace the token chunks (see `is_token_chunk`).
    """
    answers = answer_choices(request)
    header = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    running = running_usage(request, prompt_tokens(request))

    def chunk(index: int, delta: dict[str, str], **finish: Any) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None, **finish}
        return running({**header, "choices": [choice]}, 1 if delta.get("content") else 0)

    for index in range(len(answers)):
        yield chunk(index, {"role": "assistant", "content": ""})
    # With n > 1 vLLM interleaves the choices step by step; so does the mock.
    for step in range(max(len(answer.pieces) for answer in answers)):
        for index, answer in enumerate(answers):
            if step < len(answer.pieces):
                yield chunk(index, {"content": answer.pieces[step]})
    for index, answer in enumerate(answers):
        yield chunk(index, {"content": ""}, finish_reason=answer.finish_reason, stop_reason=answer.stop_reason)
    if (request.get("stream_options") or {}).get("include_usage"):
        yield {**header, "choices": [], "usage": _usage(request, answers)}


def running_usage(request: dict[str, Any], prompt: int) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    """`chunk, tokens -> chunk`: with vLLM's running usage asked for, the chunk with the usage so far added
    (`tokens` more completion tokens); otherwise the chunk as it is."""
    options = request.get("stream_options") or {}
    if not (options.get("include_usage") and options.get("continuous_usage_stats")):
        return lambda chunk, tokens: chunk
    sent = 0

    def add(chunk: dict[str, Any], tokens: int) -> dict[str, Any]:
        nonlocal sent
        sent += tokens
        return {**chunk, "usage": {"prompt_tokens": prompt, "total_tokens": prompt + sent, "completion_tokens": sent}}

    return add


def is_token_chunk(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries generated text (a chat delta's content, a completion's text): the chunks a
    pacing server waits before."""
    return any((choice.get("delta") or {}).get("content") or choice.get("text") for choice in chunk["choices"])


def encode_event(chunk: dict[str, Any]) -> bytes:
    """One server-sent event as vLLM frames it: `data: <compact JSON>` and a blank line."""
    return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def stream_events(request: dict[str, Any], *, model: str) -> Iterator[bytes]:
    """The whole streamed reply as SSE bytes, one event per chunk, ending with `data: [DONE]`."""
    for chunk in stream_chunks(request, model=model):
        yield encode_event(chunk)
    yield DONE_EVENT


def models_list(model: str, *, max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> dict[str, Any]:
    """vLLM's `GET /v1/models` body for a server serving `model`."""
    created = int(time.time())
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission", "created": created,
        "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False,
        "allow_view": True, "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
    }
    card = {"id": model, "object": "model", "created": created, "owned_by": "vllm", "root": model, "parent": None,
            "max_model_len": max_model_len, "permission": [permission]}
    return {"object": "list", "data": [card]}


def error_body(message: str, type_: str, code: int) -> dict[str, Any]:
    """vLLM's error JSON, e.g. ("The model `x` does not exist.", "NotFoundError", 404)."""
    return {"object": "error", "message": message, "type": type_, "param": None, "code": code}


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(request: dict[str, Any], answers: list[Answer]) -> dict[str, int]:
    prompt = prompt_tokens(request)
    completion_tokens = sum(len(answer.pieces) for answer in answers)
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion_tokens, "completion_tokens": completion_tokens}


def answer_choices(request: dict[str, Any]) -> list[Answer]:
    """One answer per choice (`n`) to the request's last user message, shaped by its sampling parameters."""
    cap = _token_cap(request)
    length = DEFAULT_ANSWER_TOKENS
    if request.get("ignore_eos") and cap is not None:
        length = cap
    length = min(max(length, request.get("min_tokens") or 0), MAX_ANSWER_TOKENS)
    stops = _stop_strings(request.get("stop"))
    return [_answer(request, choice, length, cap, stops) for choice in range(max(request.get("n") or 1, 1))]


def _token_cap(request: dict[str, Any]) -> int | None:
    caps = [request[field] for field in ("max_tokens", "max_completion_tokens") if request.get(field) is not None]
    return min(caps) if caps else None


def _stop_strings(stop: Any) -> list[str]:
    if isinstance(stop, str):
        stop = [stop]
    return [item for item in stop or [] if isinstance(item, str) and item]


def _answer(request: dict[str, Any], choice: int, length: int, cap: int | None, stops: list[str]) -> Answer:
    words = _answer_words(request, choice, length)
    # As in vLLM, reaching the cap is "length" even when the answer would have ended right there.
    capped = cap is not None and cap <= len(words)
    pieces = _pieces(words[:cap] if capped else words)
    text = "".join(pieces)
    hits = [(text.find(stop), stop) for stop in stops if stop in text]
    if hits:
        position, stop = min(hits)
        return Answer(_cut(pieces, position), "stop", stop)
    return Answer(tuple(pieces), "length" if capped else "stop", None)


def _answer_words(request: dict[str, Any], choice: int, length: int) -> list[str]:
    user_texts = [message_text(m.get("content")) for m in request["messages"] if m.get("role") == "user"]
    last_user = user_texts[-1] if user_texts else ""
    words = ["Mock", "answer", "to", ":", *_WORD.findall(last_user)[:_ECHOED_WORDS]]
    # crc32, not hash(): str hashes change from one process to the next.
    start = zlib.crc32(last_user.encode()) + 7 * choice
    filler_needed = max(length - len(words), 0)
    words += [_FILLER[(start + i) % len(_FILLER)] for i in range(filler_needed)]
    return words[:length]


def _pieces(words: list[str]) -> list[str]:
    # Punctuation sticks to the word before it; every other token carries its leading space.
    return [word if i == 0 or not _WORD.fullmatch(word) else f" {word}" for i, word in enumerate(words)]


def _cut(pieces: list[str], length: int) -> tuple[str, ...]:
    """The pieces covering the first `length` characters, the last one shortened if need be."""
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > length:
            if length > used:
                kept.append(piece[: length - used])
            break
        kept.append(piece)
        used += len(piece)
    return tuple(kept)
