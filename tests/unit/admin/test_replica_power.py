"""POST /v1/replicas/{id}/hibernate and /wake refused: each 409 names the condition that failed.

(The workflows these routes start are tested in tests/unit/provisioning/test_hibernation.py; here the replica's
row is put in the status a refusal is about.)
"""

import time

import boto3
import pytest

from tests.conftest import TEST_HIBERNATE_ARN, TEST_WAKE_ARN
from tests.unit.conftest import VM_DETAILS


@pytest.fixture
def state_machines(aws):
    """The hibernate and wake state machines, in moto's Step Functions (their executions stay RUNNING)."""
    client = boto3.client("stepfunctions", region_name="us-east-1")
    for arn in (TEST_HIBERNATE_ARN, TEST_WAKE_ARN):
        client.create_state_machine(name=arn.rsplit(":", 1)[1], roleArn="arn:aws:iam::123456789012:role/test",
                                    definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}')
    return client


def provisioned(api, model_id, vm_status):
    """A provisioned replica, its row moved to `vm_status` as its workflows would (hibernated_at with it)."""
    from chalicelib.store.tables import Replica

    reply = api.post(f"/v1/models/{model_id}/replicas",
                     {"endpoint": "", "create_vm": True, "vm_creation_details": VM_DETAILS})
    assert reply.status == 201, reply.json
    replica_id = reply.json["replica_id"]
    actions = [Replica.vm_status.set(vm_status), Replica.vm_id.set(7), Replica.endpoint.set("https://10.0.0.7/v1")]
    if vm_status in ("HIBERNATING", "HIBERNATED"):
        actions.append(Replica.hibernated_at.set(int(time.time())))
    Replica(replica_id).update(actions=actions)
    return replica_id


def test_hibernating_a_replica_registered_by_url_says_it_has_no_vm(api, model_id):
    replica_id = api.create_replica(model_id)  # SUCCESS, so its status is not the reason

    reply = api.post(f"/v1/replicas/{replica_id}/hibernate", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} was registered by URL, with no VM: only a provisioned "
                                   "replica (create_vm) can hibernate."}


@pytest.mark.parametrize("vm_status", ["PENDING", "BOOTING", "HIBERNATED", "WAKING", "FAILED"])
def test_hibernating_a_provisioned_replica_not_serving_names_its_status(api, model_id, vm_status):
    replica_id = provisioned(api, model_id, vm_status)

    reply = api.post(f"/v1/replicas/{replica_id}/hibernate", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} is {vm_status}, not SUCCESS: only a serving replica can "
                                   "hibernate."}


def test_waking_a_replica_registered_by_url_says_it_has_no_vm(api, model_id):
    replica_id = api.create_replica(model_id)

    reply = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} was registered by URL, with no VM: only a provisioned "
                                   "replica (create_vm) can wake."}


@pytest.mark.parametrize("vm_status", ["SUCCESS", "PENDING", "FAILED"])
def test_waking_a_provisioned_replica_not_hibernated_names_its_status_and_the_ones_needed(api, model_id, vm_status):
    replica_id = provisioned(api, model_id, vm_status)

    reply = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} is {vm_status}, not HIBERNATING or HIBERNATED: only a "
                                   "hibernated replica can wake."}


def test_waking_a_replica_that_is_waking_says_it_is_already_waking(api, model_id):
    replica_id = provisioned(api, model_id, "WAKING")

    reply = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} is already waking (WAKING)."}


def test_second_wake_says_a_wake_is_running_and_names_its_execution(api, model_id, state_machines):
    replica_id = provisioned(api, model_id, "HIBERNATED")
    assert api.post(f"/v1/replicas/{replica_id}/wake", {}).status == 202
    (started,) = state_machines.list_executions(stateMachineArn=TEST_WAKE_ARN)["executions"]

    reply = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert reply.status == 409
    assert reply.json == {"error": f"Replica {replica_id} is already waking: its wake execution {started['name']} "
                                   "is RUNNING."}
