"""A threaded HTTP server that can really stop: the base of the local stand-ins (mock replica,
fake Hyperstack), which tests start and stop many times and which must leave no thread behind."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StoppableServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 drops a burst of connects, which then wait a second to retry

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.stopping = threading.Event()
        self._connections_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like ThreadingMixIn's, but remembering each connection so stop() can cut it and join its thread.
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def drop_connections(self, timeout: float) -> None:
        with self._connections_lock:
            connections = dict(self._connections)
        for connection in connections:
            abort(connection)  # a handler blocked reading a keep-alive connection now sees EOF
        for thread in connections.values():
            thread.join(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (and stop() cutting connections) are routine here, not worth a traceback.
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


def abort(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class BackgroundService:
    """A StoppableServer served from a daemon thread: `start()` (or `with`), `stop()`, `port`.

    Subclasses say what to serve in `_make_server`; `stop()` after `start()` leaves `port` naming
    the closed port, and `start()` again binds it anew (a replica that comes back).
    """

    thread_name = "local-service"
    stop_timeout = 5.0

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._port = port or None
        self._server: StoppableServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self, address: tuple[str, int]) -> StoppableServer:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return self._port

    @property
    def loopback_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    def start(self) -> BackgroundService:
        if self._server is not None:
            return self
        self._server = self._make_server((self.host, self._port or 0))
        self._port = self._server.server_address[1]
        # A short poll interval keeps stop() quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection (idle, stalled or mid-reply), wait for their threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.drop_connections(self.stop_timeout)
        server.server_close()
        thread.join(self.stop_timeout)

    def __enter__(self) -> BackgroundService:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class PromptHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with TCP_NODELAY: headers, a small body or one SSE event leave at once, instead of
    waiting on Nagle's algorithm for the client's delayed ACK (40 ms a request on Linux)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read_body(self) -> bytes:
        """The request's body, sent with a Content-Length or chunked; ValueError when its framing is broken."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length)

    def _read_chunked_body(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)


def serve_until_signalled(service: Any, banner: str) -> None:
    """A command-line stand-in: start, print `banner` ({url} filled in), serve until Ctrl-C or SIGTERM."""
    stopping = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stopping.set())
    service.start()
    url = getattr(service, "base_url", None) or service.url
    print(banner.format(url=url), flush=True)
    try:
        while not stopping.wait(0.5):  # short waits: the main thread runs signal handlers only between them
            pass
    finally:
        service.stop()
