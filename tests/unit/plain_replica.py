"""A replica as a small plain-HTTP server on 127.0.0.1 (tests/unit/replica_server.py is the TLS one): it answers
every POST with one status, content type and body, or (status None) never answers, and records each request,
so failures happen where they do in production, on the socket."""

from __future__ import annotations

import http.server
import threading
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's dispatch name
        server: PlainReplica = self.server  # type: ignore[assignment]
        headers = {name.lower(): value for name, value in self.headers.items()}
        server.requests.append((self.path, headers, self.rfile.read(int(self.headers["content-length"]))))
        if server.status is None:
            server.released.wait(30)  # never answers while the test runs
            return
        self.send_response(server.status)
        self.send_header("content-type", server.content_type)
        self.send_header("content-length", str(len(server.body)))
        self.end_headers()
        self.wfile.write(server.body)

    def log_message(self, *_: Any) -> None:
        pass


class PlainReplica(http.server.ThreadingHTTPServer):
    """Answers every POST with `status`, `content_type` and `body`; `requests`: (path, headers, body) each."""

    daemon_threads = True

    def __init__(self, status: int | None, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.body, self.content_type = status, body, content_type
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.released = threading.Event()
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"

    def stop(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()
