"""How the mock replica's fault modes frame, pace and hold back a reply (see infra.local.mock_vllm).

Plain functions over bytes, a chunk writer and the server's stop event, so that the replica's handler
stays a table of modes. The dialects and faults of other OpenAI-compatible servers; the content is always
the "ok" mode's, and a non-streamed reply is the "ok" one unless said otherwise:
- "crlf": events end with CRLF CRLF, as servers built on sse-starlette send them.
- "split_cr": CRLF, and each event is split into HTTP chunks right after each CR, so that a CR ends one
  read and its LF starts the next.
- "keepalive": a `retry:` field first, a `: ping - <time>` comment (CRLF) before every event, and each
  event with `id:` and `event:` fields and its JSON over two `data:` lines.
- "no_done": the stream ends cleanly (terminating chunk) without `data: [DONE]`.
- "done_no_blank": the stream ends with `data: [DONE]` and no line end after it.
- "oversized_event": the first token event carries over 1 MiB of content (OVERSIZED_EVENT_BYTES), sent in
  64 KiB HTTP chunks; then the rest as usual.
- "trickle": every byte is an HTTP chunk of its own, TRICKLE_SECONDS apart (a non-streamed body too): never
  silent for long, never done in time.
- "idle": a stream sends its first event, then nothing; a non-streamed reply its headers and half its body,
  then nothing. The connection stays open until the client closes it (or `stop()`).
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib.chat.mock import replies as mock_replies

OVERSIZED_EVENT_BYTES = 1024 * 1024 + 4096
TRICKLE_SECONDS = 0.05
_AFTER_CR = re.compile(rb"(?<=\r)")
_PIECE = 64 * 1024


def framed(event: bytes, mode: str, number: int) -> list[bytes]:
    """The HTTP chunks that carry one `data: ...` event (LF, blank line) in the mode's dialect."""
    if mode == "done_no_blank" and event == mock_replies.DONE_EVENT:
        return [b"data: [DONE]"]
    if mode == "crlf":
        return [event.replace(b"\n", b"\r\n")]  # compact JSON has no raw line ends: only the blank line
    if mode == "split_cr":
        return [piece for piece in _AFTER_CR.split(event.replace(b"\n", b"\r\n")) if piece]
    if mode == "keepalive":
        ping = b": ping - %d\r\n\r\n" % time.time()
        if event == mock_replies.DONE_EVENT:
            return [ping, event]
        two_lines = event.replace(b',"object"', b',\ndata: "object"', 1)
        return [ping, b"id: %d\nevent: completion.chunk\n%s" % (number, two_lines)]
    return [event]


def oversized(chunk: dict[str, Any]) -> list[bytes]:
    """The chunk with over 1 MiB of content, as one event cut into 64 KiB HTTP chunks."""
    delta = {"content": "x" * OVERSIZED_EVENT_BYTES}
    event = mock_replies.encode_event({**chunk, "choices": [{**chunk["choices"][0], "delta": delta}]})
    return [event[start:start + _PIECE] for start in range(0, len(event), _PIECE)]


def trickle(data: bytes, write: Callable[[bytes], object], stopping: threading.Event) -> bool:
    """Write one byte per TRICKLE_SECONDS; False if the server is stopping."""
    for index in range(len(data)):
        if stopping.wait(TRICKLE_SECONDS):
            return False
        write(data[index:index + 1])
    return True


def wait_for_the_client_to_leave(connection: socket.socket, stopping: threading.Event) -> None:
    # Short waits: stop() must find the thread ready to leave; EOF (or a reset) is the client gone.
    while not stopping.wait(0.05):
        if select.select([connection], [], [], 0)[0]:
            try:
                if not connection.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                return
