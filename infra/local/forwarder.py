"""A TCP forwarder on loopback: a fake Hyperstack VM's port answered by a server already running here.

One llama.cpp server can stand behind any number of provisioned VMs this way, instead of loading the model
once per VM on a laptop's two cores.
"""

from __future__ import annotations

import socket
import threading

_BUFFER = 64 * 1024


class TcpForwarder:
    """Accepts on `port` (0: a free one) and pipes each connection to `target`; `stop()` cuts them all."""

    def __init__(self, target: tuple[str, int], port: int = 0, host: str = "127.0.0.1") -> None:
        self.target = target
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name=f"forwarder-{self.port}", daemon=True)

    def start(self) -> TcpForwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            open_sockets = list(self._sockets)
        _close(self._listener)
        for sock in open_sockets:
            _close(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed: stop() was called
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)  # the server behind is down: refuse, as the VM's port would
                continue
            upstream.settimeout(None)
            if not self._track(client, upstream):
                return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _track(self, *sockets: socket.socket) -> bool:
        with self._lock:
            if self._stopped:
                for sock in sockets:
                    _close(sock)
                return False
            self._sockets.update(sockets)
            return True

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        # Either side ending ends both: a client that hangs up must reach the server, which frees its slot.
        with self._lock:
            self._sockets.difference_update((source, sink))
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected, or already shut
    sock.close()
