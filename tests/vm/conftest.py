"""The boot test's fixtures: the fake Hyperstack's VMs booted for real, and a local stack provisioning them.

Only the boot test uses these. It runs as root where systemd-nspawn can run (CI, a developer's root shell);
elsewhere each test is skipped and says why (`make test` prints the reason).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.fake_hyperstack import FakeHyperstack
from tests.conftest import missing_prerequisite
from tests.integration.conftest import FAKE_KEY, LocalStack, start_local_stack
from tests.vm.machine import Machine
from tests.vm.rootfs import cached_rootfs

STAND_IN = "opt/llm-stand-in/server.py"
TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "nsenter": "util-linux",
         "ip": "iproute2", "mount": "mount"}


@pytest.fixture(scope="session")
def rootfs() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the VM boot test runs only as root (systemd-nspawn, an overlay mount, a veth pair): "
                    "`sudo make vm-test`; CI runs it")
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        missing_prerequisite(f"{', '.join(missing)} (for the VM boot test)",
                             f"apt-get install {' '.join(missing)} (`make vm-test` does)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("the VM boot test needs the kernel's overlay file system, which this kernel lacks")
    return cached_rootfs()


class BootedVms:
    """The fake Hyperstack's VMs as machines booting their user_data: a VM's machine is made when it first
    gets its floating IP (the machine's address); ACTIVE boots it (a create: its first boot; a restore: the
    same disk booted again), HIBERNATED powers it off, deleted destroys it and its disk."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.machines: dict[int, Machine] = {}
        self._lock = threading.Lock()

    def floating_ip(self, vm: dict[str, Any]) -> str:
        return self.machine_for(vm).address

    def machine_for(self, vm: dict[str, Any]) -> Machine:
        with self._lock:
            if vm["id"] not in self.machines:
                stand_in = Path(__file__).with_name("stand_in_model.py").read_text()
                self.machines[vm["id"]] = Machine(self.rootfs, vm["user_data"], files={STAND_IN: stand_in})
            return self.machines[vm["id"]]

    def on_active(self, vm: dict[str, Any]) -> None:
        self.machine_for(vm).boot()

    def on_hibernated(self, vm: dict[str, Any]) -> None:
        self.machines[vm["id"]].poweroff()

    def on_deleted(self, vm: dict[str, Any]) -> None:
        with self._lock:
            machine = self.machines.pop(vm["id"], None)
        if machine is not None:
            machine.destroy()

    def destroy_all(self) -> None:
        for vm_id in list(self.machines):
            self.on_deleted({"id": vm_id})


@pytest.fixture(scope="module")
def booted_vms(rootfs: Path) -> Iterator[BootedVms]:
    vms = BootedVms(rootfs)
    yield vms
    vms.destroy_all()


@pytest.fixture(scope="module")
def vm_hyperstack(booted_vms: BootedVms) -> Iterator[FakeHyperstack]:
    fake = FakeHyperstack(api_key=FAKE_KEY, active_after_seconds=0.5, floating_ip=booted_vms.floating_ip,
                          on_active=booted_vms.on_active, on_deleted=booted_vms.on_deleted,
                          on_hibernated=booted_vms.on_hibernated)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def vm_stack(vm_hyperstack: FakeHyperstack) -> Iterator[LocalStack]:
    """`make run` provisioning through the fake Hyperstack, with a boot's time to become healthy."""
    stack = start_local_stack({
        "HYPERSTACK_API_URL": vm_hyperstack.url, "HYPERSTACK_API_KEY": FAKE_KEY, "MOCK_REPLICA": "0",
        "PROVISION_POLL_SECONDS": "1", "PROVISION_TIMEOUT_SECONDS": "60", "MODEL_READY_TIMEOUT_SECONDS": "120",
        "REPLICA_CACHE_SECONDS": "0", "DRAIN_POLL_SECONDS": "1",
    })
    yield stack
    stack.stop()

