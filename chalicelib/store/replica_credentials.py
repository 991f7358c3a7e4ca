"""Where a provisioned replica's private key and bearer wait while its VM is being made.

An item `replica-tls#<id>` in the bookkeeping table. Only the provision function's role may read
or write such items (the chat role reads no bookkeeping item, the API's role no `replica-tls#` one),
and the item goes as soon as the VM that holds the key is recorded, or deleted.
"""

from __future__ import annotations

from chalicelib.store.conditional import save_if
from chalicelib.store.tables import Bookkeeping

PREFIX = "replica-tls#"


def read(replica_id: int) -> tuple[str, str, str] | None:
    """(api_key, certificate PEM, private key PEM), or None."""
    try:
        item = Bookkeeping.get(_key(replica_id), consistent_read=True)
    except Bookkeeping.DoesNotExist:
        return None
    if not (item.secret and item.certificate and item.private_key):
        return None
    return item.secret, item.certificate, item.private_key


def keep_first(replica_id: int, api_key: str, certificate_pem: str, private_key_pem: str) -> None:
    """Keep these unless some are kept already: then those stay, and a VM made with them stays valid."""
    item = Bookkeeping(_key(replica_id), secret=api_key, certificate=certificate_pem, private_key=private_key_pem)
    save_if(item, Bookkeeping.pk.does_not_exist())


def forget(replica_id: int) -> None:
    Bookkeeping(_key(replica_id)).delete()


def _key(replica_id: int) -> str:
    return f"{PREFIX}{int(replica_id)}"
