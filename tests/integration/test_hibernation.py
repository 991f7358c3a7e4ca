"""GPU replicas that cost nothing while idle, over the local stack: the idle check hibernates a replica
(and the fake Hyperstack's VM), a wake brings it back serving, and no path leaves a VM that nothing owns."""

from __future__ import annotations

import pytest

from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

MESSAGES = [{"role": "user", "content": "Good morning"}]
UNHIBERNATABLE = "n3-no-hibernation-x1"
pytestmark = pytest.mark.usefixtures("no_vm_left_unowned")


@pytest.fixture
def hibernated(provisioning_stack, cloud, model_name):
    """A replica idle past its hibernate_after_seconds (1 s), hibernated by the idle check: its row."""
    _, replica_id = create_vm_replica(provisioning_stack, model_name, hibernate_after_seconds=1)
    row = wait_for(provisioning_stack, replica_id, {"HIBERNATED", "FAILED"})
    assert row["vm_status"] == "HIBERNATED", row["error_message"]
    yield row
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def test_idle_replica_is_hibernated_and_so_is_its_vm(cloud, hibernated):
    assert cloud.hyperstack.vms[hibernated["vm_id"]]["status"] == "HIBERNATED"
    assert hibernated["vm_id"] not in cloud.replicas  # its port serves nothing


def test_admin_wake_brings_the_replica_back_serving(provisioning_stack, cloud, model_name, hibernated):
    reply = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    again = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    awake = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])

    answer = client.chat.completions.create(model=model_name, messages=MESSAGES)

    assert (reply.status_code, again.status_code) == (202, 409)
    assert awake["vm_status"] == "SUCCESS", awake["error_message"]
    assert awake["wake_seconds"] >= 1 and answer.choices[0].message.content
    assert cloud.hyperstack.restore_calls == [hibernated["vm_id"]]


def test_failed_wake_fails_the_replica_and_leaves_no_vm(provisioning_stack, cloud, hibernated):
    cloud.hyperstack.restore_goes_to_error = 1

    provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    failed = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})

    assert failed["vm_status"] == "FAILED" and "ERROR" in failed["error_message"]
    assert hibernated["vm_id"] not in cloud.hyperstack.vms


def test_delete_while_hibernated_leaves_no_vm(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name, hibernate_after_seconds=1)
    row = wait_for(provisioning_stack, replica_id, {"HIBERNATED", "FAILED"})

    delete_replica(provisioning_stack, replica_id)

    assert wait_for(provisioning_stack, replica_id, {None}) is None
    assert row["vm_id"] not in cloud.hyperstack.vms


def test_flavor_that_cannot_hibernate_stays_serving_with_the_reason(provisioning_stack, cloud, model_name):
    cloud.hyperstack.flavors_without_hibernation = {UNHIBERNATABLE}
    try:
        _, replica_id = create_vm_replica(provisioning_stack, model_name, flavor_name=UNHIBERNATABLE,
                                          hibernate_after_seconds=1)
        wait_for(provisioning_stack, replica_id, {"SUCCESS"})
        refused = wait_for_row(provisioning_stack, replica_id, lambda row: row["error_message"])
    finally:
        cloud.hyperstack.flavors_without_hibernation = set()

    assert refused["vm_status"] == "SUCCESS" and refused["hibernate_after_seconds"] is None
    assert "Not hibernated" in refused["error_message"]
    assert cloud.hyperstack.vms[refused["vm_id"]]["status"] == "ACTIVE"
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def wait_for_row(stack, replica_id: int, condition, timeout: float = 30) -> dict:
    import time

    from tests.integration.conftest import replica_rows

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next((row for row in replica_rows(stack) if row["id"] == replica_id), None)
        if row and condition(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"replica {replica_id} never met the condition")
