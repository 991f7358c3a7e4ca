"""A threaded HTTP server that can really stop: the base of the local stand-ins (mock replica,
fake Hyperstack), which tests start and stop many times and which must leave no thread behind."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import ThreadingHTTPServer
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
