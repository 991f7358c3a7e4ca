"""POST /v1/replicas/{id}/retry: a FAILED provisioned replica provisioned again, under its id (a way out without a
DELETE), through the create workflow's real steps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.core import replica_statuses as statuses
from chalicelib.provisioning import workflow
from chalicelib.provisioning.errors import HyperstackRetryable
from chalicelib.store import replica_secrets
from chalicelib.store.tables import Bookkeeping, Replica
from tests.conftest import TEST_STATE_MACHINE_ARN
from tests.unit.provisioning.test_provisioning_tasks import (
    PERMANENT,
    FakeHyperstack,
    catch,
    new_replica,
    run,
)

VM_ERROR = {"Error": "VmError", "Cause": "Hyperstack reported the VM in status ERROR"}


@pytest.fixture
def hyperstack() -> FakeHyperstack:
    return FakeHyperstack()


def failed(api, model_id: int, hyperstack: FakeHyperstack, vm_deleted: bool = True, **details: Any) -> int:
    """A replica whose VM went to ERROR: compensation deletes the VM (or fails to) and marks it FAILED."""
    replica_id = new_replica(api, model_id, **details)
    run("start_create", replica_id)
    vm_id = run("create_vm", replica_id, hyperstack)["vm_id"]
    if not vm_deleted:
        hyperstack.fail["delete_vm"] = PERMANENT
    try:
        run("delete_vm", replica_id, hyperstack, vm_id=vm_id)
        cleanup = {}
    except Exception as error:  # noqa: BLE001 - the Catch of the compensation's delete
        cleanup = catch(error)
    run("mark_failed", replica_id, error=VM_ERROR, cleanup=cleanup)
    assert Replica.get(replica_id).vm_status == statuses.FAILED
    return replica_id


def retry(api, replica_id: int, body: Any = None) -> Any:
    return api.post(f"/v1/replicas/{replica_id}/retry", body if body is not None else {})


def executions() -> list[str]:
    client = boto3.client("stepfunctions", region_name="us-east-1")
    return [execution["name"] for execution in client.list_executions(stateMachineArn=TEST_STATE_MACHINE_ARN)[
        "executions"]]


def test_a_retried_replica_is_pending_again_without_what_its_failed_attempt_left(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack)

    reply = retry(api, replica_id)

    assert (reply.status, reply.json) == (202, {"message": "Provisioning started"})
    row = Replica.get(replica_id, consistent_read=True)
    assert (row.vm_status, row.vm_id, row.error_message, row.api_key, row.tls_fingerprint) == (
        statuses.PENDING, None, None, None, None)
    assert row.retries == 1 and f"replica-{replica_id}-create-retry-1" in executions()
    assert row.execution_arn.endswith(f":replica-{replica_id}-create-retry-1")


def test_a_retried_replica_gets_a_new_vm_with_new_credentials(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack)
    first_vm = hyperstack.called("create_vm")
    assert retry(api, replica_id).status == 202

    run("start_create", replica_id)
    vm_id = run("create_vm", replica_id, hyperstack)["vm_id"]

    assert hyperstack.called("create_vm") == first_vm * 2 and list(hyperstack.vms) == [vm_id]
    row = Replica.get(replica_id, consistent_read=True)
    assert (row.vm_status, row.vm_id) == (statuses.CREATING_VM, vm_id) and row.tls_fingerprint


def test_a_vm_its_failed_attempt_could_not_delete_is_deleted_before_a_new_one_is_made(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack, vm_deleted=False)
    (leftover,) = hyperstack.vms
    # Made a minute before the retry, as a failed attempt's VM is (its first check comes a poll later).
    hyperstack.vms[leftover] = replace(hyperstack.vms[leftover], created_at=datetime.now(UTC) - timedelta(minutes=1))
    assert retry(api, replica_id).status == 202
    run("start_create", replica_id)

    with pytest.raises(HyperstackRetryable, match=f"VM {leftover} of the attempt before the retry"):
        run("create_vm", replica_id, hyperstack)
    vm_id = run("create_vm", replica_id, hyperstack)["vm_id"]  # Step Functions' retry of the step

    assert leftover not in hyperstack.vms and list(hyperstack.vms) == [vm_id]
    assert run("create_vm", replica_id, hyperstack)["vm_id"] == vm_id  # delivered again: the same VM


def test_secrets_must_be_given_again_and_reach_the_retried_create(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack, secrets={"HF_TOKEN": "hf_first"})

    refused = retry(api, replica_id)
    assert refused.status == 400 and "HF_TOKEN" in str(refused.json["errors"]["secrets"])
    assert Replica.get(replica_id, consistent_read=True).vm_status == statuses.FAILED

    assert retry(api, replica_id, {"secrets": {"HF_TOKEN": "hf_second"}}).status == 202
    run("start_create", replica_id)
    run("create_vm", replica_id, hyperstack)
    assert "hf_second" in hyperstack.specs[-1].user_data and "hf_first" not in hyperstack.specs[-1].user_data
    assert Bookkeeping.count(replica_secrets.key(replica_id)) == 0, "gone once the VM holds them"


@pytest.mark.parametrize("status", [statuses.SUCCESS, statuses.PENDING, statuses.DELETING, statuses.HIBERNATED])
def test_only_a_failed_replica_is_retried(api, model_id, hyperstack, status):
    replica_id = failed(api, model_id, hyperstack)
    Replica(replica_id).update(actions=[Replica.vm_status.set(status)])

    reply = retry(api, replica_id)

    assert reply.status == 409 and f"is {status}, not FAILED" in reply.json["error"]
    assert Replica.get(replica_id, consistent_read=True).vm_status == status


def test_a_replica_registered_by_url_or_made_by_the_scaler_is_not_retried(api, model_id, hyperstack):
    by_url = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.1:8000/v1"}).json["replica_id"]
    scaled = failed(api, model_id, hyperstack)
    Replica(scaled).update(actions=[Replica.scale_slot.set(1)])

    assert "registered by URL" in retry(api, by_url).json["error"]
    assert "scaler" in retry(api, scaled).json["error"]
    assert retry(api, 999).status == 404


def test_a_second_retry_of_one_failure_is_refused(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack)
    assert retry(api, replica_id).status == 202

    again = retry(api, replica_id)

    assert again.status == 409 and "PENDING" in again.json["error"]
    assert [name for name in executions() if "retry" in name] == [f"replica-{replica_id}-create-retry-1"]


def test_a_retry_that_cannot_start_leaves_the_replica_failed_with_the_reason(api, model_id, hyperstack, monkeypatch):
    replica_id = failed(api, model_id, hyperstack, secrets={"HF_TOKEN": "hf"})

    def refused(*_: Any, **__: Any) -> str:
        raise RuntimeError("Step Functions is unavailable")

    monkeypatch.setattr(workflow, "start", refused)
    reply = retry(api, replica_id, {"secrets": {"HF_TOKEN": "hf"}})

    assert reply.status == 503 and "stays FAILED" in reply.json["error"]
    row = Replica.get(replica_id, consistent_read=True)
    assert row.vm_status == statuses.FAILED and "could not start" in row.error_message
    assert Bookkeeping.count(replica_secrets.key(replica_id)) == 0


def test_a_bad_body_is_refused_naming_the_field(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack)

    reply = retry(api, replica_id, {"secrets": {"not a name": "x"}, "extra": 1})

    assert reply.status == 400 and reply.json["errors"]
    assert Replica.get(replica_id, consistent_read=True).vm_status == statuses.FAILED


def test_a_teardown_waits_for_the_retried_attempts_create_execution(api, model_id, hyperstack):
    replica_id = failed(api, model_id, hyperstack)
    assert retry(api, replica_id).status == 202
    assert api.delete(f"/v1/replicas/{replica_id}").status == 204
    arn = Replica.get(replica_id, consistent_read=True).execution_arn

    assert run("create_ended", replica_id, polls=0)["ended"] is False  # the retry's execution runs
    boto3.client("stepfunctions", region_name="us-east-1").stop_execution(executionArn=arn)
    assert run("create_ended", replica_id, polls=1)["ended"] is True
