"""A replica or its model deleted while its VM is being created, interleaving by interleaving.

Each test plays the create execution's and the teardown's steps in one order the two can run in
(Step Functions runs them concurrently), against the in-memory Hyperstack of the task tests, with
Hyperstack refusing (409) to delete a VM still building. Every one must end with no VM.
"""

from __future__ import annotations

import boto3
import pytest

from chalicelib.core import replica_statuses as statuses
from chalicelib.provisioning import workflow
from chalicelib.provisioning.errors import HyperstackRetryable, ReplicaGone
from chalicelib.store.tables import LlmModel, Replica
from tests.unit.conftest import started_executions
from tests.unit.provisioning.test_provisioning_tasks import (
    EXECUTION_ARN,
    FakeHyperstack,
    being_deleted,
    new_replica,
    row,
    run,
    status_of,
)


@pytest.fixture
def hyperstack() -> FakeHyperstack:
    fake = FakeHyperstack()
    fake.refuse_deleting_building = True
    return fake


@pytest.fixture
def model_id(api) -> int:
    return api.create_model()


def create_execution(replica_id: int) -> str:
    return workflow.create_execution_of(replica_id, EXECUTION_ARN)


def create_execution_ends(replica_id: int) -> None:
    """The create execution ends (here by a stop; in the workflow by its own compensation)."""
    boto3.client("stepfunctions", region_name="us-east-1").stop_execution(executionArn=create_execution(replica_id))


def build_finishes(hyperstack: FakeHyperstack) -> None:
    for vm_id in list(hyperstack.vms):
        hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")


def test_teardown_waits_while_the_create_execution_runs(api, model_id):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)

    assert run("create_ended", replica_id, polls=0) == {"ended": False, "polls": 1}

    create_execution_ends(replica_id)
    assert run("create_ended", replica_id, polls=1) == {"ended": True, "polls": 2}


def test_teardown_of_a_replica_whose_create_execution_never_started_does_not_wait(api, model_id):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)
    other_machine = EXECUTION_ARN.replace(":provision-test:", ":another-machine:")

    assert run("create_ended", replica_id, execution_arn=other_machine)["ended"] is True


def test_stop_create_stops_a_create_execution_that_did_not_end_in_time(api, model_id):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)

    run("stop_create", replica_id)

    assert run("create_ended", replica_id)["ended"] is True


def test_delete_during_the_create_call_with_409s_on_the_building_vm_leaves_no_vm(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.on_create = lambda: being_deleted(api, replica_id)

    # The create call returns after the replica went DELETING: its own delete is refused (409, building).
    with pytest.raises(ReplicaGone):
        run("create_vm", replica_id, hyperstack)
    assert len(hyperstack.vms) == 1
    assert run("create_ended", replica_id)["ended"] is False  # so the teardown does not look yet

    # Compensation retries the refused delete until the build is over.
    with pytest.raises(HyperstackRetryable):
        run("delete_vm", replica_id, hyperstack, vm_id=None)
    build_finishes(hyperstack)
    run("delete_vm", replica_id, hyperstack, vm_id=None)
    create_execution_ends(replica_id)

    assert run("create_ended", replica_id)["ended"] is True
    run("teardown", replica_id, hyperstack)
    assert hyperstack.vms == {} and row(replica_id) is None


def test_create_call_returning_after_the_teardown_looked_deletes_its_own_vm(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.refuse_deleting_building = False

    def torn_down_during_the_call() -> None:
        being_deleted(api, replica_id)
        hyperstack.vms, made = {}, hyperstack.vms  # the teardown's lookup does not see the VM yet
        run("teardown", replica_id, hyperstack)
        hyperstack.vms = made

    hyperstack.on_create = torn_down_during_the_call

    with pytest.raises(ReplicaGone):
        run("create_vm", replica_id, hyperstack)

    assert hyperstack.vms == {} and row(replica_id) is None


def test_teardown_retries_a_delete_refused_while_the_vm_builds(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    vm_id = run("create_vm", replica_id, hyperstack)["vm_id"]
    being_deleted(api, replica_id)

    with pytest.raises(HyperstackRetryable):
        run("teardown", replica_id, hyperstack)
    assert status_of(replica_id) == statuses.DELETING and list(hyperstack.vms) == [vm_id]

    build_finishes(hyperstack)
    run("teardown", replica_id, hyperstack)

    assert hyperstack.vms == {} and row(replica_id) is None


@pytest.mark.parametrize("status", [statuses.DELETING, statuses.DELETE_FAILED])
def test_delete_of_a_replica_being_or_failed_deleted_starts_the_teardown_again(api, model_id, status):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)
    Replica(replica_id).update(actions=[Replica.vm_status.set(status)])

    reply = api.delete(f"/v1/replicas/{replica_id}")

    assert reply.status == 204
    assert status_of(replica_id) == statuses.DELETING
    assert started_executions("delete") == 2


def test_model_delete_during_provisioning_tears_its_replica_down_and_leaves_no_vm(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.on_create = lambda: api.delete(f"/v1/models/{model_id}")

    with pytest.raises(ReplicaGone):
        run("create_vm", replica_id, hyperstack)
    build_finishes(hyperstack)
    run("delete_vm", replica_id, hyperstack, vm_id=None)
    create_execution_ends(replica_id)
    assert run("create_ended", replica_id)["ended"] is True
    run("teardown", replica_id, hyperstack)

    assert hyperstack.vms == {} and row(replica_id) is None
    assert list(LlmModel.scan()) == []


def test_model_delete_finds_a_replica_its_index_does_not_show_yet(api, model_id, monkeypatch):
    replica_id = new_replica(api, model_id)
    monkeypatch.setattr(Replica.by_model, "query", lambda *args, **kwargs: iter(()))  # eventually consistent

    assert api.delete(f"/v1/models/{model_id}").status == 204

    assert status_of(replica_id) == statuses.DELETING
    assert started_executions("delete") == 1


def test_no_replica_can_be_added_to_a_model_being_deleted(api, model_id):
    name = next(iter(LlmModel.scan())).name
    LlmModel(name).update(actions=[LlmModel.deleting.set(True)])

    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.9:8000/v1"})

    assert reply.status == 404
    assert list(Replica.scan()) == []
