"""One structured logger for the service. Never log a key, a prompt or an answer.

Every line a function logs during an invocation carries the keys Powertools' `inject_lambda_context`
adds (function_name, function_memory_size, function_arn, function_request_id, cold_start; the
formatter itself adds xray_trace_id) and a `correlation_id`, and none of them outlives the invocation:

- Chalice's functions (the admin API, `provision`, `chat` answered whole) through `log_invocation`,
  a Chalice middleware for every event type;
- the streaming chat runtime, which has no context object, through `invocation_logging` directly.

Metrics (chalicelib.core.metric_names) are embedded metric format lines on stdout, beside the log lines: CloudWatch
reads them from the function's log, and `make run` prints them. `emit_metrics` writes one.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from chalicelib.core.metric_names import STAGE
from chalicelib.core.settings import get_settings

logger = Logger(service="hyperstack-llm-proxy")
METRICS_NAMESPACE = "HyperstackLlmProxy"  # CloudWatch metrics, emitted as embedded metric format log lines
COUNT, MILLISECONDS = "Count", "Milliseconds"  # the metrics' units (CloudWatch's names)
_stdout = threading.Lock()  # the local gateway answers requests on threads: one line must not cut into another

# A caller's own id, so that its logs and ours can be joined; the first one present wins.
CORRELATION_HEADERS = ("x-correlation-id", "x-request-id")
MAX_CORRELATION_ID_LENGTH = 128  # a caller's header must not fill our log lines

# Provisioned concurrency initializes instances ahead of any request: their first invocation is warm.
_cold_start = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != "provisioned-concurrency"


@contextmanager
def invocation_logging(context: Any, correlation_id: str) -> Iterator[None]:
    """Inside: every line carries the invocation's keys. After: no key added inside is left, so that
    nothing of one invocation shows on the next one's lines. `context` is Lambda's context object or
    anything with its attributes (function_name, memory_limit_in_mb, invoked_function_arn, aws_request_id)."""
    global _cold_start
    keys = {"cold_start": _cold_start, **build_lambda_context_model(context).__dict__,
            "correlation_id": correlation_id}
    _cold_start = False
    before = set(logger.get_current_keys())
    logger.append_keys(**keys)
    try:
        yield
    finally:
        logger.remove_keys([key for key in logger.get_current_keys() if key not in before])


def log_invocation(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware for every event type: an HTTP request (a chalice Request) or the event of an
    @app.lambda_function (its `.context` is Lambda's)."""
    if hasattr(event, "lambda_context"):
        context, raw_event = event.lambda_context, event.to_original_event()
    else:
        context, raw_event = event.context, event.to_dict()
    if context is None:  # a handler called outside Lambda (a test, a script): there is nothing to add
        return get_response(event)
    with invocation_logging(context, correlation_id_of(raw_event, context.aws_request_id)):
        return get_response(event)


def correlation_id_of(event: Any, request_id: str) -> str:
    """What ties an invocation's lines to the rest of its story.

    An HTTP event (REST API, function URL): the caller's X-Correlation-Id or X-Request-Id, else API
    Gateway's (or the function URL's) request id. A provisioning workflow task: its execution's name
    (`replica-<id>-create`, ...), shared by every step of it. Anything else: the Lambda request id."""
    if not isinstance(event, dict):
        return request_id
    if "requestContext" in event or "headers" in event:
        request_context = event.get("requestContext") or {}
        return caller_correlation_id(event.get("headers") or {}) or request_context.get("requestId") or request_id
    execution_arn = event.get("execution_arn")  # every Task passes $$.Execution.Id (infra/provisioning.asl.json)
    if isinstance(execution_arn, str) and execution_arn:
        return execution_arn.rsplit(":", 1)[-1]
    return request_id


def caller_correlation_id(headers: Mapping[str, Any]) -> str | None:
    """The caller's id from its headers (names in any case), if short and printable; None otherwise."""
    for wanted in CORRELATION_HEADERS:
        for name, value in headers.items():
            if name.lower() == wanted and isinstance(value, str) and _usable(value.strip()):
                return value.strip()
    return None


def _usable(value: str) -> bool:
    return 0 < len(value) <= MAX_CORRELATION_ID_LENGTH and value.isascii() and value.isprintable()


def emit_metrics(dimensions: Mapping[str, str], metrics: Iterable[tuple[str, str, float]]) -> None:
    """One embedded metric format line: `metrics`, each (name, unit, value), in METRICS_NAMESPACE, with `dimensions`
    and the stage's (metric_names.STAGE). Never raises: losing a metric must not fail what it counts.

    Built by Powertools (its EMF schema; `aws_lambda_powertools` loads it with Logger, so it costs no import),
    with exactly these dimensions: not Powertools' default `service`, since alarms match a metric's dimension
    set exactly. Written in one piece and flushed: a frozen or killed instance loses no line.
    """
    try:
        emf = AmazonCloudWatchEMFProvider(namespace=METRICS_NAMESPACE, service="")  # "": no service dimension
        for name, unit, value in metrics:
            emf.add_metric(name=name, unit=unit, value=value)
        for name, value in {STAGE: get_settings().stage, **dimensions}.items():
            emf.add_dimension(name=name, value=value)
        line = json.dumps(emf.serialize_metric_set(), separators=(",", ":")) + "\n"
    except Exception:  # noqa: BLE001 - the work it measures has been done; say so and go on
        logger.warning("metrics not emitted", exc_info=True, extra={"dimensions": dict(dimensions)})
        return
    with _stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
