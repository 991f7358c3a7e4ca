"""This deployment's id: its stage and 8 random hex characters, made once and kept in `bookkeeping`.

VM names carry it (chalicelib/core/vm_naming.py), so two deployments sharing a Hyperstack account, or two
`make run`s, never touch each other's VMs. The first function to need it makes it with a conditional put;
a racing second one loses the put and reads the winner's. It lives as long as the bookkeeping table: a
stack keeps it across deploys, and `make run`'s embedded emulator starts with fresh tables, so a fresh id.
"""

from __future__ import annotations

import secrets
import threading

from chalicelib.core.settings import get_settings
from chalicelib.store.conditional import save_if
from chalicelib.store.tables import Bookkeeping

DEPLOYMENT_KEY = "deployment"

_lock = threading.Lock()
_cached: dict[str, str] = {}


def deployment_id() -> str:
    """`<stage>-<8 hex>`, read once per function instance (it never changes once made)."""
    with _lock:
        if DEPLOYMENT_KEY not in _cached:
            _cached[DEPLOYMENT_KEY] = f"{get_settings().stage}-{_stored_suffix():08x}"
        return _cached[DEPLOYMENT_KEY]


def forget_cached_id() -> None:
    """For tests that start over with fresh tables."""
    with _lock:
        _cached.clear()


def _stored_suffix() -> int:
    # Bookkeeping's `value` is a number: the suffix is kept as one, so the table needs no new attribute.
    existing = _read()
    if existing is not None:
        return existing
    # Refused when another instance made it first: then its id is the one.
    save_if(Bookkeeping(DEPLOYMENT_KEY, value=secrets.randbits(32)), Bookkeeping.pk.does_not_exist())
    stored = _read()
    if stored is None:
        raise RuntimeError("the deployment id was written but cannot be read back")
    return stored


def _read() -> int | None:
    try:
        return int(Bookkeeping.get(DEPLOYMENT_KEY, consistent_read=True).value)
    except Bookkeeping.DoesNotExist:
        return None
