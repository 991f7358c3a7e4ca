"""A fake VM's replica port as a booted VM serves it: the TLS front that cloud_init.py sets up with nginx.

A provisioned VM's user_data carries its replica's certificate, private key and bearer
(chalicelib/provisioning/cloud_init.py). Once the VM is up, its replica port answers TLS with that
certificate, 401 `{"error": "Unauthorized"}` to any request without `Authorization: Bearer <VLLM_API_KEY>`,
and relays the rest to the model server, answers streamed as they come. `VmFront` does the same on loopback,
in front of a mock or local replica. A user_data without that material (an older VM, or one made outside
the proxy) asks for no front: its model server answers the port itself, plain.

Simpler than nginx in one way: one request per connection (`Connection: close` both ways), which the proxy's
urllib3 pool copes with. Pipes run on an asyncio loop rather than a thread per direction as in
infra/local/forwarder.py: one TLS connection must not be read and written by two threads at once (OpenSSL).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from chalicelib.provisioning.cloud_init import FRONT_MAX_BODY, front_bearer
from chalicelib.provisioning.replica_tls import ReplicaCredentials, new_credentials
from infra.local.hyperstack_vms import IMPOSTOR_FLAG

_BUFFER = 64 * 1024
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", re.S)
_PRIVATE_KEY = re.compile(r"-----BEGIN PRIVATE KEY-----\n.*?-----END PRIVATE KEY-----\n", re.S)
_HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection")
_MAX_DISCARDED_BODY = int(FRONT_MAX_BODY.removesuffix("m")) * 1024 * 1024  # nginx's client_max_body_size


def credentials_in(user_data: str | None) -> ReplicaCredentials | None:
    """The front's certificate, private key and bearer in a VM's user_data; None if it asks for no front.

    The bearer is the one nginx's configuration in the user_data compares (cloud_init.front_bearer), so this
    front lets through exactly what the VM's nginx would; tests/vm boots that configuration in a real nginx."""
    api_key = front_bearer(user_data)
    certificate, private_key = (pattern.search(user_data or "") for pattern in (_CERTIFICATE, _PRIVATE_KEY))
    if not (api_key and certificate and private_key):
        return None
    return ReplicaCredentials(api_key, certificate.group(0), private_key.group(0))


def front_for(vm: dict[str, Any], backend: tuple[str, int]) -> VmFront | None:
    """A started front on `vm["port"]` relaying to `backend`, as the VM's user_data asks; None if it asks for none.

    A VM dict flagged `IMPOSTOR_FLAG` (the fake Hyperstack's `impostor_certificate` switch) is served
    with a certificate of its own instead of the user_data's.
    """
    from infra.local.served_vms import host_of

    credentials = credentials_in(vm.get("user_data"))
    if credentials is None:
        return None
    return VmFront(credentials, backend, vm["port"], host_of(vm), impostor=bool(vm.get(IMPOSTOR_FLAG))).start()


class VmFront:
    """Accepts TLS on `port` (0: a free one), checks the bearer, relays to `backend`; `stop()` cuts everything.

    `served` is what the front really uses: `credentials`, or with `impostor` a fresh self-signed certificate
    and key (same bearer): someone else answering on the VM's address.
    """

    def __init__(self, credentials: ReplicaCredentials, backend: tuple[str, int], port: int = 0,
                 host: str = "127.0.0.1", *, impostor: bool = False) -> None:
        self.credentials = credentials
        self.served = _impostor(credentials) if impostor else credentials
        self.backend = backend
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vm-front", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, list[asyncio.StreamWriter]] = {}

    def start(self) -> VmFront:
        self._thread.start()
        try:
            self._server = self._run(asyncio.start_server(self._serve, self.host, self.port, ssl=self._tls()))
        except BaseException:
            self.stop()  # the port is taken, say: leave no loop thread behind
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread.name = f"vm-front-{self.port}"
        return self

    def stop(self) -> None:
        """Like the VM going away: stop listening and cut every connection, mid-reply or not."""
        if not self._thread.is_alive():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> VmFront:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _tls(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # as nginx's ssl_protocols
        # load_cert_chain takes files only; it reads them at once, so the private key lives on disk for no longer.
        with tempfile.TemporaryDirectory(prefix="vm-front-") as directory:  # mode 0700: this user only
            certificate, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
            certificate.write_text(self.served.certificate_pem)
            key.write_text(self.served.private_key_pem)
            context.load_cert_chain(certificate, key)
        return context

    def _run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writers in self._connections.values():
            for writer in writers:
                writer.transport.abort()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        writers = self._connections.setdefault(asyncio.current_task(), [client])
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            if _header(head, b"authorization") != f"Bearer {self.served.api_key}".encode():
                await _discard_body(client_reader, head)
                return await _answer(client, 401, b'{"error": "Unauthorized"}', "application/json")
            try:
                backend_reader, backend = await asyncio.open_connection(*self.backend)
            except OSError:  # nothing listens behind the front yet (the model still loading), as nginx says it
                return await _answer(client, 502, b"Bad Gateway", "text/plain")
            writers.append(backend)
            backend.write(_closing(head))
            await _pipe_both_ways(client_reader, client, backend_reader, backend)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # either side hung up (a reset, an unfinished TLS session), or the head was not HTTP
        finally:
            for writer in self._connections.pop(asyncio.current_task(), writers):
                writer.close()


async def _pipe_both_ways(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter,
                          backend_reader: asyncio.StreamReader, backend: asyncio.StreamWriter) -> None:
    """Until either side ends: a client that hangs up must reach the model server, which frees its slot."""
    pipes = [asyncio.ensure_future(_pipe(client_reader, backend)),
             asyncio.ensure_future(_relay_answer(backend_reader, client))]
    _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    for pipe in pending:
        pipe.cancel()


async def _relay_answer(backend_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    try:
        head = await backend_reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return  # the model server hung up without answering: so does the front
    # The answer says `Connection: close` too, so urllib3 never puts this connection back in its pool.
    client.write(_closing(head))
    await _pipe(backend_reader, client)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(_BUFFER):
            sink.write(data)
            await sink.drain()  # each SSE event leaves as it comes: no buffering here
    except (OSError, asyncio.IncompleteReadError):
        pass


async def _discard_body(reader: asyncio.StreamReader, head: bytes) -> None:
    # Read what the client sends before answering, so closing never resets a connection with unread bytes.
    length = int(_header(head, b"content-length") or 0)
    if 0 < length <= _MAX_DISCARDED_BODY:
        await reader.readexactly(length)


async def _answer(client: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
    reason = {401: "Unauthorized", 502: "Bad Gateway"}[status]
    client.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)
    await client.drain()


def _impostor(credentials: ReplicaCredentials) -> ReplicaCredentials:
    """Another self-signed certificate and its key, with the same bearer: someone else on the VM's address."""
    return dataclasses.replace(new_credentials("impostor"), api_key=credentials.api_key)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip()
    return None


def _closing(head: bytes) -> bytes:
    """The head of a request or response, its hop-by-hop headers replaced by `Connection: close`."""
    start, *fields = head.split(b"\r\n")[:-2]  # a head ends with an empty line
    kept = [line for line in fields if line.partition(b":")[0].strip().lower() not in _HOP_BY_HOP]
    return b"\r\n".join([start, *kept, b"Connection: close", b"", b""])
