"""When a replica counts as idle: the one rule the idle check, the chat path and `make cost` share.

Use is recorded at minute granularity (`used_minute`): the chat path writes a replica's minute of last
use at most once per minute, never once per request. A minute of use counts until its end, so a
replica is idle once `hibernate_after_seconds` have passed since the end of its last used minute, or
since it began serving if it was never used. The idle check runs every IDLE_CHECK_SECONDS, so a
replica is hibernated at most that much later than the rule allows.
"""

from __future__ import annotations

MINUTE_SECONDS = 60


def used_minute(now: float) -> int:
    """The minute (Unix seconds // 60) a request at `now` marks as used."""
    return int(now // MINUTE_SECONDS)


def last_used_at(last_used_minute: int | None, serving_since: float) -> float:
    """When the replica was last known busy: the end of its last used minute, or when it began serving."""
    if last_used_minute is None:
        return serving_since
    return max(serving_since, (int(last_used_minute) + 1) * MINUTE_SECONDS)


def is_idle(last_used_minute: int | None, serving_since: float, hibernate_after_seconds: int | None,
            now: float) -> bool:
    """True when the replica has been idle `hibernate_after_seconds` (None: it never hibernates)."""
    if not hibernate_after_seconds:
        return False
    return now - last_used_at(last_used_minute, serving_since) >= hibernate_after_seconds
