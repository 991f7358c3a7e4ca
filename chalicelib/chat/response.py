"""What the chat service hands to a transport (the local server, the Lambda streaming loop)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatResponse:
    status: int
    headers: dict[str, str]
    # Chunks to write as they come. Every transport calls close() once the answer is out (or the
    # client went away): that ends the upstream request and writes the usage row, after the
    # client has what it asked for.
    body: Iterator[bytes]
    streamed: bool = False
    on_close: Callable[[], None] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self.body, "close", None)
        if close:
            close()
        if self.on_close:
            self.on_close()


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> ChatResponse:
    body = iter([json.dumps(payload).encode()])
    return ChatResponse(status, {"content-type": "application/json", **(headers or {})}, body)
