"""VM-backed replicas end to end: the local stack runs the real workflow definition under moto's
Step Functions, its task code calls a fake Hyperstack API (owned by these tests) through the
official SDK, and each VM that becomes ACTIVE gets a mock vLLM replica on its port."""

import time
from collections.abc import Iterator

import pytest

from infra.local.fake_hyperstack import FakeHyperstack
from infra.local.mock_vllm import MockVllm
from tests.integration.conftest import LocalStack, free_port, start_local_stack

FAKE_KEY = "fake-hyperstack-key"
MESSAGES = [{"role": "user", "content": "Hello from a provisioned replica"}]


class Cloud:
    """The fake Hyperstack, and the replicas its ACTIVE VMs serve."""

    def __init__(self) -> None:
        self.serve_models = True
        self.replicas: dict[int, MockVllm] = {}
        self.hyperstack = FakeHyperstack(api_key=FAKE_KEY, active_after_seconds=0.5,
                                         on_active=self._vm_active, on_deleted=self._vm_deleted)

    def _vm_active(self, vm: dict) -> None:
        if self.serve_models:
            self.replicas[vm["id"]] = MockVllm(model=vm["model"], port=vm["port"]).start()

    def _vm_deleted(self, vm: dict) -> None:
        replica = self.replicas.pop(vm["id"], None)
        if replica:
            replica.stop()

    def stop(self) -> None:
        for replica in self.replicas.values():
            replica.stop()
        self.hyperstack.stop()


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    running = Cloud()
    running.hyperstack.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def provisioning_stack(cloud: Cloud) -> Iterator[LocalStack]:
    stack = start_local_stack({
        "HYPERSTACK_API_URL": cloud.hyperstack.url, "HYPERSTACK_API_KEY": FAKE_KEY, "MOCK_REPLICA": "0",
        "PROVISION_POLL_SECONDS": "1", "PROVISION_TIMEOUT_SECONDS": "4", "MODEL_READY_TIMEOUT_SECONDS": "4",
        "REPLICA_CACHE_SECONDS": "0",
    })
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def no_vm_left_unowned(cloud: Cloud, provisioning_stack: LocalStack) -> Iterator[None]:
    """After every scenario, Hyperstack holds no VM that no SUCCESS replica owns."""
    cloud.hyperstack.vm_goes_to_error = cloud.hyperstack.never_active = False
    cloud.hyperstack.fail_all_deletes = False
    cloud.serve_models = True
    yield
    owned = {row["vm_id"] for row in replica_rows(provisioning_stack) if row["vm_status"] == "SUCCESS"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and set(cloud.hyperstack.vms) - owned:
        time.sleep(0.2)
    assert set(cloud.hyperstack.vms) - owned == set()


def replica_rows(stack: LocalStack) -> list[dict]:
    return stack.admin.get(stack.url("/v1/tables/replicas")).json()["data"]


def create_vm_replica(stack: LocalStack, model_name: str) -> tuple[int, int]:
    model_id = stack.register_model(model_name)
    port = free_port()
    details = {"name": "it-replica", "environment_name": "default-CANADA-1", "image_name": "Ubuntu 22.04",
               "flavor_name": "n3-RTX-A6000x1", "key_name": "it-key", "port": port,
               "run_command": f"vllm serve {model_name} --port {port}"}
    reply = stack.admin.post(stack.url(f"/v1/models/{model_id}/replicas"),
                             json={"endpoint": "", "create_vm": True, "vm_creation_details": details})
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


def test_vm_replica_is_created_serves_chat_and_is_torn_down(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name)

    ready = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    key = provisioning_stack.new_key()
    answer = provisioning_stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)
    delete_replica(provisioning_stack, replica_id)
    gone = wait_for(provisioning_stack, replica_id, {None})

    assert ready["vm_status"] == "SUCCESS", ready["error_message"]
    assert ready["endpoint"].startswith("http://127.0.0.1:") and ready["vm_id"]
    assert answer.choices[0].message.content
    assert gone is None
    assert ready["vm_id"] not in cloud.hyperstack.vms


def test_vm_in_error_is_deleted_and_the_replica_fails_with_a_reason(provisioning_stack, cloud, model_name):
    cloud.hyperstack.vm_goes_to_error = True

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})

    assert failed["vm_status"] == "FAILED"
    assert "ERROR" in failed["error_message"]


def test_vm_that_never_becomes_active_is_deleted(provisioning_stack, cloud, model_name):
    cloud.hyperstack.never_active = True

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})

    assert failed["vm_status"] == "FAILED"
    assert "ACTIVE" in failed["error_message"]


def test_model_that_never_answers_fails_the_replica_and_deletes_its_vm(provisioning_stack, cloud, model_name):
    cloud.serve_models = False

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})

    assert failed["vm_status"] == "FAILED"
    assert "answer" in failed["error_message"]


def test_hyperstack_500_after_creating_is_retried_without_a_second_vm(provisioning_stack, cloud, model_name):
    cloud.hyperstack.fail_next_creates_after_creating = 1

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    ready = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"}, timeout=60)

    assert ready["vm_status"] == "SUCCESS", ready["error_message"]
    named = [vm for vm in cloud.hyperstack.vms.values() if vm["name"].endswith(f"-r{replica_id}")]
    assert len(named) == 1
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def test_delete_during_provisioning_leaves_no_vm(provisioning_stack, cloud, model_name):
    cloud.hyperstack.never_active = True
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    wait_for(provisioning_stack, replica_id, {"CREATING_VM"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            vm["name"].endswith(f"-r{replica_id}") for vm in cloud.hyperstack.vms.values()):
        time.sleep(0.1)

    delete_replica(provisioning_stack, replica_id)

    assert wait_for(provisioning_stack, replica_id, {None}) is None


def test_failed_teardown_keeps_the_replica_visible_with_the_reason(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    wait_for(provisioning_stack, replica_id, {"SUCCESS"})
    # Refused for good (500s and 409s are retried for minutes): the teardown's first call gets status false.
    cloud.hyperstack.status_false_next = 1

    delete_replica(provisioning_stack, replica_id)
    stuck = wait_for(provisioning_stack, replica_id, {"DELETE_FAILED"}, timeout=90)
    delete_replica(provisioning_stack, replica_id)

    assert "may still exist" in stuck["error_message"]
    assert wait_for(provisioning_stack, replica_id, {None}) is None
