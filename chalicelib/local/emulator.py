"""An embedded AWS emulator (moto's server) for the local stack.

DynamoDB applies each write to an item atomically; moto's in-memory backend does not promise
that under concurrent requests, so requests are served one at a time. That keeps conditional
writes (unique names, exact rate limits) as exact locally as they are in AWS.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server


class OneAtATime:
    """The emulator's WSGI app, serialised; counts the AWS operations it serves (for `make bench`)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.operations: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.operations[environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2] or "other"] += 1
            return list(self._app(environ, start_response))


def start_emulator(host: str = "127.0.0.1", port: int = 0) -> tuple[str, BaseWSGIServer]:
    """Serve moto on `host:port` (0 picks a free port) in a daemon thread; returns its URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per AWS call is noise
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="aws-emulator", daemon=True).start()
    url = f"http://{host}:{server.server_port}"
    # moto's own services (Step Functions calling Lambda) find the server through MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)
    return url, server
