"""The model server a booted VM runs, as the proxy reaches it: TLS with the replica's certificate.

It answers `GET` and `POST` with `answer` and an empty JSON object; given an `api_key`, it answers 401
to a request without `Bearer <api_key>`, as the VM's front does. `seen` holds each request's path and
Authorization header.
"""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from chalicelib.provisioning.replica_tls import ReplicaCredentials


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's dispatch name
        authorization = self.headers.get("Authorization")
        self.server.seen.append((self.path, authorization))
        key = self.server.api_key
        status = 401 if key and authorization != f"Bearer {key}" else self.server.answer
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def log_message(self, *_: Any) -> None:
        pass


class TlsReplicaServer:
    def __init__(self, credentials: ReplicaCredentials, answer: int = 200, api_key: str | None = None,
                 port: int = 0) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as directory:
            certificate, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
            certificate.write_text(credentials.certificate_pem)
            key.write_text(credentials.private_key_pem)
            context.load_cert_chain(certificate, key)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.seen = []
        self._server.answer = answer
        self._server.api_key = api_key
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self._server.seen

    @property
    def answer(self) -> int:
        return self._server.answer

    @answer.setter
    def answer(self, status: int) -> None:
        self._server.answer = status

    def __enter__(self) -> TlsReplicaServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
