"""Relaying a replica's answer to the client as it arrives, and reading usage off it.

Each server-sent event is relayed as soon as it is complete, in one canonical form whatever the
replica's dialect (chalicelib.chat.sse): `data: ...` lines ending in LF and a blank line, without
`event:`/`id:`/`retry:` fields. Keep-alive comments are relayed as `: keep-alive`: while a replica
queues or thinks, they keep idle intermediaries (API Gateway cuts an edge-optimized stream after 30 s
of silence, proxies on the client's side too) from closing the client's connection; clients ignore them.
The proxy always asks the replica for usage, in every chunk too (vLLM's `continuous_usage_stats`), so that
a stream cut anywhere is metered up to where it was cut; what the client did not ask for is taken out
again: the `usage` of each chunk (the chunk is then re-encoded, compact, as vLLM writes it), and the final
usage chunk. Every generated piece relayed is counted too, for a replica that reports no usage. JSON is
parsed only for events that may carry usage or text the meter needs.

A stream that ends by its HTTP framing without `data: [DONE]` is complete: the proxy ends it with
`data: [DONE]` itself. A connection lost before the end, a silent replica, the deadline, or an event
over 1 MiB end the stream with an error event instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError

from chalicelib.chat import sse
from chalicelib.chat.metering import Meter
from chalicelib.chat.openai_errors import sse_error_event
from chalicelib.chat.upstream import discard, read_chunks
from chalicelib.core.errors import ApiError, ReplicaRefused, UpstreamFailed

_READ_SIZE = 64 * 1024
_DONE = sse.Event(b"[DONE]")


def upstream_events(response: urllib3.BaseHTTPResponse, deadline: float | None = None) -> Iterator[sse.Item]:
    """The replica's events and comments as they complete; raises ApiError on failure."""
    chunks = read_chunks(response, deadline)
    try:
        yield from sse.parse(chunks)
    except sse.EventTooLarge:
        raise UpstreamFailed(f"The replica sent an event over {sse.MAX_EVENT_BYTES} bytes.",
                             code="upstream_failed") from None
    finally:
        chunks.close()  # early exit included: closing the connection makes the replica stop generating


def relay_events(events: Iterator[sse.Item], meter: Meter, client_wants_usage: bool,
                 client_wants_running_usage: bool = False) -> Iterator[bytes]:
    try:
        for item in events:
            if isinstance(item, sse.Comment):
                yield sse.KEEP_ALIVE
            elif item.data.startswith(b"[DONE]"):  # as the OpenAI SDKs read it
                break
            else:
                data = _metered(item.data, meter, client_wants_usage, client_wants_running_usage)
                if data is not None:
                    yield sse.encode(item if data is item.data else sse.Event(data))
        yield sse.encode(_DONE)
    except ApiError as error:
        meter.fail(error)
        yield sse_error_event(error)
    finally:
        close = getattr(events, "close", None)
        if close:
            close()  # after [DONE] nothing more is read from the replica


def read_answer(response: urllib3.BaseHTTPResponse, meter: Meter, deadline: float | None = None,
                max_bytes: int = 8 * 1024 * 1024) -> bytes:
    """A non-streamed answer, whole and bounded; nothing has been sent yet, so a failure is a plain error."""
    too_large = UpstreamFailed(f"The replica's answer is over {max_bytes} bytes.", code="upstream_failed")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        discard(response)
        raise too_large
    parts: list[bytes] = []
    size = 0
    chunks = read_chunks(response, deadline)
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            parts.append(chunk)
    finally:
        chunks.close()
    payload = b"".join(parts)
    try:
        meter.observe_answer(json.loads(payload))
    except (ValueError, AttributeError):
        raise UpstreamFailed("The replica's answer is not valid JSON.", code="upstream_failed") from None
    meter.first_token()
    return payload


def upstream_error(response: urllib3.BaseHTTPResponse) -> ReplicaRefused:
    """A replica's 4xx, passed on with its status and message in OpenAI's shape."""
    try:
        body = json.loads(response.read(_READ_SIZE))
        message = body.get("message") or (body.get("error") or {}).get("message")
    except (ValueError, AttributeError, HTTPError, OSError):
        message = None
    finally:
        response.close()
        response.release_conn()
    message = message or f"The replica refused the request ({response.status})."
    return ReplicaRefused(str(message), status=response.status)


def _metered(data: bytes, meter: Meter, client_wants_usage: bool, client_wants_running_usage: bool) -> bytes | None:
    """Record what the event tells the meter; the event for the client (`data` itself when unchanged), or None
    to hold it back (a usage chunk it did not ask for)."""
    if b'"usage"' not in data and b'"content"' not in data and b'"text"' not in data and b'"tool_calls"' not in data:
        return data  # the role's first chunk, a finish reason: nothing to meter
    try:
        chunk: dict[str, Any] = json.loads(data)
    except ValueError:
        return data
    if not isinstance(chunk, dict):
        return data
    choices = chunk.get("choices")
    choices = choices if isinstance(choices, list) else []
    generated = (_generated(choice) for choice in choices if isinstance(choice, dict))
    texts = [text for text in generated if text is not None]
    if texts:
        meter.relayed(texts)
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return data
    meter.usage = usage
    if not choices:
        return data if client_wants_usage else None  # the final usage chunk
    if client_wants_running_usage:
        return data
    del chunk["usage"]
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode()


def _generated(choice: dict[str, Any]) -> str | None:
    """The text a streamed choice adds, "" for a chat tool call; None if it adds nothing.

    A chat chunk's choice carries a `delta` (`content`, `tool_calls`); a completion chunk's, its `text`.
    """
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "") if delta.get("content") or delta.get("tool_calls") else None
    text = choice.get("text")
    return text if isinstance(text, str) and text else None
