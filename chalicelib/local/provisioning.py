"""Provisioning on one machine: the real workflow under the embedded emulator's Step Functions,
its task code in this process, and (without a HYPERSTACK_API_KEY) a fake Hyperstack whose
ACTIVE VMs are served by mock vLLM replicas on the ports they were asked for."""

from __future__ import annotations

import os
from typing import Any

# Seconds, not the production minutes: a newcomer watches a replica reach SUCCESS.
LOCAL_DEFAULTS = {"PROVISION_POLL_SECONDS": "1", "PROVISION_TIMEOUT_SECONDS": "120",
                  "MODEL_READY_TIMEOUT_SECONDS": "300"}


def start_local_provisioning(emulator_url: str) -> list[str]:
    """Wire provisioning into the local stack; returns what to tell the developer."""
    from chalicelib.local.workflows import setup_local_workflow
    from chalicelib.provisioning.tasks import handle

    lines = []
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not os.environ.get("HYPERSTACK_API_KEY"):
        fake = _start_fake_hyperstack()
        os.environ["HYPERSTACK_API_URL"], os.environ["HYPERSTACK_API_KEY"] = fake.url, fake.api_key
        lines.append(f"Hyperstack: fake API at {fake.url} (set HYPERSTACK_API_KEY to use the real one)")
    else:
        lines.append(f"Hyperstack: {os.environ.get('HYPERSTACK_API_URL') or 'the SDK default host'} (real VMs!)")
    os.environ["PROVISION_STATE_MACHINE_ARN"] = setup_local_workflow(emulator_url, handle)
    lines.append("Provisioning workflow: infra/provisioning.asl.json under the embedded Step Functions")
    return lines


def _start_fake_hyperstack() -> Any:
    from chalicelib.local.fake_hyperstack import FakeHyperstack
    from chalicelib.local.mock_vllm import MockVllm

    replicas: dict[int, MockVllm] = {}

    def on_active(vm: dict[str, Any]) -> None:
        if vm.get("port"):
            replicas[vm["id"]] = MockVllm(model=vm["model"], port=vm["port"], pace_seconds=0.02).start()

    def on_deleted(vm: dict[str, Any]) -> None:
        replica = replicas.pop(vm["id"], None)
        if replica:
            replica.stop()

    return FakeHyperstack(on_active=on_active, on_deleted=on_deleted).start()
