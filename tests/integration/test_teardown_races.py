"""Deleting a replica, or its model, while its VM is being created, over the local stack: the real
workflow under moto's Step Functions against the fake Hyperstack, with the create call's answer
late (the VM already exists) and 409 to deleting a VM still building. Each ends with no VM."""

import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Cloud, LocalStack, replica_rows
from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

# After every scenario, Hyperstack holds no VM that no SUCCESS replica owns (the fixture, in conftest).
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("no_vm_left_unowned")]
SLOW_CREATE_SECONDS = 3
BUILD_SECONDS = 5  # longer than the create call: its first deletes are refused with 409


@pytest.fixture(autouse=True)
def slow_builds(cloud: Cloud) -> Iterator[None]:
    fake = cloud.hyperstack
    fake.slow_create_seconds, fake.refuse_deleting_building = SLOW_CREATE_SECONDS, True
    fake.fleet.active_after_seconds = BUILD_SECONDS
    yield
    fake.slow_create_seconds, fake.refuse_deleting_building = 0.0, False
    fake.fleet.active_after_seconds = 0.5


def vm_of(cloud: Cloud, replica_id: int, timeout: float = 20) -> int:
    """The replica's VM, once Hyperstack made it (its create call is still in flight then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        made = [vm_id for vm_id, vm in cloud.hyperstack.vms.items() if vm["name"].endswith(f"-r{replica_id}")]
        if made:
            return made[0]
        time.sleep(0.05)
    raise AssertionError(f"no VM was made for replica {replica_id}")


def no_vms_of(cloud: Cloud, replica_id: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(vm["name"].endswith(f"-r{replica_id}") for vm in cloud.hyperstack.vms.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"replica {replica_id} still has VMs: {cloud.hyperstack.vms}")


def test_replica_deleted_during_a_slow_create_with_409s_on_building_vms_leaves_no_vm(
        provisioning_stack: LocalStack, cloud: Cloud, model_name: str) -> None:
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    vm_of(cloud, replica_id)

    delete_replica(provisioning_stack, replica_id)
    delete_replica(provisioning_stack, replica_id)  # again while DELETING: a second teardown, as harmless

    assert wait_for(provisioning_stack, replica_id, {None}, timeout=120) is None
    no_vms_of(cloud, replica_id)


def test_model_deleted_during_provisioning_orphans_no_row_and_no_vm(
        provisioning_stack: LocalStack, cloud: Cloud, model_name: str) -> None:
    model_id, replica_id = create_vm_replica(provisioning_stack, model_name)
    vm_of(cloud, replica_id)

    reply = provisioning_stack.admin.delete(provisioning_stack.url(f"/v1/models/{model_id}"))

    assert reply.status_code == 204
    assert wait_for(provisioning_stack, replica_id, {None}, timeout=120) is None
    no_vms_of(cloud, replica_id)
    assert all(row["model_id"] != model_id for row in replica_rows(provisioning_stack))


def test_delete_of_a_replica_whose_teardown_failed_retries_it(
        provisioning_stack: LocalStack, cloud: Cloud, model_name: str) -> None:
    cloud.hyperstack.slow_create_seconds, cloud.hyperstack.fleet.active_after_seconds = 0, 0.5
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    ready = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    assert ready["vm_status"] == "SUCCESS", ready["error_message"]
    cloud.hyperstack.status_false_next_deletes = 1  # the teardown's first call is refused for good

    delete_replica(provisioning_stack, replica_id)
    failed = wait_for(provisioning_stack, replica_id, {"DELETE_FAILED", None})
    assert failed is not None and failed["vm_status"] == "DELETE_FAILED"
    assert ready["vm_id"] in cloud.hyperstack.vms

    delete_replica(provisioning_stack, replica_id)

    assert wait_for(provisioning_stack, replica_id, {None}) is None
    no_vms_of(cloud, replica_id)
