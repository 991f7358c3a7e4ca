"""Asking for a replica's wake: one conditional write, so one ask wins however many requests race."""

from __future__ import annotations

from chalicelib import replica_statuses as statuses
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Replica


def request_wake(replica_id: int, now_ms: int) -> int | None:
    """Record a wake asked at `now_ms` unless one is asked already; the ask's time if this call made it.

    A replica still hibernating may be asked too: its hibernate workflow starts the wake once the VM
    is hibernated, and the wake workflow waits for that. The time names the wake's execution.
    """
    asked = update_if(Replica(replica_id), [Replica.wake_requested_at.set(now_ms)],
                      Replica.vm_status.is_in(statuses.HIBERNATING, statuses.HIBERNATED)
                      & Replica.wake_requested_at.does_not_exist())
    return now_ms if asked else None
