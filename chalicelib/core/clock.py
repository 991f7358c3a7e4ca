"""Time as the API shows it: Unix seconds in the store, ISO 8601 UTC on the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> int:
    return int(time.time())


def iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
