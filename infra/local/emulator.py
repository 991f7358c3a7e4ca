"""An embedded AWS emulator (moto's server) for the local stack.

DynamoDB applies each write to an item atomically; moto's in-memory backend does not promise
that under concurrent requests, so requests are served one at a time. That keeps conditional
writes (unique names, exact rate limits) as exact locally as they are in AWS.

Step Functions executions really run (moto's ASL interpreter, in a thread of its own). moto's
docker-free Lambda only echoes its input, so a Lambda Invoke of a function registered with
`register_function` is answered by that Python callable instead, in-process and outside the
lock: the callable calls this emulator itself (DynamoDB), and would deadlock inside it.

Faults can be injected for tests, at the network edge: EMULATOR_FAULTS="PutItem:metric:5" makes the
first 5 PutItem calls on the table whose name ends with `-metric` answer 500 InternalServerError, as
DynamoDB does when it fails; a count of `*` fails every such call. Several faults: comma-separated.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from moto.core.config import default_user_config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

LOG = logging.getLogger(__name__)
# Lambda's Invoke: POST /2015-03-31/functions/<name, ARN or partial ARN>/invocations
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
# moto's backends live in the process, not in a server, so the functions do too (by function name).
_FUNCTIONS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def register_function(name: str, handler: Callable[[dict[str, Any]], Any]) -> None:
    """Answer Lambda Invoke of the function `name` (by name or ARN) with `handler(event)`."""
    _FUNCTIONS[name] = handler


def _registered_handler(environ: dict[str, Any]) -> Callable[[dict[str, Any]], Any] | None:
    if environ.get("REQUEST_METHOD") != "POST":
        return None
    match = INVOKE_PATH.match(unquote(environ.get("PATH_INFO", "")))
    if not match:
        return None
    # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>], <account>:function:<name>, or <name>
    function = match["function"].rpartition("function:")[2].split(":")[0]
    return _FUNCTIONS.get(function)


def _invoke(
    handler: Callable[[dict[str, Any]], Any], environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """One invocation, answered the way Lambda answers: a RequestResponse one with the handler's result (a raised
    error is a function error), an Event one at once with 202 while the handler runs on in a thread of its own."""
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if environ.get("HTTP_X_AMZ_INVOCATION_TYPE") == "Event":
        threading.Thread(target=_run_event, args=(handler, json.loads(raw or b"{}")), daemon=True).start()
        start_response("202 Accepted", [("Content-Length", "0")])
        return [b""]
    headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST")]
    try:
        body = json.dumps(handler(json.loads(raw or b"{}"))).encode()
    except Exception as error:  # every error is the function's, as in Lambda
        # The interpreter turns errorType into the Step Functions error name that Retry and Catch match.
        LOG.info("local Lambda invocation raised %s: %s", type(error).__name__, error)
        trace = traceback.format_tb(error.__traceback__)  # lands in the execution history, as in AWS
        body = json.dumps({"errorType": type(error).__name__, "errorMessage": str(error), "stackTrace": trace}).encode()
        headers.append(("X-Amz-Function-Error", "Unhandled"))
    start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
    return [body]


def _run_event(handler: Callable[[dict[str, Any]], Any], event: dict[str, Any]) -> None:
    try:
        handler(event)
    except Exception:  # noqa: BLE001 - an Event invocation's error is the function's log line, as in Lambda
        LOG.exception("local Lambda Event invocation failed")


class Faults:
    """DynamoDB calls answered with a 500 instead of being served, as EMULATOR_FAULTS asks."""

    _BODY = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                        "message": "Injected fault (EMULATOR_FAULTS)."}).encode()

    def __init__(self, spec: str) -> None:
        self._remaining: dict[tuple[str, str], float] = {}
        for fault in filter(None, (part.strip() for part in spec.split(","))):
            operation, table, count = fault.split(":")
            self._remaining[(operation, "-" + table)] = float("inf") if count == "*" else int(count)

    def answer(self, environ: dict[str, Any], operation: str, start_response: Callable[..., Any]) -> list[bytes] | None:
        """The injected failure for this call, or None to serve it (the request body stays readable)."""
        if not any(op == operation for op, _ in self._remaining):
            return None
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        table = str(json.loads(raw or b"{}").get("TableName", ""))
        for (op, suffix), left in self._remaining.items():
            if op == operation and table.endswith(suffix) and left > 0:
                self._remaining[(op, suffix)] = left - 1
                start_response("500 Internal Server Error", [("Content-Type", "application/x-amz-json-1.0"),
                                                             ("Content-Length", str(len(self._BODY)))])
                return [self._BODY]
        return None


class OneAtATime:
    """The emulator's WSGI app, serialised; counts the AWS operations it serves (for `make bench`)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.operations: Counter[str] = Counter()
        self._faults = Faults(os.environ.get("EMULATOR_FAULTS", ""))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        handler = _registered_handler(environ)
        if handler is not None:
            return _invoke(handler, environ, start_response)
        with self._lock:
            operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2] or "other"
            self.operations[operation] += 1
            return self._faults.answer(environ, operation, start_response) or list(self._app(environ, start_response))


def start_emulator(host: str = "127.0.0.1", port: int = 0) -> tuple[str, BaseWSGIServer]:
    """Serve moto on `host:port` (0 picks a free port) in a daemon thread; returns its URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per AWS call is noise
    # Run Step Functions executions instead of only recording them (moto's ASL interpreter).
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="aws-emulator", daemon=True).start()
    url = f"http://{host}:{server.server_port}"
    # moto's own services (Step Functions calling Lambda) find the server through MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)
    return url, server
