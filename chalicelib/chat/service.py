"""`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: authenticate, rate-limit, pick a replica,
relay, meter. One pipeline for the three; what sets each apart is its Operation (chalicelib.chat.operations).

Transport-neutral: the local server and the Lambda streaming loop both call `handle` and write
the ChatResponse it returns. One DynamoDB round trip happens before the replica is contacted
(the key's conditional update), plus the replica list when the function's cache is cold.

Every request has a deadline. Lambda kills the function at the invocation's deadline and nothing runs
after it, so the answer must end ROW_MARGIN_SECONDS before: time to send the error event, close the
upstream request and write the usage row (with its retries). Without a Lambda deadline (locally) the
answer has CHAT_DEADLINE_SECONDS.

A model whose replicas all hibernate is woken by the request, answered 503 `model_waking` at once, or,
when the caller sends `X-Wait-For-Model: <seconds>`, once a replica serves: a stream then starts at once
and sends SSE comments while it waits, so that no intermediary gives up on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping

from chalicelib.chat import access, affinity, nudge, request_metrics, routing, sse, upstream, waking
from chalicelib.chat.access import Caller
from chalicelib.chat.metering import CLIENT_CLOSED, Meter
from chalicelib.chat.openai_errors import error_response, sse_error_event
from chalicelib.chat.operations import CHAT, Operation
from chalicelib.chat.relay import read_answer, relay_events, upstream_error, upstream_events
from chalicelib.chat.request import ChatRequest, parse_request
from chalicelib.chat.response import ChatResponse
from chalicelib.chat.routing import Target
from chalicelib.chat.waking import ModelWaking
from chalicelib.core.bearer import bearer_token
from chalicelib.core.errors import ApiError, NotFound, Unauthorized, UpstreamFailed
from chalicelib.core.settings import get_chat_settings

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
JSON_HEADERS = {"content-type": "application/json"}
ROW_MARGIN_SECONDS = 3.0  # the usage row's retries wait 2.1 s at most (metering.RETRY_DELAYS)
_LAST_SAVE_SECONDS = 0.5  # no retry of the row starts later than this before the invocation's end
WAIT_POLL_SECONDS = 1.0  # a waiting request reads the model's replicas this often while it wakes
WAITING_COMMENT = b": waiting for the model to wake\n\n"


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
        wait = waking.wait_seconds(headers, answer_by)
        caller = access.admit(token, request.model, started_at)
    except ApiError as error:
        return _refused(error)
    meter = Meter(caller, request, started_at, deadline=deadline - _LAST_SAVE_SECONDS)
    used = routing.UseMarks()
    try:
        response = _answer(request, caller, meter, started_at, answer_by, wait, used)
    except ApiError as error:
        meter.fail(error)
        response = error_response(error, caller.rate_limit_headers())
    response.body = _Metered(response.body, meter)
    response.on_close = lambda: _after(meter, used)
    return response


def _refused(error: ApiError) -> ChatResponse:
    """A request not admitted: no row, only its metrics, once answered."""
    response = error_response(error)
    response.on_close = lambda: request_metrics.emit_refused(error)
    return response


def _after(meter: Meter, used: routing.UseMarks) -> None:
    row = meter.write()
    request_metrics.emit_answered(meter, row)
    if not meter.demand_counted:
        routing.count_demand(meter.request.model, meter.started_at)
    _nudge_if_refused(meter)
    used.finish()  # the last minute of use too, and every mark written before the invocation ends


def _nudge_if_refused(meter: Meter) -> None:
    """A request of an autoscaled model refused for want of capacity nudges its scaler (chalicelib/chat/nudge.py)."""
    if meter.error is None or meter.error.code not in nudge.CAPACITY_REFUSALS:
        return
    scaled_id = routing.scaled_model_id(meter.request.model)
    if scaled_id is not None:
        nudge.nudge(scaled_id, meter.request.model, time.time())


def _answer(request: ChatRequest, caller: Caller, meter: Meter, now: float, deadline: float, wait: float,
            used: routing.UseMarks) -> ChatResponse:
    headers = caller.rate_limit_headers()
    if get_chat_settings().mock_llm:
        return _mock_answer(request, meter, headers)
    key = affinity.routing_key(request.body, request.operation) if get_chat_settings().prefix_affinity else None
    try:
        targets = routing.targets_for(request.model, key=key)
    except ModelWaking as asleep:
        if not wait:
            raise
        # It waits for a wake, answered minutes from now maybe: its demand counts now, so that the scaler does
        # not take the replica it wakes for one nobody wants.
        routing.count_demand(request.model, now)
        meter.demand_counted = True
        if request.stream:
            events = _once_awake(request, meter, now + wait, deadline, used, asked=asleep)
            return ChatResponse(200, {**SSE_HEADERS, **headers}, events, streamed=True)
        targets = _wait_for_targets(request.model, now + wait) or []
        if not targets:
            raise
    try:
        return _relay(request, targets, meter, deadline, headers, used)
    except UpstreamFailed:
        # Every cached replica refused: they may have changed since they were read (one gone into hibernation).
        others = routing.untried(request.model, targets, key)
        if not others:
            raise
        return _relay(request, others, meter, deadline, headers, used)


def _relay(request: ChatRequest, targets: list[Target], meter: Meter, deadline: float, headers: dict[str, str],
           used: routing.UseMarks) -> ChatResponse:
    attempts = upstream.Attempts()
    try:
        target, reply = upstream.send(targets, request.upstream_body(), request.stream, time.time(), deadline,
                                      path=request.operation.replica_path, attempts=attempts)
    finally:
        meter.replica_failures += attempts.failed
    meter.failed_over = attempts.failed > 0
    meter.replica_id = target.replica_id
    used.started(target)  # its minute of use, beside the answer: no hibernation while this request runs
    if reply.status >= 400:
        raise upstream_error(reply)
    if request.stream:
        events = relay_events(upstream_events(reply, deadline), meter, request.client_wants_usage,
                              request.client_wants_running_usage)
        return ChatResponse(200, {**SSE_HEADERS, **headers}, _marking_use(events, target, used), streamed=True)
    answer = read_answer(reply, meter, deadline, get_chat_settings().max_answer_bytes)
    return ChatResponse(200, {**JSON_HEADERS, **headers}, iter([answer]))


def _marking_use(events: Iterator[bytes], target: Target, used: routing.UseMarks) -> Iterator[bytes]:
    """The stream, recording each new minute of use while it runs (a stream may outlast hibernate_after_seconds)."""
    try:
        for event in events:
            used.tick(target)
            yield event
    finally:
        close = getattr(events, "close", None)
        if close:
            close()  # a client gone: the relay closes the replica's connection


def _wait_for_targets(model: str, until: float) -> list[Target] | None:
    """The model's targets once a replica serves, read afresh each WAIT_POLL_SECONDS; None at `until`."""
    for targets in _polled(model, until):
        if targets:
            return targets
    return None


