"""The metrics of one chat, completions or embeddings request (chalicelib.core.metric_names), emitted once it is
answered, its usage row written: nothing is added before the replica. One embedded metric format line per
dimension set (the format gives every metric of a line the same dimensions):

- every request: CHAT_REQUESTS by Outcome;
- an error the proxy answered itself: CHAT_REFUSALS by Reason, its error code (a bounded set: the codes this
  code base raises; `invalid_request_error` for a 4xx without one, `internal_error` for a failure of the proxy's
  own, a 500); a replica's own 4xx, passed on, is not one;
- an admitted request for a known model: CHAT_REQUESTS_BY_MODEL by Model and Outcome, and by Model its
  CHAT_DURATION, TIME_TO_FIRST_TOKEN and tokens when known. The model of a refused or unknown-model request
  is whatever the caller typed: it never becomes a dimension;
- a request that found replicas failing: REPLICA_FAILURES and FAILOVERS.
"""

from __future__ import annotations

from collections.abc import Iterator

from chalicelib.chat.metering import CLIENT_CLOSED, Meter
from chalicelib.core import metric_names as names
from chalicelib.core.errors import ApiError, ReplicaRefused
from chalicelib.core.observability import COUNT, MILLISECONDS, emit_metrics
from chalicelib.store.tables import Metric

UNKNOWN_MODEL = "model_not_found"
INVALID_REQUEST, INTERNAL_ERROR = "invalid_request_error", "internal_error"  # the reasons of errors without a code

Line = tuple[dict[str, str], list[tuple[str, str, float]]]  # dimensions besides the stage, and metrics


def outcome(status: int) -> str:
    """A status's class, as CHAT_REQUESTS counts it."""
    if status == CLIENT_CLOSED:
        return names.CLIENT_CLOSED
    if status >= 500:
        return names.SERVER_ERROR
    return names.CLIENT_ERROR if status >= 400 else names.OK


def refusal_reason(error: ApiError) -> str | None:
    """The reason a refusal is counted under: the error's code; None for a replica's own 4xx."""
    if isinstance(error, ReplicaRefused):
        return None
    return error.code or (INTERNAL_ERROR if error.status >= 500 else INVALID_REQUEST)


def emit_refused(error: ApiError) -> None:
    """A request answered with `error` before it was admitted (or a failure of the proxy's own)."""
    _emit(_lines(error.status, refusal_reason(error)))


def emit_answered(meter: Meter, row: Metric) -> None:
    """An admitted request, its row written (`row`: what it holds, the same figures)."""
    error = meter.error if meter.error is not None and meter.error.status == meter.status else None
    reason = refusal_reason(error) if error is not None else None
    model = None if reason == UNKNOWN_MODEL else meter.request.model
    _emit(_lines(meter.status, reason, model, row, meter))


def _lines(status: int, reason: str | None, model: str | None = None, row: Metric | None = None,
           meter: Meter | None = None) -> Iterator[Line]:
    yield {names.OUTCOME: outcome(status)}, [(names.CHAT_REQUESTS, COUNT, 1)]
    if reason is not None:
        yield {names.REASON: reason}, [(names.CHAT_REFUSALS, COUNT, 1)]
    if model is not None and row is not None:
        yield {names.MODEL: model, names.OUTCOME: outcome(status)}, [(names.CHAT_REQUESTS_BY_MODEL, COUNT, 1)]
        yield {names.MODEL: model}, _model_metrics(row)
    if meter is not None and meter.replica_failures:
        yield {}, [(names.REPLICA_FAILURES, COUNT, meter.replica_failures),
                   (names.FAILOVERS, COUNT, 1 if meter.failed_over else 0)]


def _model_metrics(row: Metric) -> list[tuple[str, str, float]]:
    metrics = [(names.CHAT_DURATION, MILLISECONDS, _ms(row.duration))]
    if row.time_to_first_token is not None:
        metrics.append((names.TIME_TO_FIRST_TOKEN, MILLISECONDS, _ms(row.time_to_first_token)))
    if row.prompt_tokens is not None:
        metrics.append((names.PROMPT_TOKENS, COUNT, int(row.prompt_tokens)))
    if row.completion_tokens is not None:
        metrics.append((names.COMPLETION_TOKENS, COUNT, int(row.completion_tokens)))
    return metrics


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1000, 1)


def _emit(lines: Iterator[Line]) -> None:
    for dimensions, metrics in lines:
        emit_metrics(dimensions, metrics)
