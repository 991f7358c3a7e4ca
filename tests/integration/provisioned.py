"""The admin calls that create, watch and delete a provisioned replica in the local stack's tests.
The fake Hyperstack (`Cloud`) and the provisioning stack are fixtures in conftest.py."""

from __future__ import annotations

import time

from tests.integration.conftest import LocalStack, free_port, replica_rows


def create_vm_replica(stack: LocalStack, model_name: str, flavor_name: str = "n3-RTX-A6000x1",
                      port: int | None = None, **fields: object) -> tuple[int, int]:
    """A provisioned replica of a new model (`fields`: more of the request body, hibernate_after_seconds say),
    its VM serving `port` (a free one by default)."""
    model_id = stack.register_model(model_name)
    port = port or free_port()
    details = {"name": "it-replica", "environment_name": "default-CANADA-1", "image_name": "Ubuntu 22.04",
               "flavor_name": flavor_name, "key_name": "it-key", "port": port,
               "run_command": f"vllm serve {model_name} --port {port}"}
    reply = stack.admin.post(stack.url(f"/v1/models/{model_id}/replicas"),
                             json={"endpoint": "", "create_vm": True, "vm_creation_details": details, **fields})
    assert reply.status_code == 201, reply.text
    return model_id, reply.json()["replica_id"]


def wait_for(stack: LocalStack, replica_id: int, statuses: set[str], timeout: float = 40) -> dict | None:
    """The replica's row once its status is one of `statuses` (None: the row is gone)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        row = next((row for row in replica_rows(stack) if row["id"] == replica_id), None)
        status = row["vm_status"] if row else None
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in statuses:
            return row
        time.sleep(0.2)
    raise AssertionError(f"replica {replica_id} went through {seen}, never reached {statuses}")


def delete_replica(stack: LocalStack, replica_id: int) -> None:
    assert stack.admin.delete(stack.url(f"/v1/replicas/{replica_id}")).status_code == 204