def _polled(model: str, until: float) -> Iterator[list[Target]]:
    """The model's targets ([] while it wakes), read afresh each WAIT_POLL_SECONDS, until `until`."""
    while True:
        try:
            yield routing.targets_for(model, fresh=True)
            return
        except ModelWaking:
            left = until - time.time()
            if left <= 0:
                return
            yield []
            time.sleep(min(WAIT_POLL_SECONDS, left))


def _once_awake(request: ChatRequest, meter: Meter, until: float, deadline: float, used: routing.UseMarks,
                asked: ModelWaking) -> Iterator[bytes]:
    """A stream for a caller who waits: comments while the model wakes, then the answer (or an error event)."""
    targets: list[Target] = []
    try:
        for targets in _polled(request.model, until):
            if targets:
                break
            yield WAITING_COMMENT
        if not targets:
            raise asked
        yield from _relay(request, targets, meter, deadline, {}, used).body
    except ApiError as error:
        meter.fail(error)
        yield sse_error_event(error)


def _mock_answer(request: ChatRequest, meter: Meter, headers: dict[str, str]) -> ChatResponse:
    """MOCK_LLM: a vLLM-shaped answer made here, after auth and rate limiting, still metered."""
    from chalicelib.chat.mock import answers as mock_answers

    if not routing.model_exists(request.model):
        raise NotFound(f"The model `{request.model}` does not exist.", code="model_not_found", param="model")
    if request.stream:
        body = request.body | {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        events = sse.parse(mock_answers.stream_events(request.operation, body, request.model))
        relayed = relay_events(events, meter, request.client_wants_usage, request.client_wants_running_usage)
        return ChatResponse(200, {**SSE_HEADERS, **headers}, relayed, streamed=True)
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
