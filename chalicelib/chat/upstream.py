"""Sending a chat request to a replica, with failover to the next one.

A replica that refuses the connection, times out before answering or answers 5xx before the
first byte is skipped and the next is tried; the caller sees an error only when none can serve.
The body is relayed as the replica sends it, so nothing is decoded or re-encoded here.
"""

from __future__ import annotations

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from chalicelib.chat import routing
from chalicelib.chat.routing import Target
from chalicelib.errors import ServiceUnavailable, UpstreamFailed, UpstreamTimedOut
from chalicelib.observability import logger
from chalicelib.settings import get_chat_settings

# One pool per function instance: connections to replicas are reused across invocations.
_pool = urllib3.PoolManager(num_pools=32, maxsize=16, retries=False, block=False)
_HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}


def send(targets: list[Target], body: bytes, stream: bool, now: float) -> tuple[Target, urllib3.BaseHTTPResponse]:
    settings = get_chat_settings()
    timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.first_byte_timeout)
    headers = {**_HEADERS, "accept": "text/event-stream" if stream else "application/json"}
    timed_out = at_capacity = 0
    for target in targets:
        if not routing.reserve(target, now):
            at_capacity += 1
            continue
        try:
            response = _pool.urlopen("POST", target.chat_url, body=body, headers=headers, timeout=timeout,
                                     preload_content=False, redirect=False)
        except ReadTimeoutError:
            timed_out += 1
            routing.mark_failed(target)
            logger.warning("replica timed out", extra={"replica_id": target.replica_id})
            continue
        except HTTPError as error:
            routing.mark_failed(target)
            reason = type(error).__name__
            logger.warning("replica unreachable", extra={"replica_id": target.replica_id, "reason": reason})
            continue
        if response.status >= 500:
            routing.mark_failed(target)
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


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Drop a response without reading it: closing the connection tells the replica to stop."""
    response.close()
    response.release_conn()
