"""The chat function's transport in AWS: a Lambda Runtime API loop that streams.

The managed Python runtime buffers what a handler returns. The chat function runs this loop in its
place (chalicelib/chat/bootstrap, the function's AWS_LAMBDA_EXEC_WRAPPER, execs it) and answers each
invocation in streaming mode. What goes on the wire for one invocation:

    POST /2018-06-01/runtime/invocation/{request id}/response   (HTTP/1.1, one connection)
    Lambda-Runtime-Function-Response-Mode: streaming
    Transfer-Encoding: chunked
    Content-Type: application/vnd.awslambda.http-integration-response
    Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body

    chunk: {"statusCode": 200, "headers": {...}, "cookies": []} + 8 NUL bytes
    chunk: each piece of ChatResponse.body, sent as soon as the service yields it
    last chunk; if the body failed midway, with the two trailers: the type `Function.<exception class>`
    and the base64 of {"errorMessage": ..., "errorType": <exception class>}

Function URLs (InvokeMode RESPONSE_STREAM) and API Gateway (responseTransferMode STREAM) read the same
prelude. Sources: the Lambda developer guide, "Implementing response streaming in a custom runtime"
(headers, trailers, closing the connection) and API Gateway's "Lambda proxy integration with payload
response streaming" (prelude and delimiter).

Deadline: the handler gets the invocation's deadline (Lambda-Runtime-Deadline-Ms, as a time.time()), so
that it ends the answer and writes the usage row before Lambda stops the function: Lambda kills it at its
deadline, nothing after that runs, no row is written.

Client disconnects: Lambda does not tell the function. Its developer guide ("Response streaming for
Lambda functions") says a streamed response goes on when the invoking client's connection is
interrupted, billed to its end; API Gateway's ("Stream the integration response for your proxy
integrations in API Gateway") that the function may go on running when a connection is closed. The one
thing this loop can observe is the Runtime API dropping the response: a send that fails, or the Runtime
API answering (or closing) before the last chunk. Then the body is closed at once: that ends the
upstream request and records the client as gone (499). Otherwise the deadline bounds the stream.

A failure before the first byte (a bug in the service) is answered as a 500 in OpenAI's error shape,
not through the /error endpoint: the caller is an HTTP client, and Lambda would turn /error into a
502 without the `{"error": {...}}` body OpenAI's SDKs read. The price: Lambda's Errors metric does not
count it, so the traceback is logged as a JSON line with level ERROR.

Logs: the service's one Powertools Logger (chalicelib.core.observability). There is no Lambda context
object here, so the loop builds one per invocation from the Runtime API's headers and the function's
environment, and every line logged during the invocation, the service's included, carries the keys
`inject_lambda_context` would add and a correlation id; none is left for the next invocation.

Nothing heavy at import: this module is on the cold-start path. Besides the standard library it
imports only what the chat service imports anyway. The handler is `chalicelib.chat.service:handle`,
imported in the init phase; CHAT_HANDLER="module:function" names another one (the bootstrap test runs
the real wrapper with a fake handler this way).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import socket
from collections.abc import Callable, Iterator
from typing import NamedTuple

from chalicelib.chat import operations
from chalicelib.chat.events import request_from_event
from chalicelib.chat.openai_errors import error_response, internal_error_response
from chalicelib.chat.response import ChatResponse
from chalicelib.core.chunked import chunk, last_chunk
from chalicelib.core.errors import MethodNotAllowed, NotFound
from chalicelib.core.observability import correlation_id_of, invocation_logging, logger

API = "/2018-06-01/runtime"
HANDLER_VARIABLE = "CHAT_HANDLER"
DEFAULT_HANDLER = "chalicelib.chat.service:handle"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
PRELUDE_DELIMITER = b"\0" * 8
STREAMING_HEADERS = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Transfer-Encoding": "chunked",
    "Content-Type": "application/vnd.awslambda.http-integration-response",
    "Trailer": f"{ERROR_TYPE}, {ERROR_BODY}",
}
# Framing is Lambda's business towards the client: a service's content-length would be a lie once chunked.
_TRANSPORT_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

# (headers, body, deadline=..., operation=...): the service's `handle`; `deadline` is a time.time() or None,
# `operation` (chalicelib.chat.operations) is given for every operation but chat, the handler's default.
Handler = Callable[..., ChatResponse]


class Invocation(NamedTuple):
    request_id: str
    deadline_ms: int
    trace_id: str | None
    event: bytes
    function_arn: str | None = None

    @property
    def deadline(self) -> float | None:
        """When Lambda ends the invocation, as a time.time(); None if it said nothing."""
        return self.deadline_ms / 1000 if self.deadline_ms else None


class RuntimeContext(NamedTuple):
    """The attributes of the managed runtime's context object that logging reads, under their names."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str

    @classmethod
    def of(cls, invocation: Invocation) -> RuntimeContext:
        # Lambda sets these for custom runtimes too (the developer guide's "Defined runtime environment variables").
        return cls(
            function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "UNDEFINED"),
            memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0),
            invoked_function_arn=invocation.function_arn or "UNDEFINED",
            aws_request_id=invocation.request_id,
        )


