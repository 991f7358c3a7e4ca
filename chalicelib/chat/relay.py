"""Relaying a replica's answer to the client as it arrives, and reading usage off it.

Server-sent events are forwarded byte for byte, each as soon as it is complete. Only the usage
chunk is held back when the client did not ask for it (the proxy always asks the replica for
usage, to meter it). JSON is parsed only for events that may carry usage or the first token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from chalicelib.chat.metering import Meter
from chalicelib.chat.openai_errors import sse_error_event
from chalicelib.errors import ApiError, BadRequest, UpstreamFailed, UpstreamTimedOut

_READ_SIZE = 64 * 1024
_DONE = b"data: [DONE]"


def upstream_events(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The replica's SSE events, each with its blank-line terminator; raises ApiError on failure."""
    pending = b""
    try:
        while chunk := response.read1(_READ_SIZE):
            pending += chunk
            if b"\n\n" not in pending:
                continue
            *events, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            yield from (event + b"\n\n" for event in events if event)
    except ReadTimeoutError:
        raise UpstreamTimedOut("The model stopped answering mid-stream.", code="upstream_timeout") from None
    except (HTTPError, OSError):
        raise UpstreamFailed("The replica failed mid-stream.", code="upstream_failed") from None
    finally:
        response.close()  # early exit included: closing the connection makes the replica stop generating
        response.release_conn()


def relay_events(events: Iterator[bytes], meter: Meter, client_wants_usage: bool) -> Iterator[bytes]:
    finished = False
    try:
        for event in events:
            if event.startswith(_DONE):
                finished = True
            elif _may_matter(event, meter) and not _inspect(event, meter, client_wants_usage):
                continue
            yield event
        if not finished:
            raise UpstreamFailed("The replica ended the stream before it was complete.", code="upstream_failed")
    except ApiError as error:
        meter.status = error.status
        yield sse_error_event(error)


def read_answer(response: urllib3.BaseHTTPResponse, meter: Meter) -> bytes:
    """A non-streamed answer, whole; nothing has been sent yet, so a failure is a plain error."""
    try:
        payload = response.read()
    except ReadTimeoutError:
        raise UpstreamTimedOut("The model did not answer in time.", code="upstream_timeout") from None
    except (HTTPError, OSError):
        raise UpstreamFailed("The replica failed while answering.", code="upstream_failed") from None
    finally:
        response.release_conn()
    try:
        meter.observe_answer(json.loads(payload))
    except (ValueError, AttributeError):
        raise UpstreamFailed("The replica's answer is not valid JSON.", code="upstream_failed") from None
    meter.first_token()
    return payload


def upstream_error(response: urllib3.BaseHTTPResponse) -> ApiError:
    """A replica's 4xx, passed on with its status and message in OpenAI's shape."""
    try:
        body = json.loads(response.read(_READ_SIZE))
        message = body.get("message") or (body.get("error") or {}).get("message")
    except (ValueError, AttributeError, HTTPError, OSError):
        message = None
    finally:
        response.close()
        response.release_conn()
    return BadRequest(str(message or f"The replica refused the request ({response.status})."), status=response.status)


def _may_matter(event: bytes, meter: Meter) -> bool:
    return b'"usage"' in event or meter.time_to_first_token is None or meter.store_content


def _inspect(event: bytes, meter: Meter, client_wants_usage: bool) -> bool:
    """Record what the event tells; False to hold it back from the client."""
    try:
        chunk: dict[str, Any] = json.loads(event[event.index(b"{"):])
    except ValueError:
        return True
    choices = chunk.get("choices") or []
    deltas = [choice.get("delta") or {} for choice in choices if isinstance(choice, dict)]
    if any(delta.get("content") or delta.get("tool_calls") for delta in deltas):
        meter.first_token()
        if meter.store_content:
            meter.answer.extend(str(delta.get("content") or "") for delta in deltas)
    if chunk.get("usage"):
        meter.usage = chunk["usage"]
        return bool(choices) or client_wants_usage
    return True
