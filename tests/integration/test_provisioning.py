"""VM-backed replicas end to end: the local stack runs the real workflow definition under moto's
Step Functions, its task code calls a fake Hyperstack API (owned by these tests) through the
official SDK, and each VM that becomes ACTIVE gets a mock vLLM replica on its port."""

import time
from urllib.parse import urlsplit

import pytest

from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

MESSAGES = [{"role": "user", "content": "Hello from a provisioned replica"}]
# After every scenario, Hyperstack holds no VM that no SUCCESS replica owns (the fixture, in conftest).
pytestmark = pytest.mark.usefixtures("no_vm_left_unowned")


def test_vm_replica_is_created_serves_chat_and_is_torn_down(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name)

    ready = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    key = provisioning_stack.new_key()
    answer = provisioning_stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)
    delete_replica(provisioning_stack, replica_id)
    gone = wait_for(provisioning_stack, replica_id, {None})

    assert ready["vm_status"] == "SUCCESS", ready["error_message"]
    assert ready["endpoint"].startswith("https://127.0.0.1:") and ready["vm_id"]
    assert answer.choices[0].message.content
    assert gone is None
    assert ready["vm_id"] not in cloud.hyperstack.vms


def test_vm_in_error_is_deleted_and_the_replica_fails_with_a_reason(provisioning_stack, cloud, model_name):
    cloud.hyperstack.vm_goes_to_error = True

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})

    assert failed["vm_status"] == "FAILED"
    assert "ERROR" in failed["error_message"]


def test_a_failed_replica_retried_once_its_cause_is_gone_serves_under_its_id(provisioning_stack, cloud, model_name):
    cloud.hyperstack.vm_goes_to_error = True
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})
    assert failed["vm_status"] == "FAILED"
    cloud.hyperstack.vm_goes_to_error = False  # the cause fixed (capacity back, say)

    reply = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{replica_id}/retry"), json={})
    ready = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    key = provisioning_stack.new_key()
    answer = provisioning_stack.client(key["api_key"]).chat.completions.create(model=model_name, messages=MESSAGES)

    assert reply.status_code == 202, reply.text
    assert ready["vm_status"] == "SUCCESS" and ready["error_message"] is None, ready["error_message"]
    assert ready["vm_id"] != failed["vm_id"] and failed["vm_id"] not in cloud.hyperstack.vms
    assert answer.choices[0].message.content
    delete_replica(provisioning_stack, replica_id)
    assert wait_for(provisioning_stack, replica_id, {None}) is None


def test_vm_whose_port_is_taken_on_this_machine_fails_the_replica_at_once(provisioning_stack, cloud, model_name):
    taken = urlsplit(provisioning_stack.base_url).port  # the API's own: what a demo on port 8000 met

    _, replica_id = create_vm_replica(provisioning_stack, model_name, port=taken)
    started = time.monotonic()
    failed = wait_for(provisioning_stack, replica_id, {"FAILED", "SUCCESS"})

    assert failed["vm_status"] == "FAILED" and "ERROR" in failed["error_message"]
    assert time.monotonic() - started < 30, "failed at a poll, not after the model-ready timeout"


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
    cloud.hyperstack.status_false_next_deletes = 1

    delete_replica(provisioning_stack, replica_id)
    stuck = wait_for(provisioning_stack, replica_id, {"DELETE_FAILED"}, timeout=90)
    delete_replica(provisioning_stack, replica_id)

    assert "may still exist" in stuck["error_message"]
    assert wait_for(provisioning_stack, replica_id, {None}) is None


def test_a_failed_teardown_is_retried_by_the_idle_check_without_a_second_delete(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    vm_id = wait_for(provisioning_stack, replica_id, {"SUCCESS"})["vm_id"]
    cloud.hyperstack.status_false_next_deletes = 1

    delete_replica(provisioning_stack, replica_id)
    stuck = wait_for(provisioning_stack, replica_id, {"DELETE_FAILED"}, timeout=90)
    assert vm_id in cloud.hyperstack.vms, "the failed teardown left the VM"

    # TEARDOWN_RETRY_SECONDS (10 s under the local stack) after it started, the idle check tries again.
    assert stuck is not None and wait_for(provisioning_stack, replica_id, {None}, timeout=60) is None
    assert vm_id not in cloud.hyperstack.vms