class ClientGone(ConnectionError):
    """The Runtime API dropped the streamed response: the client is no longer reading it."""


def run(handler: Handler | None = None, runtime_api: str | None = None, max_invocations: int | None = None) -> None:
    """Serve invocations one after the other: forever, or `max_invocations` of them (tests)."""
    api = runtime_api or os.environ["AWS_LAMBDA_RUNTIME_API"]
    if handler is None:
        handler = _load_handler(api)
    served = 0
    while max_invocations is None or served < max_invocations:
        invocation = next_invocation(api)
        # Until the event is parsed (respond), the request id stands in for the correlation id.
        with invocation_logging(RuntimeContext.of(invocation), invocation.request_id):
            try:
                respond(api, invocation, handler)
            except Exception:  # noqa: BLE001 - one broken invocation must not end the function instance
                logger.exception("invocation failed")
        served += 1


def next_invocation(api: str) -> Invocation:
    # No timeout: the instance may be frozen for minutes while it waits for an event.
    connection = http.client.HTTPConnection(api)
    try:
        connection.request("GET", f"{API}/invocation/next")
        reply = connection.getresponse()
        event = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"GET /invocation/next answered {reply.status}: {event[:200]!r}")
        return Invocation(
            request_id=reply.headers["Lambda-Runtime-Aws-Request-Id"],
            deadline_ms=int(reply.headers.get("Lambda-Runtime-Deadline-Ms") or 0),
            trace_id=reply.headers.get("Lambda-Runtime-Trace-Id"),
            event=event,
            function_arn=reply.headers.get("Lambda-Runtime-Invoked-Function-Arn"),
        )
    finally:
        connection.close()


def respond(api: str, invocation: Invocation, handler: Handler) -> None:
    if invocation.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)  # not the previous invocation's trace
    response = _response_for(invocation, handler)
    try:
        _stream(api, invocation.request_id, response)
    finally:
        response.close()


