"""Where a provisioned replica's `secrets` (its run command's environment: HF tokens and the like) wait until
its VM is made.

An item `replica-secrets#<id>` in the bookkeeping table, written in the transaction that inserts the replica
(the admin API's role may write and delete such items, never read them) and read only by the provision
function's create step, which puts them in the VM's user_data; it goes as soon as that VM is recorded, or
with the replica's rows. The replica row keeps the secrets' names only (`secret_names`), for the admin views:
the chat role, the idle check and the replica indexes never see a value.
"""

from __future__ import annotations

from collections.abc import Mapping

from chalicelib.store.tables import Bookkeeping, Replica

PREFIX = "replica-secrets#"


def item(replica_id: int, secrets: Mapping[str, str]) -> Bookkeeping:
    """The item to write beside the replica (in its insert transaction)."""
    return Bookkeeping(key(replica_id), secrets=dict(secrets))


def read(replica: Replica) -> dict[str, str] | None:
    """The replica's secrets: from their item, or from the row itself for a replica created before they moved."""
    try:
        found = Bookkeeping.get(key(int(replica.id)), consistent_read=True)
    except Bookkeeping.DoesNotExist:
        found = None
    if found is not None and found.secrets is not None:
        return found.secrets.as_dict()
    return replica.secrets.as_dict() if replica.secrets is not None else None


def forget(replica_id: int) -> None:
    Bookkeeping(key(replica_id)).delete()


def key(replica_id: int) -> str:
    return f"{PREFIX}{int(replica_id)}"
