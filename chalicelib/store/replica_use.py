"""A replica's minute of last use, for the idle rule (chalicelib/core/idle_rule.py): at most one write a minute."""

from __future__ import annotations

from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Replica


def mark_used(replica_id: int, minute: int) -> bool:
    """Record `minute` as the replica's last used one, unless a later or equal one is recorded already
    (by another function instance this minute): True if this call wrote it."""
    newer = Replica.last_used_minute.does_not_exist() | (Replica.last_used_minute < minute)
    return update_if(Replica(replica_id), [Replica.last_used_minute.set(minute)], Replica.id.exists() & newer)
