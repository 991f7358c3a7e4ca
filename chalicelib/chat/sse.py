"""An incremental parser for server-sent events, as replicas of any OpenAI-compatible server send them.

Follows the WHATWG HTML "server-sent events" parsing rules where they matter to a proxy:
- a line ends with LF, CRLF or a lone CR; a CR that ends one read and the LF that starts the next are
  one line ending (sse-starlette servers separate events with CRLF CRLF, and reads split anywhere);
- a blank line ends an event; `data:` lines are joined with LF; one space after the colon is dropped;
- a line starting with `:` is a comment (keep-alives such as `: ping`);
- `event:`, `id:` and `retry:` fields are parsed and dropped: `id`/`retry` serve EventSource
  reconnection, which a POST cannot use, and the official OpenAI SDKs treat an event *name* as a
  different kind of message (the python client wraps it as {"data", "event"}), which would break a
  chat completion stream; unknown fields are ignored, as the spec says;
- a leading UTF-8 byte order mark is dropped.

One deliberate departure: at the end of the stream an event without its closing blank line is still
dispatched (the spec discards it). Servers that end with `data: [DONE]` and no blank line mean it.

Bounded: an event (its data plus the line being read) over `max_event_bytes` raises EventTooLarge
while it is still accumulating, so a replica cannot make the proxy buffer without end.

Standard library only: this module is on the chat function's cold-start path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

MAX_EVENT_BYTES = 1024 * 1024
KEEP_ALIVE = b": keep-alive\n\n"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class Event(NamedTuple):
    """A dispatched event: its data lines joined with LF."""

    data: bytes


class Comment(NamedTuple):
    """A comment line (without the colon): a keep-alive, meaningless to clients."""

    text: bytes


Item = Event | Comment


class EventTooLarge(ValueError):
    pass


class Parser:
    """Feed it bytes as they arrive; it hands back whatever events and comments they complete."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._line = bytearray()  # the line being read, not ended yet
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._after_cr = False  # the last read ended with CR: an LF starting the next one belongs to it
        self._first_line = True

    def feed(self, chunk: bytes) -> list[Item]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk[-1:] == b"\r"
        items: list[Item] = []
        start = 0
        for end in _LINE_END.finditer(chunk):
            self._line += chunk[start:end.start()]
            self._take_line(bytes(self._line), items)
            self._line.clear()
            start = end.end()
        self._line += chunk[start:]
        if len(self._line) + self._data_bytes > self.max_event_bytes:
            raise EventTooLarge(f"an event exceeds {self.max_event_bytes} bytes")
        return items

    def finish(self) -> list[Item]:
        """The end of the stream: what is pending counts, even without its blank line."""
        items: list[Item] = []
        if self._line:
            self._take_line(bytes(self._line), items)
            self._line.clear()
        self._take_line(b"", items)
        return items

    def _take_line(self, line: bytes, items: list[Item]) -> None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            if self._data:
                items.append(Event(b"\n".join(self._data)))
            self._data, self._data_bytes = [], 0
        elif line[0] == ord(":"):
            items.append(Comment(line[1:].removeprefix(b" ")))
        else:
            name, _, value = line.partition(b":")
            if name == b"data":
                value = value.removeprefix(b" ")
                self._data.append(value)
                self._data_bytes += len(value) + 1
                if self._data_bytes > self.max_event_bytes:
                    raise EventTooLarge(f"an event exceeds {self.max_event_bytes} bytes")
            # event, id, retry and unknown fields: dropped (see the module docstring).


def parse(chunks: Iterable[bytes], max_event_bytes: int = MAX_EVENT_BYTES) -> Iterator[Item]:
    """The events and comments of a whole stream read chunk by chunk, each as soon as it is complete."""
    parser = Parser(max_event_bytes)
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.finish()


def encode(event: Event) -> bytes:
    """The event in the canonical form relayed to clients: `data: ...` lines, LF, a blank line."""
    if b"\n" not in event.data:
        return b"data: " + event.data + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in event.data.split(b"\n")) + b"\n"
