"""Hyperstack GPU VMs for replicas. Importing this package is cheap: the SDK loads only with a client."""

from __future__ import annotations

from functools import lru_cache

from chalicelib.core.settings import get_provision_settings, hyperstack_api_key
from chalicelib.hyperstack.client import (
    VM_ACTIVE,
    VM_HIBERNATED,
    VM_HIBERNATING,
    VM_RESTORING,
    HibernationUnsupported,
    HyperstackClient,
    HyperstackError,
    Vm,
    VmSpec,
)

__all__ = ["VM_ACTIVE", "VM_HIBERNATED", "VM_HIBERNATING", "VM_RESTORING", "HibernationUnsupported",
           "HyperstackClient", "HyperstackError", "Vm", "VmSpec", "configured_client"]


@lru_cache(maxsize=1)
def configured_client() -> HyperstackClient | None:
    """The client this deployment's settings describe (its key from SSM in AWS), or None without a key.

    One per function instance: the SDK's client and its connection pool are reused across invocations."""
    from chalicelib.hyperstack import client  # read at call time, so that a test may stand a fake in for it

    key = hyperstack_api_key()
    if not key:
        return None
    settings = get_provision_settings()
    return client.HyperstackClient(key, host=settings.hyperstack_api_url,
                                   timeout_seconds=settings.hyperstack_timeout_seconds)
