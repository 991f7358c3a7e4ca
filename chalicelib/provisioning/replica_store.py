"""The replica rows as the workflow reads and moves them, one status at a time."""

from __future__ import annotations

from typing import Any

from chalicelib.provisioning.errors import ReplicaGone
from chalicelib.store import replica_rows
from chalicelib.store.conditional import update_if
from chalicelib.store.lookups import model_by_id
from chalicelib.store.tables import Replica, ReplicaSecurityRule

_RULE_FIELDS = ("direction", "protocol", "ethertype", "remote_ip_prefix", "port_range_min", "port_range_max")


def find(replica_id: int) -> Replica | None:
    try:
        return Replica.get(replica_id, consistent_read=True)
    except Replica.DoesNotExist:
        return None


def mark(replica_id: int, status: str, allowed: tuple[str, ...], **fields: Any) -> None:
    """Move the replica to `status` only from one of `allowed`: two writers cannot both win."""
    actions = [Replica.vm_status.set(status)]
    for name, value in fields.items():
        attribute = getattr(Replica, name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    if not update_if(Replica(replica_id), actions, Replica.vm_status.is_in(*allowed)):
        raise ReplicaGone(f"Replica {replica_id} is not {' or '.join(allowed)} any more.")


def model_name_of(replica: Replica) -> str:
    model = model_by_id(int(replica.model_id))
    if model is None:
        raise ReplicaGone(f"The model of replica {replica.id} was deleted.")
    return model.name


def security_rules_of(replica: Replica) -> list[dict[str, Any]]:
    return [{name: getattr(rule, name) for name in _RULE_FIELDS} for rule in ReplicaSecurityRule.query(replica.id)]


def delete_rows(replica: Replica) -> None:
    replica_rows.delete_rows([replica])
