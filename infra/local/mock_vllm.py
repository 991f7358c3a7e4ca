"""A stand-in for a vLLM replica: its OpenAI-compatible API on loopback, with switchable failure modes.

    python -m infra.local.mock_vllm --port 8001 --model mock/model --pace 0.02 --mode ok

In a test:

    with MockVllm(model="mock/model", pace_seconds=0.01) as replica:
        ...  # point the proxy at replica.base_url; replica.mode = "error500" flips it while it runs

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
`GET /health` (200, empty body); anything else answers 404 `{"detail": "Not Found"}` as vLLM's FastAPI does.
Replies come from `chalicelib.chat.mock.replies`, `mock_completions` and `mock_embeddings`.

Modes (the `mode` attribute, read once per POST; `/v1/models` and `/health` ignore it). They apply to completions
as to chat; embeddings, never streamed, take them as a non-streamed chat reply does:
- "ok": like vLLM. A stream is HTTP/1.1 chunked, one HTTP chunk per SSE event, each written as it is produced,
  `pace_seconds` before each token event; a non-streamed reply waits `pace_seconds` * completion tokens, then
  comes whole with a Content-Length.
- "error400" / "error500": a vLLM error body with that status, before any content.
- "stall": reads the request, then never answers (until `stop()`, which it does not hold up).
- "die_mid_stream": a stream sends DIE_AFTER_EVENTS events, then the connection closes without the terminating
  chunk nor `data: [DONE]`; a non-streamed reply sends its headers and half its body, then closes.
- "no_usage": a stream carries no usage at all, running or final, whatever `stream_options` asks (a server that
  ignores them).
- Other servers' SSE dialects and faults, with the "ok" mode's content: "crlf", "split_cr", "keepalive",
  "no_done", "done_no_blank", "oversized_event", "trickle", "idle" (each described in sse_faults.py).

With `api_key` set, every `/v1/*` request without `Authorization: Bearer <api_key>` answers 401
`{"error": "Unauthorized"}`, as `vllm serve --api-key` does (`/health` stays open); such requests are not counted
in `requests_seen`.

There is no "refuse" mode: a refusing replica is a stopped one (`stop()`, then `port` still names the closed
port). `start()` after `stop()` binds that same port again: the replica comes back.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from chalicelib.chat.mock import completions as mock_completions
from chalicelib.chat.mock import embeddings as mock_embeddings
from chalicelib.chat.mock import replies as mock_replies
from chalicelib.core import chunked
from infra.local import sse_faults
from infra.local.servers import BackgroundService, PromptHandler, StoppableServer, abort, serve_until_signalled

MODES = ("ok", "error400", "error500", "stall", "die_mid_stream", "crlf", "split_cr", "keepalive", "no_done",
         "done_no_blank", "oversized_event", "trickle", "idle", "no_usage")
DIE_AFTER_EVENTS = 3  # the role chunk and two tokens
_ERRORS = {
    "error400": (400, mock_replies.error_body("Mock replica in mode error400.", "BadRequestError", 400)),
    "error500": (500, mock_replies.error_body("Mock replica in mode error500.", "InternalServerError", 500)),
}
_NOT_FOUND = {"detail": "Not Found"}
_UNAUTHORIZED = {"error": "Unauthorized"}


def _embedding_problem(request: dict[str, Any]) -> str | None:
    problem = mock_embeddings.request_problem(request)
    return problem[1] if problem else None


class _Route(NamedTuple):
    problem: Callable[[dict[str, Any]], str | None]  # why vLLM would answer 400, or None
    reply: Callable[..., dict[str, Any]]
    chunks: Callable[..., Iterator[dict[str, Any]]] | None  # None: never streamed


_ROUTES = {
    "/v1/chat/completions": _Route(mock_replies.request_problem, mock_replies.completion, mock_replies.stream_chunks),
    "/v1/completions": _Route(mock_completions.request_problem, mock_completions.completion,
                              mock_completions.stream_chunks),
    "/v1/embeddings": _Route(_embedding_problem, mock_embeddings.embeddings, None),
}


class MockVllm(BackgroundService):
    """One mock replica serving `model`; `start()` it (or use `with`), `stop()` it.

    `stop()` is like a replica going down: a client still reading a reply sees its connection end.
    Read replies before stopping the server.
    """

    thread_name = "mock-vllm"

    def __init__(self, model: str = "mock/model", host: str = "127.0.0.1", port: int = 0,
                 pace_seconds: float = 0.0, mode: str = "ok", *, max_model_len: int = 8192,
                 verbose: bool = False, api_key: str | None = None) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.model = model
        self.pace_seconds = pace_seconds
        self.mode = mode
        self.max_model_len = max_model_len
        self.verbose = verbose
        self._lock = threading.Lock()
        self._requests_seen = 0
        self._replying = 0
        self._last_request: dict[str, Any] | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            hint = " (for a refusing replica, stop() it)" if value == "refuse" else ""
            raise ValueError(f"unknown mode {value!r}{hint}; one of {', '.join(MODES)}")
        self._mode = value

    @property
    def base_url(self) -> str:
        return f"http://{self.loopback_host}:{self.port}/v1"

    @property
    def requests_seen(self) -> int:
        """Requests received by the POST routes (chat, completions, embeddings), in every mode."""
        with self._lock:
            return self._requests_seen

    @property
    def replies_in_progress(self) -> int:
        """Replies still being written (or held open): 0 once every client has gone or been served."""
        with self._lock:
            return self._replying

    @property
    def last_request(self) -> dict[str, Any] | None:
        """The last POST body that parsed as a JSON object: what the proxy forwarded."""
        with self._lock:
            return self._last_request

    def _record(self, request: dict[str, Any] | None) -> None:
        with self._lock:
            self._requests_seen += 1
            if request is not None:
                self._last_request = request

    def _replying_change(self, by: int) -> None:
        with self._lock:
            self._replying += by

    def _make_server(self, address: tuple[str, int]) -> StoppableServer:
        return _Server(address, self)


class _Server(StoppableServer):
    def __init__(self, address: tuple[str, int], owner: MockVllm) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(PromptHandler):
    server_version = "mock-vllm"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name BaseHTTPRequestHandler dispatches to
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        if path == "/health":
            self._send(200, b"", "application/json")
        elif not self._authorized(path):
            self._send_json(401, _UNAUTHORIZED)
        elif path == "/v1/models":
            self._send_json(200, mock_replies.models_list(owner.model, max_model_len=owner.max_model_len))
        else:
            self._send_json(404, _NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True  # the body's framing is unknown: the connection cannot be reused
            self._send_json(400, mock_replies.error_body("Unreadable request body.", "BadRequestError", 400))
            return
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            self._send_json(401, _UNAUTHORIZED)
            return
        route = _ROUTES.get(path)
        if route is None:
            self._send_json(404, _NOT_FOUND)
            return
        self.server.owner._replying_change(1)
        try:
            self._answer(body, route)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-reply
        finally:
            self.server.owner._replying_change(-1)

    def _authorized(self, path: str) -> bool:
        # vLLM's --api-key guards the /v1 routes only, and compares the whole header.
        expected = self.server.owner.api_key
        if expected is None or not path.startswith("/v1"):
            return True
        return self.headers.get("Authorization") == f"Bearer {expected}"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def _answer(self, body: bytes, route: _Route) -> None:
        owner = self.server.owner
        mode = owner.mode
        request, problem = _parse(body, route.problem)
        owner._record(request)
        if mode == "stall":
            # Short waits in a loop rather than one long wait: stop() must find this thread ready to leave.
            while not self.server.stopping.wait(0.05):
                pass
            self.close_connection = True
        elif mode in _ERRORS:
            self._send_json(*_ERRORS[mode])
        elif problem is not None:
            self._send_json(400, mock_replies.error_body(problem, "BadRequestError", 400))
        elif request.get("model", owner.model) != owner.model:
            message = f"The model `{request['model']}` does not exist."
            self._send_json(404, mock_replies.error_body(message, "NotFoundError", 404))
        elif request.get("stream") and route.chunks is not None:
            if mode == "no_usage":
                request = {key: value for key, value in request.items() if key != "stream_options"}
            self._stream(route.chunks(request, model=owner.model), mode)
        else:
            self._complete(route.reply(request, model=owner.model), mode)

    def _complete(self, reply: dict[str, Any], mode: str) -> None:
        if self._stopped_during(self.server.owner.pace_seconds * reply["usage"]["completion_tokens"]):
            return self._hang_up()
        data = _json_bytes(reply)
        if mode not in ("die_mid_stream", "idle", "trickle"):
            return self._send(200, data, "application/json")
        self._send_headers(200, "application/json", length=len(data))
        if mode == "trickle":
            return None if sse_faults.trickle(data, self.wfile.write, self.server.stopping) else self._hang_up()
        self.wfile.write(data[: len(data) // 2])
        if mode == "idle":
            return self._wait_for_the_client_to_leave()
        self._hang_up()

    def _stream(self, chunks: Iterator[dict[str, Any]], mode: str) -> None:
        self._send_headers(200, "text/event-stream; charset=utf-8", length=None)
        if mode == "keepalive":
            self._write_chunk(b"retry: 3000\n\n")
        for sent, chunk in enumerate(chunks):
            if mode == "die_mid_stream" and sent == DIE_AFTER_EVENTS:
                return self._hang_up()
            if mode == "idle" and sent == 1:
                return self._wait_for_the_client_to_leave()
            if mode == "oversized_event" and sent == 1:
                for piece in sse_faults.oversized(chunk):
                    self._write_chunk(piece)
            paced = mock_replies.is_token_chunk(chunk)
            if (paced and self._stopped_during(self.server.owner.pace_seconds)) or not self._send_event(
                    mock_replies.encode_event(chunk), mode, sent):
                return self._hang_up()
        if mode == "die_mid_stream":
            return self._hang_up()
        if mode != "no_done" and not self._send_event(mock_replies.DONE_EVENT, mode, -1):
            return self._hang_up()
        self.wfile.write(chunked.last_chunk())

    def _send_event(self, event: bytes, mode: str, number: int) -> bool:
        """One event framed as the mode says; False if stop() came first (trickle)."""
        if mode == "trickle":
            return sse_faults.trickle(event, self._write_chunk, self.server.stopping)
        for piece in sse_faults.framed(event, mode, number):
            self._write_chunk(piece)
        return True

    def _wait_for_the_client_to_leave(self) -> None:
        sse_faults.wait_for_the_client_to_leave(self.connection, self.server.stopping)
        self.close_connection = True

    def _stopped_during(self, seconds: float) -> bool:
        return self.server.stopping.wait(seconds) if seconds > 0 else self.server.stopping.is_set()

    def _send_headers(self, status: int, content_type: str, *, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self._send_headers(status, content_type, length=len(data))
        self.wfile.write(data)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, _json_bytes(body), "application/json")

    def _write_chunk(self, data: bytes) -> None:
        # The handler's wfile is unbuffered: each event leaves in a send() of its own, as it is produced.
        self.wfile.write(chunked.chunk(data))

    def _hang_up(self) -> None:
        self.close_connection = True
        abort(self.connection)


def _parse(body: bytes, problem: Callable[[dict[str, Any]], str | None]) -> tuple[dict[str, Any] | None, str | None]:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"Invalid JSON body: {error}"
    if not isinstance(request, dict):
        return None, "The request body must be a JSON object."
    return request, problem(request)


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A mock vLLM OpenAI-compatible server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default="mock/model")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds before each generated token")
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--quiet", action="store_true", help="no access log")
    parser.add_argument("--api-key", help="refuse /v1 requests without this bearer, as vLLM's --api-key")
    options = parser.parse_args(argv)
    replica = MockVllm(options.model, options.host, options.port, options.pace, options.mode,
                       verbose=not options.quiet, api_key=options.api_key)
    serve_until_signalled(replica, f"mock vLLM serving {options.model!r} in mode {options.mode!r} at {{url}}")


if __name__ == "__main__":
    main()
