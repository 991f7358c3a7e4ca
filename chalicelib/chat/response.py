"""What the chat service hands to a transport (the local server, the Lambda streaming loop)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatResponse:
    status: int
    headers: dict[str, str]
    # Chunks to write as they come. A transport that stops early (the client went away) must
    # call close(): that is what ends the upstream request and writes the usage row.
    body: Iterator[bytes]
    streamed: bool = False
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self.body, "close", None)
            if close:
                close()


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> ChatResponse:
    body = iter([json.dumps(payload).encode()])
    return ChatResponse(status, {"content-type": "application/json", **(headers or {})}, body)
