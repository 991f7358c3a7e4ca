"""Replicas for the fake Hyperstack's VMs: each ACTIVE VM gets a server on the port its user_data names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ServedVms:
    """`on_active`/`on_deleted` callbacks that give each ACTIVE VM a replica on the port its
    user_data names (whatever `serve(vm)` starts: a mock replica, a forwarder), stopped with the VM."""

    def __init__(self, serve: Callable[[dict[str, Any]], Any]) -> None:
        self._serve = serve
        self._replicas: dict[int, Any] = {}

    def on_active(self, vm: dict[str, Any]) -> None:
        if vm.get("port"):
            self._replicas[vm["id"]] = self._serve(vm)

    def on_deleted(self, vm: dict[str, Any]) -> None:
        replica = self._replicas.pop(vm["id"], None)
        if replica is not None:
            replica.stop()

    def stop_all(self) -> None:
        for replica in list(self._replicas.values()):
            replica.stop()


def mock_replica_for(vm: dict[str, Any]) -> Any:
    from infra.local.mock_vllm import MockVllm

    return MockVllm(model=vm["model"], port=vm["port"], pace_seconds=0.02).start()
