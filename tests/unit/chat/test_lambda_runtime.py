"""The streaming Runtime API loop, against a fake Lambda Runtime API on loopback.

The fake reads each /response POST's chunked body off the socket itself, so the tests see the bytes on
the wire: chunk boundaries, trailers, and when each chunk arrived.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.chat import lambda_runtime
from chalicelib.chat.response import ChatResponse
from chalicelib.core.observability import logger
from tests.unit.chat.test_chat_events import function_url_event, rest_api_event

REPO_ROOT = Path(__file__).resolve().parents[3]
BOOTSTRAP = REPO_ROOT / "chalicelib" / "chat" / "bootstrap"
NUL8 = b"\0" * 8
SSE = {"content-type": "text/event-stream"}


# --- a fake Lambda Runtime API --------------------------------------------------------------------


@dataclass
class Posted:
    """One POST to the fake: a streamed /response, an /error or an /init/error."""

    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes = b""  # the body as it crossed the socket, chunk framing included
    chunks: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each chunk
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def prelude(self) -> dict[str, Any]:
        metadata, delimiter, _ = self.body.partition(NUL8)
        assert delimiter == NUL8, self.body[:200]
        return json.loads(metadata)

    def payload(self) -> bytes:
        return self.body.partition(NUL8)[2]


class FakeRuntimeApi:
    def __init__(self) -> None:
        self._events: queue.Queue[tuple[str, bytes, str | None]] = queue.Queue()
        self.responses: queue.Queue[Posted] = queue.Queue()
        self.errors: queue.Queue[Posted] = queue.Queue()
        self.on_chunk: Callable[[str, bytes], None] = lambda request_id, data: None
        self.hang_up_on: set[str] = set()  # request ids whose /response connection is reset after the prelude
        self.answer_early_on: set[str] = set()  # request ids whose /response is answered 413 after the prelude
        self.answered_early = threading.Event()
        self.deadline_ms = lambda: int(time.time() * 1000) + 900_000
        self.stopping = threading.Event()
        self._ids = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiHandler)
        self.server.daemon_threads = True
        self.server.api = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event: dict[str, Any], trace_id: str | None = None) -> str:
        request_id = f"req-{next(self._ids)}"
        self._events.put((request_id, json.dumps(event).encode(), trace_id))
        return request_id

    def next_event(self) -> tuple[str, bytes, str | None] | None:
        while not self.stopping.is_set():
            try:
                return self._events.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def response(self, timeout: float = 10) -> Posted:
        return self.responses.get(timeout=timeout)

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


class _FakeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    @property
    def api(self) -> FakeRuntimeApi:
        return self.server.api  # type: ignore[attr-defined]

    def do_GET(self) -> None:  # noqa: N802 - http.server's dispatch name
        assert self.path == "/2018-06-01/runtime/invocation/next", self.path
        item = self.api.next_event()
        if item is None:
            return self._reply(500, b'{"errorMessage": "stopping"}')
        request_id, payload, trace_id = item
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(self.api.deadline_ms()))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:chat")
        if trace_id:
            self.send_header("Lambda-Runtime-Trace-Id", trace_id)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802 - http.server's dispatch name
        posted = Posted(self.path, {name.lower(): value for name, value in self.headers.items()})
        if posted.path.endswith("/response"):
            request_id = posted.path.split("/")[-2]
            if not self._read_chunked(posted, request_id):
                return
            self.api.responses.put(posted)
        else:
            posted.raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            posted.chunks.append(posted.raw)
            self.api.errors.put(posted)
        self._reply(202, b'{"status": "OK"}')

    def _read_chunked(self, posted: Posted, request_id: str) -> bool:
        """Read the body chunk by chunk as it arrives; False if the connection was reset on purpose."""
        assert posted.headers.get("transfer-encoding") == "chunked", posted.headers
        while True:
            size_line = self.rfile.readline()
            posted.raw += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            data, crlf = self.rfile.read(size), self.rfile.read(2)
            posted.raw += data + crlf
            assert crlf == b"\r\n"
            posted.chunks.append(data)
            posted.arrivals.append(time.monotonic())
            self.api.on_chunk(request_id, data)
            if request_id in self.api.hang_up_on:
                # An abortive close (RST): the runtime's next write fails, as when Lambda drops the stream.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return False
            if request_id in self.api.answer_early_on:
                # As Lambda does when it gives up on a response (one over the size limit): an answer, then close.
                self._reply(413, b'{"errorMessage": "too large", "errorType": "Function.ResponseSizeTooLarge"}')
                self.close_connection = True
                self.api.answered_early.set()
                return False
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            posted.raw += line
            name, _, value = line.decode("ascii").partition(":")
            posted.trailers[name.strip()] = value.strip()
        posted.raw += line
        return True

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def runtime_api() -> Iterator[FakeRuntimeApi]:
    api = FakeRuntimeApi()
    yield api
    api.close()


# --- fake chat handlers ---------------------------------------------------------------------------


def fake_handler(headers: dict[str, str], body: bytes, deadline: float | None = None) -> ChatResponse:
    """The handler the bootstrap test selects with CHAT_HANDLER=tests.unit.chat.test_lambda_runtime:fake_handler."""
    return ChatResponse(200, {"content-type": "text/plain", "x-fake": "yes"}, iter([b"echo: ", body]))


def serving(*pieces: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Callable[..., ChatResponse]:
    return lambda _headers, _body, deadline=None: ChatResponse(status, headers or SSE, iter(pieces))


def chat_event(body: bytes = b'{"model": "m", "stream": true}') -> dict[str, Any]:
    return function_url_event(body)


def serve(api: FakeRuntimeApi, handler: Callable[..., ChatResponse], invocations: int = 1) -> None:
    lambda_runtime.run(handler, runtime_api=api.address, max_invocations=invocations)


# --- the wire format ------------------------------------------------------------------------------


def test_prelude_json_then_eight_nul_bytes_then_the_body_bytes_arrive_exactly(runtime_api):
    runtime_api.invoke(chat_event())

    serve(runtime_api, serving(b"data: {\"a\": 1}\n\n", b"data: [DONE]\n\n", headers={"content-type": "text/x"}))

    posted = runtime_api.response()
    prelude = json.dumps({"statusCode": 200, "headers": {"content-type": "text/x"}, "cookies": []}).encode()
    assert posted.body == prelude + NUL8 + b"data: {\"a\": 1}\n\ndata: [DONE]\n\n"


def test_response_is_posted_in_streaming_mode_with_chunked_encoding_and_declared_trailers(runtime_api):
    request_id = runtime_api.invoke(chat_event())

    serve(runtime_api, serving(b"x"))

    posted = runtime_api.response()
    assert posted.path == f"/2018-06-01/runtime/invocation/{request_id}/response"
    assert posted.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert posted.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in posted.headers
    assert posted.headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert posted.headers["trailer"] == "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"


def test_each_body_piece_is_its_own_http_chunk_on_the_wire(runtime_api):
    runtime_api.invoke(chat_event())

    serve(runtime_api, serving(b"one", b"", b"0123456789abcdefX", status=201))

    posted = runtime_api.response()
    prelude = b'{"statusCode": 201, "headers": {"content-type": "text/event-stream"}, "cookies": []}' + NUL8
    assert posted.raw == b"%x\r\n%s\r\n3\r\none\r\n11\r\n0123456789abcdefX\r\n0\r\n\r\n" % (len(prelude), prelude)
    assert posted.trailers == {}


def test_prelude_leaves_out_the_services_transport_headers(runtime_api):
    runtime_api.invoke(chat_event())
    headers = {"content-type": "application/json", "content-length": "2", "Connection": "keep-alive",
               "x-ratelimit-remaining-requests": "59"}

    serve(runtime_api, serving(b"{}", headers=headers))

    assert runtime_api.response().prelude()["headers"] == {"content-type": "application/json",
                                                           "x-ratelimit-remaining-requests": "59"}


def test_chunks_are_sent_as_they_are_produced_not_buffered(runtime_api):
    first_arrived = threading.Event()
    runtime_api.on_chunk = lambda _id, data: first_arrived.set() if data == b"one" else None
    produced: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield b"one"
        # Were the runtime buffering, "one" could not arrive before the generator ends: this wait would time out.
        produced["first_arrived_before_last_produced"] = first_arrived.wait(timeout=10)
        time.sleep(0.01)
        yield b"two"
        time.sleep(0.01)
        produced["last_at"] = time.monotonic()
        yield b"three"

    runtime_api.invoke(chat_event())
    serve(runtime_api, lambda _h, _b, deadline=None: ChatResponse(200, SSE, body(), streamed=True))

    posted = runtime_api.response()
    assert produced["first_arrived_before_last_produced"] is True
    assert posted.chunks[1:] == [b"one", b"two", b"three"]
    assert posted.arrivals[1] < produced["last_at"]


def test_body_failing_mid_stream_ends_with_error_trailers_after_the_chunks_sent(runtime_api):
    def body() -> Iterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"
        raise ConnectionError("replica went away")

    runtime_api.invoke(chat_event())
    serve(runtime_api, lambda _h, _b, deadline=None: ChatResponse(200, SSE, body()))

    posted = runtime_api.response()
    assert posted.payload() == b"data: 1\n\ndata: 2\n\n"
    assert posted.trailers["Lambda-Runtime-Function-Error-Type"] == "Function.ConnectionError"
    error_body = posted.trailers["Lambda-Runtime-Function-Error-Body"]
    error = json.loads(base64.b64decode(error_body, validate=True))
    assert error == {"errorMessage": "replica went away", "errorType": "ConnectionError"}
    assert posted.raw.endswith(
        b"\r\n0\r\nLambda-Runtime-Function-Error-Type: Function.ConnectionError\r\n"
        b"Lambda-Runtime-Function-Error-Body: %s\r\n\r\n" % error_body.encode()
    )
    assert runtime_api.errors.empty()


# --- closing the response -------------------------------------------------------------------------


class Tracked:
    """A ChatResponse whose close() calls are counted, over a generator that notes how it ended."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.close_calls = 0
        self.generator_exited = False
        self.response = ChatResponse(200, SSE, self._body(pieces), streamed=True)
        close = self.response.close

        def counting_close() -> None:
            self.close_calls += 1
            close()

        self.response.close = counting_close  # type: ignore[method-assign]

    def _body(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from pieces
        except GeneratorExit:
            self.generator_exited = True
            raise

    def handler(self, _headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        return self.response


def failing(pieces: list[bytes], error: Exception) -> Iterator[bytes]:
    yield from pieces
    raise error


def endless() -> Iterator[bytes]:
    for _ in range(2000):  # bounded: the test fails, rather than hangs, if the runtime never notices
        time.sleep(0.002)
        yield b"data: tick\n\n"


@pytest.mark.parametrize("pieces", [iter([b"a", b"b"]), failing([b"a"], RuntimeError("boom"))],
                         ids=["complete body", "body failing mid-stream"])
def test_response_is_closed_once_whatever_the_body_does(runtime_api, pieces):
    tracked = Tracked(pieces)
    runtime_api.invoke(chat_event())

    serve(runtime_api, tracked.handler)

    runtime_api.response()
    assert tracked.close_calls == 1


def test_response_is_closed_when_lambda_drops_the_stream_and_the_next_invocation_is_served(runtime_api):
    tracked = Tracked(endless())
    dropped = runtime_api.invoke(chat_event())
    runtime_api.hang_up_on.add(dropped)
    runtime_api.invoke(chat_event())
    handlers = iter([tracked.handler, serving(b"next one")])

    serve(runtime_api, lambda headers, body, deadline=None: next(handlers)(headers, body), invocations=2)

    assert tracked.close_calls == 1
    assert tracked.generator_exited  # the service saw the early close: it stops the upstream request
    assert runtime_api.response().payload() == b"next one"


class Counted:
    """An endless body that counts the pieces pulled from it and notes whether it was closed."""

    def __init__(self, first_after: threading.Event | None = None) -> None:
        self.pulled = 0
        self.closed = False
        self.first_after = first_after

    def __iter__(self) -> Iterator[bytes]:
        try:
            for number in range(2000):  # bounded: the test fails, rather than hangs, if the runtime never notices
                if number == 0 and self.first_after:
                    self.first_after.wait(timeout=5)
                    time.sleep(0.05)  # the answer crosses loopback
                time.sleep(0.002)
                self.pulled += 1
                yield b"data: tick\n\n"
        finally:
            self.closed = True


def test_runtime_api_answering_before_the_end_stops_the_body_at_once(runtime_api):
    body = Counted(first_after=runtime_api.answered_early)
    dropped = runtime_api.invoke(chat_event())
    runtime_api.answer_early_on.add(dropped)
    runtime_api.invoke(chat_event())
    handlers = iter([lambda _h, _b, deadline=None: ChatResponse(200, SSE, iter(body), streamed=True),
                     serving(b"next one")])

    serve(runtime_api, lambda headers, b, deadline=None: next(handlers)(headers, b), invocations=2)

    assert body.closed
    assert body.pulled == 1  # the piece in hand when the answer came is not sent, and nothing more is pulled
    assert runtime_api.response().payload() == b"next one"


def test_client_gone_is_metered_499_and_ends_the_upstream_request(runtime_api):
    from chalicelib.chat.service import _Metered

    meter, body = SimpleNamespace(status=200), Counted()
    runtime_api.hang_up_on.add(runtime_api.invoke(chat_event()))

    serve(runtime_api, lambda _h, _b, deadline=None: ChatResponse(200, SSE, _Metered(iter(body), meter), streamed=True))

    assert meter.status == 499
    assert body.closed  # its finally ran: the upstream request is closed


def test_a_body_closed_before_its_first_piece_is_metered_499():
    """A transport may fail before the first piece (the prelude goes first): the client is gone all the same."""
    from chalicelib.chat.service import _Metered

    meter = SimpleNamespace(status=200)
    response = ChatResponse(200, SSE, _Metered(iter(Counted()), meter), streamed=True)

    response.close()

    assert meter.status == 499


def test_handler_taking_a_deadline_gets_the_invocations(runtime_api):
    deadline_ms = int(time.time() * 1000) + 42_000
    runtime_api.deadline_ms = lambda: deadline_ms
    seen = []

    def handler(_headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        seen.append(deadline)
        return ChatResponse(200, SSE, iter([b"ok"]))

    runtime_api.invoke(chat_event())
    serve(runtime_api, handler)

    assert seen == [deadline_ms / 1000]
    assert runtime_api.response().payload() == b"ok"


# --- failures before the first byte ---------------------------------------------------------------


def test_handler_exception_before_the_first_byte_answers_a_500_in_openai_error_shape(runtime_api):
    def broken(_headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        raise KeyError("bug")

    runtime_api.invoke(chat_event())
    serve(runtime_api, broken)

    posted = runtime_api.response()
    assert posted.prelude() == {"statusCode": 500, "headers": {"content-type": "application/json"}, "cookies": []}
    assert json.loads(posted.payload()) == {
        "error": {"message": "Internal server error", "type": "server_error", "param": None, "code": None}
    }
    assert posted.trailers == {}
    assert runtime_api.errors.empty()


def test_an_event_that_is_not_http_answers_500_and_the_loop_goes_on(runtime_api):
    runtime_api.invoke({"Records": []})
    runtime_api.invoke(chat_event())

    serve(runtime_api, serving(b"fine"), invocations=2)

    assert runtime_api.response().prelude()["statusCode"] == 500
    assert runtime_api.response().payload() == b"fine"


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (function_url_event(b"", rawPath="/favicon.ico"), 404, "unknown_url"),
        (function_url_event(b"", requestContext={"http": {"method": "GET", "path": "/v1/chat/completions"}}), 405,
         "method_not_allowed"),
    ],
)
def test_only_post_to_the_chat_path_reaches_the_handler(runtime_api, event, status, code):
    calls = []
    runtime_api.invoke(event)

    serve(runtime_api, lambda headers, body, deadline=None: calls.append(1) or serving(b"")(headers, body))

    posted = runtime_api.response()
    assert calls == []
    assert posted.prelude()["statusCode"] == status
    assert json.loads(posted.payload())["error"]["code"] == code


# --- events and the loop --------------------------------------------------------------------------


def test_both_event_shapes_reach_the_handler_as_lower_case_headers_and_raw_body(runtime_api):
    seen = []

    def recording(headers: dict[str, str], body: bytes, deadline: float | None = None) -> ChatResponse:
        seen.append((headers["authorization"], headers["content-type"], body))
        return ChatResponse(200, SSE, iter([b"ok"]))

    runtime_api.invoke(function_url_event(b'{"from": "url"}', base64_body=True))
    runtime_api.invoke(rest_api_event(b'{"from": "rest"}'))
    serve(runtime_api, recording, invocations=2)

    assert seen == [("Bearer sk-test", "application/json", b'{"from": "url"}'),
                    ("Bearer sk-test", "application/json", b'{"from": "rest"}')]


def test_loop_serves_several_invocations_in_a_row_and_survives_a_failed_one(runtime_api):
    ids = [runtime_api.invoke(chat_event(f'{{"n": {n}}}'.encode())) for n in range(3)]

    def handler(_headers: dict[str, str], body: bytes, deadline: float | None = None) -> ChatResponse:
        if json.loads(body)["n"] == 1:
            return ChatResponse(200, SSE, failing([b"partial"], ValueError("lost")))
        return ChatResponse(200, SSE, iter([body]))

    serve(runtime_api, handler, invocations=3)

    posted = [runtime_api.response() for _ in ids]
    assert [p.path.split("/")[-2] for p in posted] == ids
    assert [p.payload() for p in posted] == [b'{"n": 0}', b"partial", b'{"n": 2}']
    assert [bool(p.trailers) for p in posted] == [False, True, False]


def test_trace_id_of_each_invocation_is_exported_to_the_handler(runtime_api, monkeypatch):
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    seen = []

    def recording(_headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        seen.append(os.environ.get("_X_AMZN_TRACE_ID"))
        return ChatResponse(200, SSE, iter([b"ok"]))

    runtime_api.invoke(chat_event(), trace_id="Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1")
    runtime_api.invoke(chat_event())
    serve(runtime_api, recording, invocations=2)

    assert seen == ["Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1", None]


def test_a_handler_that_cannot_be_imported_is_reported_to_init_error(runtime_api, monkeypatch):
    monkeypatch.setenv("CHAT_HANDLER", "tests.unit.no_such_module:handle")

    with pytest.raises(ModuleNotFoundError):
        lambda_runtime.run(runtime_api=runtime_api.address, max_invocations=1)

    posted = runtime_api.errors.get(timeout=5)
    assert posted.path == "/2018-06-01/runtime/init/error"
    assert posted.headers["lambda-runtime-function-error-type"] == "Runtime.ModuleNotFoundError"
    assert json.loads(posted.body)["errorType"] == "ModuleNotFoundError"


def test_handler_defaults_to_the_chat_service(monkeypatch):
    monkeypatch.delenv("CHAT_HANDLER", raising=False)
    from chalicelib.chat import service

    assert lambda_runtime._load_handler("127.0.0.1:9") is service.handle


def _packages_after_importing(module: str) -> set[str]:
    """The top-level packages outside the standard library and this project that importing `module` loads."""
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    top_level = {name.partition(".")[0] for name in json.loads(result.stdout)}
    return top_level - set(sys.stdlib_module_names) - {"chalicelib", "__main__"}


def test_runtime_imports_no_package_the_chat_service_does_not():
    """It is on the cold-start path; the service is imported right after it, in the init phase, so a
    package they share (the Powertools Logger) costs the cold start nothing more."""
    runtime = _packages_after_importing("chalicelib.chat.lambda_runtime")

    assert runtime <= _packages_after_importing("chalicelib.chat.service")


def test_error_trailers_are_a_category_dot_reason_type_and_base64_json():
    error_type, error_body = lambda_runtime.error_trailers(TimeoutError("no token for 60 s"))

    assert error_type == "Function.TimeoutError"
    assert json.loads(base64.b64decode(error_body)) == {"errorMessage": "no token for 60 s",
                                                        "errorType": "TimeoutError"}


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def log_lines(monkeypatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The logger's JSON lines, parsed; the function's environment as Lambda sets it."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "hyperstack-llm-proxy-prod-chat")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    buffer = io.StringIO()
    previous = logger.registered_handler.setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logger.registered_handler.setStream(previous)


def logging(message: str) -> Callable[..., ChatResponse]:
    """A handler that logs as the service does: once when called, once while its body streams."""

    def body() -> Iterator[bytes]:
        logger.info(f"{message} streaming")
        yield b"ok"

    def handler(_headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        logger.info(f"{message} called")
        return ChatResponse(200, SSE, body())

    return handler


def with_headers(**headers: str) -> dict[str, Any]:
    event = chat_event()
    event["headers"] = {**event["headers"], **headers}
    return event


def test_lines_logged_during_an_invocation_carry_its_request_id_and_correlation_id(runtime_api, log_lines):
    request_id = runtime_api.invoke(with_headers(**{"x-correlation-id": "order-42"}),
                                    trace_id="Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1")

    serve(runtime_api, logging("handler"))

    lines = log_lines()
    assert [line["message"] for line in lines] == ["handler called", "handler streaming"]
    for line in lines:
        assert line["function_request_id"] == request_id
        assert line["correlation_id"] == "order-42"
        assert line["function_name"] == "hyperstack-llm-proxy-prod-chat"
        assert line["function_memory_size"] == 128
        assert line["function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:chat"
        assert line["xray_trace_id"] == "1-5bef4de7-ad49b0e87f6ef6c87fc2e700"
        assert isinstance(line["cold_start"], bool)
        assert line["service"] == "hyperstack-llm-proxy"


def test_the_next_invocation_carries_its_own_ids_and_none_of_the_previous(runtime_api, log_lines):
    runtime_api.invoke(with_headers(**{"x-correlation-id": "order-42"}), trace_id="Root=1-aaaaaaaa-bbbb;Sampled=1")
    second = runtime_api.invoke(chat_event())
    handlers = iter([logging("first"), logging("second")])

    def handler(headers: dict[str, str], body: bytes, deadline: float | None = None) -> ChatResponse:
        if headers.get("x-correlation-id"):
            logger.append_keys(replica_id=3)  # as the service might, for the rest of its invocation
        return next(handlers)(headers, body)

    serve(runtime_api, handler, invocations=2)
    logger.info("after the invocations")

    *_, second_called, second_streaming, after = log_lines()
    for line in (second_called, second_streaming):
        assert line["function_request_id"] == second
        # No caller header: the function URL's own request id.
        assert line["correlation_id"] == chat_event()["requestContext"]["requestId"]
        assert line["cold_start"] is False
        assert "xray_trace_id" not in line
        assert "replica_id" not in line
    assert not {"function_request_id", "correlation_id", "cold_start", "function_arn", "replica_id"} & set(after)


def test_a_handler_failure_is_logged_as_powertools_json_with_its_traceback(runtime_api, log_lines):
    def broken(_headers: dict[str, str], _body: bytes, deadline: float | None = None) -> ChatResponse:
        raise KeyError("bug")

    request_id = runtime_api.invoke(with_headers(**{"x-request-id": "client-7"}))
    serve(runtime_api, broken)

    [line] = log_lines()
    assert line["level"] == "ERROR"
    assert line["message"] == "chat handler failed before the first byte"
    assert line["exception_name"] == "KeyError"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "in broken" in line["exception"] and "KeyError: 'bug'" in line["exception"]
    assert (line["function_request_id"], line["correlation_id"]) == (request_id, "client-7")
    assert "Bearer" not in json.dumps(line)  # the caller's key is never logged


# --- the exec wrapper -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "runtime_command",
    [[sys.executable, "/var/runtime/bootstrap.py"], []],
    ids=["interpreter given by Lambda", "python3 from PATH"],
)
def test_bootstrap_execs_the_streaming_loop_for_an_invocation(runtime_api, tmp_path, runtime_command):
    assert os.access(BOOTSTRAP, os.X_OK), "chalicelib/chat/bootstrap must be executable"
    runtime_api.invoke(chat_event(b"hello"))
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
        "LAMBDA_TASK_ROOT": str(REPO_ROOT),
        "CHAT_HANDLER": "tests.unit.chat.test_lambda_runtime:fake_handler",
    }
    # Lambda calls the wrapper with the managed runtime's command line; the loop must replace it.
    process = subprocess.Popen([str(BOOTSTRAP), *runtime_command], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        posted = runtime_api.response(timeout=30)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)

    assert posted.prelude() == {"statusCode": 200, "headers": {"content-type": "text/plain", "x-fake": "yes"},
                                "cookies": []}, stderr.decode()
    assert posted.payload() == b"echo: hello"


# --- the three operations on one function ---------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), [
    ("/v1/completions", "completions"), ("/v1/embeddings", "embeddings"), ("/api/v1/embeddings", "embeddings"),
])
def test_completions_and_embeddings_reach_the_handler_with_their_operation(runtime_api, path, name):
    seen = []

    def handler(_headers: dict[str, str], _body: bytes, deadline: float | None = None,
                operation: Any = None) -> ChatResponse:
        seen.append(operation.name)
        return ChatResponse(200, SSE, iter([b"ok"]))

    runtime_api.invoke(function_url_event(b"{}", rawPath=path))
    serve(runtime_api, handler)

    assert seen == [name]
    assert runtime_api.response().payload() == b"ok"


def test_a_path_of_no_operation_is_an_openai_shaped_404(runtime_api):
    runtime_api.invoke(function_url_event(b"{}", rawPath="/v1/moderations"))

    serve(runtime_api, lambda headers, body, deadline=None, operation=None: pytest.fail("handler called"))

    posted = runtime_api.response()
    assert posted.prelude()["statusCode"] == 404
    assert json.loads(posted.payload())["error"] == {
        "message": "Unknown request URL: POST /v1/moderations.", "type": "invalid_request_error", "param": None,
        "code": "unknown_url"}
