"""Where an autoscaled model's template keeps its `secrets` (the run command's environment) between creates.

An item `scaling-secrets#<model id>` in the bookkeeping table: written by the admin API when it sets the
autoscaling (never read back by it: secrets are write-only), read only by the scaler, which hands a copy to
each replica it makes (store.replica_secrets, as an admin's create_vm does). The model row keeps the names.
"""

from __future__ import annotations

from collections.abc import Mapping

from chalicelib.store.tables import Bookkeeping

PREFIX = "scaling-secrets#"


def key(model_id: int) -> str:
    return f"{PREFIX}{int(model_id)}"


def item(model_id: int, secrets: Mapping[str, str]) -> Bookkeeping:
    return Bookkeeping(key(model_id), secrets=dict(secrets))


def read(model_id: int) -> dict[str, str]:
    try:
        found = Bookkeeping.get(key(model_id), consistent_read=True)
    except Bookkeeping.DoesNotExist:
        return {}
    return found.secrets.as_dict() if found.secrets is not None else {}
