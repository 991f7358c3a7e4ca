"""HTTP/1.1 chunked transfer coding (RFC 9112, section 7.1): a streamed body framed on the wire.

Used where this project writes HTTP itself: the chat function's Runtime API stream, the local
gateway and the mock replica. Standard library only: it is on the chat function's cold start.
"""

from __future__ import annotations


def chunk(data: bytes) -> bytes:
    """One chunk. An empty one would end the body: callers skip empty pieces."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: dict[str, str] | None = None) -> bytes:
    """The end of the body, with its trailer fields if any (ASCII, as header values are)."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items())
    return b"0\r\n" + fields.encode("ascii") + b"\r\n"
