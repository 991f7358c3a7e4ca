"""Sending a request to a replica, with failover to the next one, and reading its answer in time.

A replica that refuses the connection, times out before answering or answers 5xx before the
first byte is skipped and the next is tried; the caller sees an error only when none can serve.

Time: every wait is capped by the request's deadline (an absolute time.time()). Until the answer's
headers and its first body byte, a read may wait UPSTREAM_TIMEOUT_SECONDS (a replica may queue a
request); after that, each read waits at most UPSTREAM_IDLE_TIMEOUT_SECONDS. urllib3 applies one read
timeout to every recv, so the socket's timeout is set again before each read.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.util import parse_url

from chalicelib.chat import routing
from chalicelib.chat.routing import Target
from chalicelib.core.errors import ServiceUnavailable, UpstreamFailed, UpstreamTimedOut
from chalicelib.core.observability import logger
from chalicelib.core.pinned_tls import pool_options
from chalicelib.core.settings import get_chat_settings

# One pool per function instance: connections to replicas are reused across invocations.
_pool = urllib3.PoolManager(num_pools=32, maxsize=16, retries=False, block=False)
_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}
_READ_SIZE = 64 * 1024
CHAT_PATH = "/chat/completions"


@dataclass
class Attempts:
    """What one request's sending went through, for its metrics (chalicelib.chat.request_metrics)."""

    failed: int = 0  # replicas skipped for failing or timing out (not for being full, nor for the deadline)


def send(targets: list[Target], body: bytes, stream: bool, now: float, deadline: float | None = None,
         path: str = CHAT_PATH, attempts: Attempts | None = None) -> tuple[Target, urllib3.BaseHTTPResponse]:
    """The first replica that answers `body` POSTed to `path` under its endpoint, and its answer.
    Each replica skipped for failing is counted in `attempts`, also when none answers (the error is raised)."""
    attempts = attempts if attempts is not None else Attempts()
    settings = get_chat_settings()
    headers = {**_HEADERS, "accept": "text/event-stream" if stream else "application/json"}
    timed_out = at_capacity = 0
    for target in targets:
        left = _time_left(deadline)
        if left <= 0:
            raise UpstreamTimedOut("The model did not answer within the time this request is allowed.",
                                   code="upstream_timeout")
        if not routing.reserve(target, now):
            at_capacity += 1
            continue
        timeout = urllib3.Timeout(connect=min(settings.connect_timeout, left),
                                  read=min(settings.first_byte_timeout, left))
        try:
            response = _post(target.url(path), target, body, _with_key(headers, target), timeout)
        except ReadTimeoutError:
            timed_out += 1
            if _time_left(deadline) <= 0:
                continue  # the deadline cut the wait short: not the replica's fault, and none is left to try
            _skip(target, attempts)
            logger.warning("replica timed out", extra={"replica_id": target.replica_id})
            continue
        except HTTPError as error:
            _skip(target, attempts)
            reason = type(error).__name__
            logger.warning("replica unreachable", extra={"replica_id": target.replica_id, "reason": reason})
            continue
        if response.status >= 500:
            _skip(target, attempts)
            logger.warning("replica failed", extra={"replica_id": target.replica_id, "status": response.status})
            discard(response)
            continue
        return target, response
    if at_capacity == len(targets):
        raise ServiceUnavailable("Every replica of this model is at its rate limit; retry shortly.",
                                 code="replicas_at_capacity", headers={"retry-after": "1"})
    if timed_out:
        raise UpstreamTimedOut("The model did not answer in time.", code="upstream_timeout")
    raise UpstreamFailed("No replica of this model could serve the request.", code="upstream_unavailable")


def _skip(target: Target, attempts: Attempts) -> None:
    """The replica failed this request: the next requests try it last for a while, and this one counts it."""
    routing.mark_failed(target)
    attempts.failed += 1


def read_chunks(response: urllib3.BaseHTTPResponse, deadline: float | None = None) -> Iterator[bytes]:
    """The body as it arrives, each read bounded in time; raises UpstreamTimedOut / UpstreamFailed.

    Ends when the body ends by its framing (the last chunk, Content-Length); a connection lost before
    that raises. Closing the generator early closes the connection, which makes the replica stop.
    """
    settings = get_chat_settings()
    wait = settings.first_byte_timeout
    complete = False
    try:
        while True:
            left = _time_left(deadline)
            if left <= 0:
                raise UpstreamTimedOut("The answer took longer than this request is allowed.",
                                       code="upstream_timeout")
            idle = wait < left
            _set_read_timeout(response, min(wait, left))
            try:
                chunk = response.read1(_READ_SIZE)
            except ReadTimeoutError:
                if idle:
                    raise UpstreamTimedOut("The model stopped answering.", code="upstream_timeout") from None
                raise UpstreamTimedOut("The answer took longer than this request is allowed.",
                                       code="upstream_timeout") from None
            except (HTTPError, OSError):
                raise UpstreamFailed("The replica's connection broke while answering.",
                                     code="upstream_failed") from None
            if not chunk:
                complete = True
                return
            wait = settings.idle_timeout
            yield chunk
    finally:
        if complete:
            response.release_conn()  # read to its end: the connection can serve the next request
        else:
            discard(response)


def _post(address: str, target: Target, body: bytes, headers: dict[str, str],
          timeout: urllib3.Timeout) -> urllib3.BaseHTTPResponse:
    # A pinned replica gets pools of its own, whatever the path: urllib3 keys pools by their TLS options too.
    url = parse_url(address)
    pool = _pool.connection_from_host(url.host, url.port, url.scheme,
                                      pool_kwargs=pool_options(target.tls_fingerprint))
    return pool.urlopen("POST", url.request_uri, body=body, headers=headers, timeout=timeout,
                        preload_content=False, redirect=False)


def _with_key(headers: dict[str, str], target: Target) -> dict[str, str]:
    """The replica's own bearer, if it has one (never the caller's key: that one stays with us)."""
    return {**headers, "authorization": f"Bearer {target.api_key}"} if target.api_key else headers


def _time_left(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.time()


def _set_read_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    # urllib3 2.x keeps the connection on a response read with preload_content=False; http.client's
    # buffered reader reads from that very socket, so its timeout bounds the next recv.
    connection = getattr(response, "connection", None)
    sock: socket.socket | None = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Drop a response without reading it: closing the connection tells the replica to stop."""
    response.close()
    response.release_conn()
