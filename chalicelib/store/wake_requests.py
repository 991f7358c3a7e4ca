"""Asking for a replica's wake: one conditional write, so one ask wins however many requests race."""

from __future__ import annotations

from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Replica


def request_wake(replica_id: int, now_ms: int) -> int | None:
    """Record a wake asked at `now_ms` unless one is asked already; the ask's time if this call made it.

    A replica still hibernating may be asked too: its hibernate workflow starts the wake once the VM
    is hibernated, and the wake workflow waits for that. The time names the wake's execution.
    """
    # `hibernated_at` is set exactly while the replica is HIBERNATING or HIBERNATED (the workflows move
    # it with vm_status), and reading it, not vm_status, keeps vm_status out of the chat role's reach.
    asked = update_if(Replica(replica_id), [Replica.wake_requested_at.set(now_ms)],
                      Replica.hibernated_at.exists() & Replica.wake_requested_at.does_not_exist())
    return now_ms if asked else None


def renew_wake(replica_id: int, asked: int, now_ms: int) -> int | None:
    """Replace the ask made at `asked` (its wake failed) by one at `now_ms`, unless someone else replaced it, or
    the replica woke meanwhile; the new ask's time if this call made it. Its wake then has a name of its own."""
    renewed = update_if(Replica(replica_id), [Replica.wake_requested_at.set(now_ms)],
                        Replica.hibernated_at.exists() & (Replica.wake_requested_at == asked))
    return now_ms if renewed else None
