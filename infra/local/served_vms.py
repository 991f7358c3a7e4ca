"""Replicas for the fake Hyperstack's VMs: each ACTIVE VM is served on the port its user_data names, from the
moment it turns ACTIVE (created or restored) until it is deleted or hibernated.

As a booted VM would: when the user_data carries a replica's TLS material, its port is a TLS front
(infra/local/vm_front.py) that checks the bearer and relays to a model server elsewhere; without it, the
model server answers the port itself, plain. Each serves on the VM's floating IP: with `loopback_for` as the fake
Hyperstack's `floating_ip`, every VM has a loopback address of its own (Linux routes all of 127.0.0.0/8 to
itself), so that VMs made from one template, one port, can run side by side as they do on Hyperstack.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class ServedVm:
    """What serves one VM: its model server (`replica`: a MockVllm, say; None for a server shared by every VM),
    behind `front` (a VmFront) when the VM's user_data asks for one."""

    replica: Any = None
    front: Any = None

    def stop(self) -> None:
        for server in (self.front, self.replica):  # the front first: its clients see the VM go away
            if server is not None:
                server.stop()


class ServedVms:
    """`on_active`/`on_deleted`/`on_hibernated` callbacks that give each ACTIVE VM the servers `serve(vm)` starts
    (a ServedVm, or anything with `stop()`; None: the VM answers nothing), stopped when the VM is deleted or
    hibernated. A restored VM turns ACTIVE again: `on_active` serves it anew (a fresh model server)."""

    def __init__(self, serve: Callable[[dict[str, Any]], Any]) -> None:
        self._serve = serve
        self._served: dict[int, Any] = {}

    @property
    def replicas(self) -> dict[int, Any]:
        """VM id -> the model server behind it (tests flip a MockVllm's `mode` through this)."""
        return {vm_id: getattr(served, "replica", served) for vm_id, served in self._served.items()}

    def served(self, vm_id: int) -> Any:
        """What serves the VM (a ServedVm): tests swap its front for an impostor through this."""
        return self._served[vm_id]

    def on_active(self, vm: dict[str, Any]) -> None:
        if vm.get("port"):
            served = self._serve(vm)
            if served is not None:
                self._served[vm["id"]] = served

    def on_deleted(self, vm: dict[str, Any]) -> None:
        served = self._served.pop(vm["id"], None)
        if served is not None:
            served.stop()

    def on_hibernated(self, vm: dict[str, Any]) -> None:
        """The guest is saved to disk and powered off: its port answers nothing until a restore."""
        self.on_deleted(vm)

    def stop_all(self) -> None:
        while self._served:
            self._served.popitem()[1].stop()


def loopback_for(vm: dict[str, Any]) -> str:
    """A VM's own loopback address (127.1.x.y from its id) where the system has them all; else 127.0.0.1, which
    every system has (macOS routes only that one by default), and VMs must then differ in port."""
    if not sys.platform.startswith("linux"):
        return "127.0.0.1"
    vm_id = int(vm["id"])
    return f"127.1.{vm_id // 250 % 250}.{vm_id % 250 + 2}"


def host_of(vm: dict[str, Any]) -> str:
    """Where a VM's servers listen: its floating IP when it has a loopback one."""
    address = vm.get("floating_ip") or ""
    return address if address.startswith("127.") else "127.0.0.1"


def mock_replica_for(vm: dict[str, Any], pace_seconds: float = 0.02) -> ServedVm:
    """A mock vLLM serving the VM's model: behind the VM's TLS front (and checking its bearer too, as vLLM
    given VLLM_API_KEY does), or on the VM's port itself for a user_data without TLS material."""
    from infra.local.mock_vllm import MockVllm
    from infra.local.vm_front import credentials_in, front_for

    credentials = credentials_in(vm.get("user_data"))
    if credentials is None:
        return ServedVm(MockVllm(model=vm["model"], host=host_of(vm), port=vm["port"],
                                 pace_seconds=pace_seconds).start())
    replica = MockVllm(model=vm["model"], pace_seconds=pace_seconds, api_key=credentials.api_key).start()
    try:
        return ServedVm(replica, front_for(vm, (replica.loopback_host, replica.port)))
    except BaseException:
        replica.stop()
        raise
