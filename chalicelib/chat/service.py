"""`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: authenticate, rate-limit, pick a replica,
relay, meter. One pipeline for the three; what sets each apart is its Operation (chalicelib.chat.operations).

Transport-neutral: the local server and the Lambda streaming loop both call `handle` and write
the ChatResponse it returns. One DynamoDB round trip happens before the replica is contacted
(the key's conditional update), plus the replica list when the function's cache is cold.

Every request has a deadline. Lambda kills the function at the invocation's deadline and nothing runs
after it, so the answer must end ROW_MARGIN_SECONDS before: time to send the error event, close the
upstream request and write the usage row (with its retries). Without a Lambda deadline (locally) the
answer has CHAT_DEADLINE_SECONDS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping

from chalicelib.bearer import bearer_token
from chalicelib.chat import access, routing, sse, upstream
from chalicelib.chat.access import Caller
from chalicelib.chat.metering import CLIENT_CLOSED, Meter
from chalicelib.chat.openai_errors import error_response
from chalicelib.chat.operations import CHAT, Operation
from chalicelib.chat.relay import read_answer, relay_events, upstream_error, upstream_events
from chalicelib.chat.request import ChatRequest, parse_request
from chalicelib.chat.response import ChatResponse
from chalicelib.errors import ApiError, NotFound, Unauthorized
from chalicelib.settings import get_chat_settings

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
JSON_HEADERS = {"content-type": "application/json"}
ROW_MARGIN_SECONDS = 3.0  # the usage row's retries wait 2.1 s at most (metering.RETRY_DELAYS)
_LAST_SAVE_SECONDS = 0.5  # no retry of the row starts later than this before the invocation's end


def handle(headers: Mapping[str, str], body: bytes, deadline: float | None = None,
           operation: Operation = CHAT) -> ChatResponse:
    """The answer to one request of `operation`. `deadline`: when the invocation ends (a time.time(); Lambda's)."""
    started_at = time.time()
    if deadline is None:
        deadline = started_at + get_chat_settings().deadline_seconds + ROW_MARGIN_SECONDS
    answer_by = deadline - ROW_MARGIN_SECONDS
    try:
        token = _bearer_token(headers)
        request = parse_request(body, get_chat_settings().max_body_bytes, operation)
        caller = access.admit(token, request.model, started_at)
    except ApiError as error:
        return error_response(error)
    meter = Meter(caller, request, started_at, deadline=deadline - _LAST_SAVE_SECONDS)
    try:
        response = _answer(request, caller, meter, started_at, answer_by)
    except ApiError as error:
        meter.status = error.status
        response = error_response(error, caller.rate_limit_headers())
    response.body = _Metered(response.body, meter)
    response.on_close = meter.write
    return response


def _answer(request: ChatRequest, caller: Caller, meter: Meter, now: float, deadline: float) -> ChatResponse:
    headers = caller.rate_limit_headers()
    if get_chat_settings().mock_llm:
        return _mock_answer(request, meter, headers)
    targets = routing.targets_for(request.model)
    target, reply = upstream.send(targets, request.upstream_body(), request.stream, now, deadline,
                                  path=request.operation.replica_path)
    meter.replica_id = target.replica_id
    if reply.status >= 400:
        raise upstream_error(reply)
    if request.stream:
        events = relay_events(upstream_events(reply, deadline), meter, request.client_wants_usage)
        return ChatResponse(200, {**SSE_HEADERS, **headers}, events, streamed=True)
    answer = read_answer(reply, meter, deadline, get_chat_settings().max_answer_bytes)
    return ChatResponse(200, {**JSON_HEADERS, **headers}, iter([answer]))


def _mock_answer(request: ChatRequest, meter: Meter, headers: dict[str, str]) -> ChatResponse:
    """MOCK_LLM: a vLLM-shaped answer made here, after auth and rate limiting, still metered."""
    from chalicelib.chat import mock_answers

    if not routing.model_exists(request.model):
        raise NotFound(f"The model `{request.model}` does not exist.", code="model_not_found", param="model")
    if request.stream:
        body = request.body | {"stream_options": {"include_usage": True}}
        events = sse.parse(mock_answers.stream_events(request.operation, body, request.model))
        return ChatResponse(200, {**SSE_HEADERS, **headers}, relay_events(events, meter, request.client_wants_usage),
                            streamed=True)
    answer = mock_answers.answer(request.operation, request.body, request.model)
    meter.observe_answer(answer)
    meter.first_token()
    return ChatResponse(200, {**JSON_HEADERS, **headers}, iter([json.dumps(answer).encode()]))


class _Metered:
    """The body; closed before its end, it records that the client went away and ends the upstream request.

    A class rather than a generator: a generator closed before its first chunk runs none of its code,
    and a transport may fail before the first chunk (the Lambda runtime sends the prelude first).
    """

    def __init__(self, chunks: Iterator[bytes], meter: Meter) -> None:
        self._chunks = chunks
        self._meter = meter
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self._ended = True  # its end, or a failure the transport reports: not the client's doing
            raise

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._meter.status = CLIENT_CLOSED
        close = getattr(self._chunks, "close", None)
        if close:
            close()  # ends the upstream request at once when the client has gone


def _bearer_token(headers: Mapping[str, str]) -> str:
    token = bearer_token(headers.get("authorization"))
    if token is None:
        raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
    return token