def _response_for(invocation: Invocation, handler: Handler) -> ChatResponse:
    try:
        event = json.loads(invocation.event)
        logger.set_correlation_id(correlation_id_of(event, invocation.request_id))
        method, path, headers, body = request_from_event(event)
        # The function URL is public: anything but the operations' routes is answered here, not by the service.
        operation = operations.for_path(path)
        if operation is None:
            return error_response(NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url"))
        if method != "POST":
            return error_response(MethodNotAllowed(f"Method {method} is not allowed on {operation.path}.", "POST",
                                                   code="method_not_allowed"))
        if operation is operations.CHAT:
            return handler(headers, body, deadline=invocation.deadline)
        return handler(headers, body, deadline=invocation.deadline, operation=operation)
    except Exception:  # noqa: BLE001 - still an HTTP answer: the client gets a 500 it can parse
        logger.exception("chat handler failed before the first byte")
        return internal_error_response()


def _stream(api: str, request_id: str, response: ChatResponse) -> None:
    connection = http.client.HTTPConnection(api)
    try:
        connection.connect()
        # Each chunk is one small write: without this, Nagle's algorithm would hold one back.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.putrequest("POST", f"{API}/invocation/{request_id}/response", skip_accept_encoding=True)
        for name, value in STREAMING_HEADERS.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            connection.send(chunk(_prelude(response)))
            failure = _send_body(connection, response.body)
        except (ClientGone, OSError) as gone:
            # respond() closes the response right after: that ends the upstream request, records 499.
            logger.warning("the response stream was dropped; the client is gone", extra={"reason": repr(gone)})
            return
        if failure is not None:
            logger.error("chat response failed mid-stream", exc_info=failure)
        connection.send(_last_chunk(failure))
        reply = connection.getresponse()
        answer = reply.read()
        if reply.status != 202:
            logger.error("Lambda refused the response", extra={"status": reply.status, "answer": repr(answer[:500])})
    finally:
        # The runtime API wants the connection closed once the streamed response is written.
        connection.close()


def _prelude(response: ChatResponse) -> bytes:
    headers = {name: value for name, value in response.headers.items() if name.lower() not in _TRANSPORT_HEADERS}
    return json.dumps({"statusCode": response.status, "headers": headers, "cookies": []}).encode() + PRELUDE_DELIMITER


def _send_body(connection: http.client.HTTPConnection, body: Iterator[bytes]) -> Exception | None:
    """Send each piece as it comes. A failure of the body is returned (it goes in the trailers);
    a failure to send raises, and so does the Runtime API dropping the response (ClientGone)."""
    pieces = iter(body)
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            return None
        except Exception as error:  # noqa: BLE001 - reported to Lambda in the trailers
            return error
        if piece:  # an empty chunk would end the body
            if _answered_early(connection.sock):
                raise ClientGone("the Runtime API answered or closed before the end of the response")
            connection.send(chunk(piece))


def _answered_early(sock: socket.socket) -> bool:
    """Whether the Runtime API has sent something (an answer, EOF, a reset) before the last chunk.
    It answers only once the response is complete, so anything earlier means it dropped the stream."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _last_chunk(failure: Exception | None) -> bytes:
    if failure is None:
        return last_chunk()
    error_type, error_body = error_trailers(failure)
    return last_chunk({ERROR_TYPE: error_type, ERROR_BODY: error_body})


def error_trailers(error: BaseException) -> tuple[str, str]:
    """The two trailer values for a failure: `<category>.<reason>` as Lambda recommends, base64 JSON."""
    kind = type(error).__name__
    body = json.dumps({"errorMessage": str(error), "errorType": kind}).encode()
    return f"Function.{kind}", base64.b64encode(body).decode("ascii")


def _load_handler(api: str) -> Handler:
    """The chat service, imported in the init phase; a failure is reported to /init/error, then raised."""
    import importlib

    module_name, _, name = os.environ.get(HANDLER_VARIABLE, DEFAULT_HANDLER).partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except Exception as error:
        logger.exception("chat handler failed to load")
        _post_init_error(api, error)
        raise


def _post_init_error(api: str, error: Exception) -> None:
    kind = type(error).__name__
    body = json.dumps({"errorMessage": str(error), "errorType": kind})
    connection = http.client.HTTPConnection(api, timeout=5)
    try:
        connection.request("POST", f"{API}/init/error", body, {ERROR_TYPE: f"Runtime.{kind}",
                                                              "Content-Type": "application/json"})
        connection.getresponse().read()
    finally:
        connection.close()


if __name__ == "__main__":
    run()
