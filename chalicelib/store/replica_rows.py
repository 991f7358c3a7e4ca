"""A replica's rows: the replica, its security rules, the guard that keeps its endpoint unique, and the item
where a provisioned replica's secrets wait for its VM.

An endpoint is unique per model, but it is not a key of the replicas table, so a guard item
(`endpoint#<model id>#<endpoint>` in the bookkeeping table) is written in the same transaction as
the replica, with the condition that it does not exist yet, and deleted with it.
"""

from __future__ import annotations

from typing import Any

from chalicelib.store import model_load, replica_secrets, template_secrets
from chalicelib.store.tables import Bookkeeping, LlmModel, Replica, ReplicaSecurityRule
from chalicelib.store.transactions import MAX_ITEMS, transaction


def endpoint_guard(replica: Replica) -> str:
    return f"endpoint#{replica.model_id}#{replica.endpoint}"


def slot_guard(replica: Replica) -> str:
    """The scaling slot a replica made by the scaler holds: a model has max_replicas slots at most, and a
    replica is inserted only with a slot no other holds (chalicelib/admin/scaler.py)."""
    return f"scale-slot#{replica.model_id}#{int(replica.scale_slot)}"


def delete_rows(replicas: list[Replica], model: LlmModel | None = None) -> None:
    """Replicas, their rules and endpoint guards (and the model, if given) in as few transactions as fit."""
    items: list[Any] = []
    for replica in replicas:
        items.append(replica)
        items.extend(ReplicaSecurityRule.query(replica.id))
        if replica.endpoint:
            items.append(Bookkeeping(endpoint_guard(replica)))
        if replica.scale_slot is not None:
            items.append(Bookkeeping(slot_guard(replica)))
        if replica.name is not None:  # provisioned: its secrets may still wait for its VM (store.replica_secrets)
            items.append(Bookkeeping(replica_secrets.key(int(replica.id))))
    if model is not None:  # its autoscaling's items, then the model itself
        items.extend(Bookkeeping(key) for key in (template_secrets.key(model.id), model_load.key(model.id)))
        items.append(model)  # last, so a cascade cut short leaves the model to retry on
    for start in range(0, len(items), MAX_ITEMS):
        with transaction() as tx:
            for item in items[start : start + MAX_ITEMS]:
                if item is model:  # only the model marked deleting: none of its replicas can be added since
                    tx.delete(item, condition=(LlmModel.id == model.id) & LlmModel.deleting.exists())
                else:
                    tx.delete(item)
