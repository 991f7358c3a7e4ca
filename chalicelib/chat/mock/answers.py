"""MOCK_LLM: the answer of each operation made here, without a replica (after auth and rate limiting).

Imported only in that mode (chalicelib.chat.service), so a real deployment's cold start never pays for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from chalicelib.chat.mock import completions, embeddings, replies
from chalicelib.chat.operations import CHAT, COMPLETIONS, EMBEDDINGS, Operation
from chalicelib.core.errors import BadRequest

_ANSWERS: dict[str, Callable[..., dict[str, Any]]] = {
    CHAT.name: replies.completion,
    COMPLETIONS.name: completions.completion,
    EMBEDDINGS.name: embeddings.embeddings,
}
_EVENTS: dict[str, Callable[..., Iterator[bytes]]] = {
    CHAT.name: replies.stream_events,
    COMPLETIONS.name: completions.stream_events,
}
# What the mock model refuses of a valid request (its size), as (param, message).
_PROBLEMS: dict[str, Callable[[dict[str, Any]], tuple[str, str] | None]] = {
    COMPLETIONS.name: completions.size_problem,
    EMBEDDINGS.name: embeddings.request_problem,
}


def answer(operation: Operation, body: dict[str, Any], model: str) -> dict[str, Any]:
    """The whole answer; a request the mock model cannot serve (too many dimensions) is a 400 naming why."""
    _refuse_what_the_mock_cannot_make(operation, body)
    return _ANSWERS[operation.name](body, model=model)


def stream_events(operation: Operation, body: dict[str, Any], model: str) -> Iterator[bytes]:
    """The streamed answer as server-sent events, `data: [DONE]` last (operations that can stream only)."""
    _refuse_what_the_mock_cannot_make(operation, body)
    return _EVENTS[operation.name](body, model=model)


def _refuse_what_the_mock_cannot_make(operation: Operation, body: dict[str, Any]) -> None:
    problem = _PROBLEMS[operation.name](body) if operation.name in _PROBLEMS else None
    if problem:
        raise BadRequest(problem[1], param=problem[0])
