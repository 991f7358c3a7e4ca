"""The provisioning workflow's Task steps, one at a time, as Step Functions invokes them.

Hyperstack is an in-memory fake handed to `tasks.handle`; the replica rows are in DynamoDB emulated
by moto. A GPU VM costs dollars an hour, so the tests that matter most are those that end with no VM.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core import replica_statuses as statuses
from chalicelib.hyperstack.client import HyperstackError, Vm, VmSpec
from chalicelib.provisioning import tasks
from chalicelib.provisioning.errors import HyperstackRetryable, ProvisioningFailed, ReplicaGone
from chalicelib.provisioning.replica_tls import new_credentials
from chalicelib.store import replica_credentials
from chalicelib.store.tables import Replica, ReplicaSecurityRule
from tests.conftest import TEST_STATE_MACHINE_ARN
from tests.unit.conftest import VM_DETAILS
from tests.unit.replica_server import TlsReplicaServer

DEFINITION = Path(__file__).resolve().parents[3] / "infra" / "provisioning.asl.json"
RETRYABLE = HyperstackError("Hyperstack answered 503", retryable=True, status=503)
PERMANENT = HyperstackError("Hyperstack answered 422", retryable=False, status=422)
BUSY = HyperstackError("Hyperstack answered 409: the VM is busy", retryable=False, status=409)
# The ARN a Task state passes as $$.Execution.Id: a teardown finds the create execution beside it.
# The credentials each replica of these tests gets, so that a server can be started with them beforehand.
CREDENTIALS = new_credentials("test-replica")
EXECUTION_ARN = TEST_STATE_MACHINE_ARN.replace(":stateMachine:", ":execution:") + ":replica-test-delete"


class FakeHyperstack:
    """The `HyperstackClient` methods the steps call, over a dict of VMs; records every call.

    `fail[method] = error` makes that method's next call raise; `create_then_fail` makes the next
    create make its VM and then raise (Hyperstack's answer lost after it acted);
    `refuse_deleting_building` answers 409 to deleting a VM still CREATING, as Hyperstack does.
    """

    def __init__(self) -> None:
        self.vms: dict[int, Vm] = {}
        self.specs: list[VmSpec] = []
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, HyperstackError] = {}
        self.create_then_fail: HyperstackError | None = None
        self.on_create: Callable[[], None] = lambda: None
        self.refuse_deleting_building = False
        self._ids = itertools.count(7001)

    def find_vm_by_name(self, name: str) -> Vm | None:
        self._called("find_vm_by_name", name)
        return next((vm for vm in self.vms.values() if vm.name == name), None)

    def find_vms_by_name(self, name: str) -> list[Vm]:
        self._called("find_vms_by_name", name)
        return [vm for vm in self.vms.values() if vm.name == name]

    def create_vm(self, spec: VmSpec) -> Vm:
        self._called("create_vm", spec.name)
        vm = self.add_vm(spec.name)
        self.specs.append(spec)
        self.on_create()
        if self.create_then_fail is not None:
            error, self.create_then_fail = self.create_then_fail, None
            raise error
        return vm

    def get_vm(self, vm_id: int) -> Vm | None:
        self._called("get_vm", vm_id)
        return self.vms.get(int(vm_id))

    def delete_vm(self, vm_id: int) -> None:
        self._called("delete_vm", vm_id)
        vm = self.vms.get(int(vm_id))
        if self.refuse_deleting_building and vm is not None and vm.status == "CREATING":
            raise BUSY
        self.vms.pop(int(vm_id), None)  # like the client: a VM already gone counts as deleted

    def add_vm(self, name: str, status: str = "CREATING", floating_ip: str | None = None) -> Vm:
        vm = Vm(id=next(self._ids), name=name, status=status, floating_ip=floating_ip, fixed_ip=None,
                created_at=datetime.now(UTC))
        self.vms[vm.id] = vm
        return vm

    def set_vm(self, vm_id: int, status: str, floating_ip: str | None = None) -> None:
        self.vms[vm_id] = replace(self.vms[vm_id], status=status, floating_ip=floating_ip)

    def called(self, method: str) -> list[Any]:
        return [argument for name, argument in self.calls if name == method]

    def _called(self, method: str, argument: Any) -> None:
        self.calls.append((method, argument))
        error = self.fail.pop(method, None)
        if error is not None:
            raise error


def new_replica(api, model_id: int, **details: Any) -> int:
    body = {"endpoint": "", "create_vm": True, "vm_creation_details": {**VM_DETAILS, **details}}
    reply = api.post(f"/v1/models/{model_id}/replicas", body)
    assert reply.status == 201, reply.json
    return reply.json["replica_id"]


def run(step: str, replica_id: int, hyperstack: FakeHyperstack | None = None, **fields: Any) -> dict[str, Any]:
    """One Task state's invocation; without a fake, a step that asks for Hyperstack fails the test."""

    def no_hyperstack() -> Any:
        raise AssertionError(f"step {step} asked for a Hyperstack client")

    event = {"step": step, "replica_id": replica_id, "execution_arn": EXECUTION_ARN, **fields}
    return tasks.handle(event, hyperstack=(lambda: hyperstack) if hyperstack else no_hyperstack)


def row(replica_id: int) -> Replica | None:
    try:
        return Replica.get(replica_id, consistent_read=True)
    except Replica.DoesNotExist:
        return None


def status_of(replica_id: int) -> str | None:
    replica = row(replica_id)
    return replica.vm_status if replica else None


def creating(api, model_id: int, hyperstack: FakeHyperstack, **details: Any) -> tuple[int, int]:
    """A replica whose VM was asked for: (replica id, VM id)."""
    replica_id = new_replica(api, model_id, **details)
    run("start_create", replica_id)
    replica_credentials.keep_first(replica_id, CREDENTIALS.api_key, CREDENTIALS.certificate_pem,
                                   CREDENTIALS.private_key_pem)
    return replica_id, run("create_vm", replica_id, hyperstack)["vm_id"]


def booting(api, model_id: int, hyperstack: FakeHyperstack, **details: Any) -> tuple[int, int]:
    replica_id, vm_id = creating(api, model_id, hyperstack, **details)
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")
    run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)
    return replica_id, vm_id


def being_deleted(api, replica_id: int) -> None:
    reply = api.delete(f"/v1/replicas/{replica_id}")
    assert reply.status == 204, reply.json
    assert status_of(replica_id) == statuses.DELETING


def catch(error: Exception) -> dict[str, str]:
    """What a Catch rule puts in the state: the Lambda's error type and its JSON error as Cause."""
    return {"Error": type(error).__name__,
            "Cause": json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)})}


# Mark creating VM


def test_start_create_moves_a_pending_replica_to_creating_vm(api, model_id):
    replica_id = new_replica(api, model_id)

    run("start_create", replica_id)

    assert status_of(replica_id) == statuses.CREATING_VM


def test_start_create_of_a_replica_being_deleted_raises_replica_gone(api, model_id):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)

    with pytest.raises(ReplicaGone):
        run("start_create", replica_id)
    assert status_of(replica_id) == statuses.DELETING


# Create VM


def test_create_vm_creates_one_vm_named_for_the_replica_and_records_its_id(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)

    result = run("create_vm", replica_id, hyperstack)

    (vm,) = hyperstack.vms.values()
    assert result == {"vm_id": vm.id}
    assert vm.name == tasks.vm_name(replica_id)
    assert row(replica_id).vm_id == vm.id and status_of(replica_id) == statuses.CREATING_VM


def test_create_vm_asks_for_the_replicas_flavor_image_port_and_firewall_rules(api, model_id, hyperstack):
    creating(api, model_id, hyperstack, port=8123,
             security_rules=[{"port_range_min": 8123, "port_range_max": 8123, "remote_ip_prefix": "10.1.0.0/16"}])

    (spec,) = hyperstack.specs
    assert (spec.flavor_name, spec.image_name, spec.environment_name, spec.key_name) == (
        VM_DETAILS["flavor_name"], VM_DETAILS["image_name"], VM_DETAILS["environment_name"], VM_DETAILS["key_name"])
    assert "export PORT=8123" in spec.user_data
    assert [(r["port_range_min"], r["remote_ip_prefix"]) for r in spec.security_rules] == [(8123, "10.1.0.0/16")]


def test_create_vm_adopts_an_existing_vm_of_the_replicas_name_instead_of_creating_another(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    existing = hyperstack.add_vm(tasks.vm_name(replica_id), status="ACTIVE")

    result = run("create_vm", replica_id, hyperstack)

    assert result == {"vm_id": existing.id}
    assert hyperstack.called("create_vm") == [] and len(hyperstack.vms) == 1


def test_create_vm_retried_after_a_lost_answer_adopts_the_vm_that_answer_made(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.create_then_fail = RETRYABLE
    with pytest.raises(HyperstackRetryable):
        run("create_vm", replica_id, hyperstack)

    result = run("create_vm", replica_id, hyperstack)  # the ASL's retry

    (vm,) = hyperstack.vms.values()
    assert result == {"vm_id": vm.id} and len(hyperstack.called("create_vm")) == 1


def test_create_that_fails_after_the_vm_exists_leaves_no_vm_once_compensation_ran(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.create_then_fail = PERMANENT
    with pytest.raises(ProvisioningFailed) as failure:
        run("create_vm", replica_id, hyperstack)
    assert len(hyperstack.vms) == 1  # made, but its id never reached the workflow

    run("delete_vm", replica_id, hyperstack, vm_id=None)  # $.vm.vm_id is still null
    run("mark_failed", replica_id, error=catch(failure.value), cleanup={})

    assert hyperstack.vms == {}
    assert status_of(replica_id) == statuses.FAILED
    assert "Hyperstack refused" in row(replica_id).error_message


def test_vm_created_while_its_replica_was_deleted_is_deleted_again(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.on_create = lambda: being_deleted(api, replica_id)

    with pytest.raises(ReplicaGone):
        run("create_vm", replica_id, hyperstack)

    assert hyperstack.vms == {}


def test_create_vm_for_a_replica_no_longer_being_provisioned_asks_hyperstack_nothing(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    being_deleted(api, replica_id)

    with pytest.raises(ReplicaGone):
        run("create_vm", replica_id, hyperstack)

    assert hyperstack.calls == []


# Check VM


def test_check_vm_reports_a_building_vm_as_creating_and_counts_the_poll(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.set_vm(vm_id, "BUILD")

    result = run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=2)

    assert result == {"status": "CREATING", "floating_ip": None, "polls": 3, "vm_status": "BUILD"}
    assert status_of(replica_id) == statuses.CREATING_VM


def test_check_vm_waits_for_the_floating_ip_of_an_active_vm(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip=None)

    assert run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)["status"] == "CREATING"


def test_active_vm_with_its_ip_moves_the_replica_to_booting(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="203.0.113.9")

    result = run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)

    assert result == {"status": "ACTIVE", "floating_ip": "203.0.113.9", "polls": 1}
    assert status_of(replica_id) == statuses.BOOTING


@pytest.mark.parametrize("vm_status", ["ERROR", "FAILED"])
def test_vm_in_error_is_reported_as_error(api, model_id, hyperstack, vm_status):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.set_vm(vm_id, vm_status)

    assert run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)["status"] == "ERROR"


def test_vm_that_disappeared_while_being_created_fails_provisioning(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    del hyperstack.vms[vm_id]

    with pytest.raises(ProvisioningFailed, match="disappeared"):
        run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)


# Check model and Mark ready


@pytest.fixture
def model_server() -> Iterator[TlsReplicaServer]:
    """The model server a booted VM would run, on 127.0.0.1 (the VM's floating IP in these tests),
    behind TLS with the credentials the replica gets (`creating` keeps them for it)."""
    with TlsReplicaServer(CREDENTIALS) as server:
        yield server


def test_check_model_is_healthy_when_the_model_server_answers_its_models(api, model_id, hyperstack, model_server):
    replica_id, vm_id = booting(api, model_id, hyperstack, port=model_server.port)

    result = run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=4)

    assert result == {"healthy": True, "polls": 5}
    assert model_server.seen == [("/v1/models", f"Bearer {CREDENTIALS.api_key}")]


def test_check_model_is_not_healthy_while_the_model_server_answers_an_error(api, model_id, hyperstack, model_server,
                                                                            monkeypatch):
    model_server.answer = 503
    replica_id, vm_id = booting(api, model_id, hyperstack, port=model_server.port)

    assert run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)["healthy"] is False


def test_check_model_is_not_healthy_while_nothing_listens(api, model_id, hyperstack, model_server):
    port = model_server.port
    model_server.stop()
    replica_id, vm_id = booting(api, model_id, hyperstack, port=port)

    assert run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)["healthy"] is False


def test_mark_ready_makes_the_replica_serve_at_its_vms_address(api, model_id, hyperstack):
    replica_id, vm_id = booting(api, model_id, hyperstack, port=8123)

    run("mark_ready", replica_id, vm_id=vm_id, floating_ip="203.0.113.9")

    replica = row(replica_id)
    assert replica.vm_status == statuses.SUCCESS
    assert replica.endpoint == "https://203.0.113.9:8123/v1"


# Delete VM and Mark failed (compensation)


def test_compensation_deletes_the_vm_and_marks_the_replica_failed_with_the_reason(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    error = {"Error": "VmNeverActive", "Cause": f"VM {vm_id} never became ACTIVE (3 checks)"}

    run("delete_vm", replica_id, hyperstack, vm_id=vm_id)
    result = run("mark_failed", replica_id, vm_id=vm_id, error=error, cleanup={})

    assert hyperstack.vms == {}
    assert status_of(replica_id) == statuses.FAILED
    assert row(replica_id).error_message == result["reason"] == f"VM {vm_id} never became ACTIVE (3 checks)"


def test_compensation_deletes_every_vm_of_the_replicas_name_not_only_the_recorded_one(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    stray = hyperstack.add_vm(tasks.vm_name(replica_id))
    other = hyperstack.add_vm(tasks.vm_name(replica_id + 1))

    run("delete_vm", replica_id, hyperstack, vm_id=vm_id)

    assert set(hyperstack.called("delete_vm")) == {vm_id, stray.id}
    assert list(hyperstack.vms) == [other.id]


def test_compensation_succeeds_when_the_vm_is_already_gone(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    del hyperstack.vms[vm_id]

    assert run("delete_vm", replica_id, hyperstack, vm_id=vm_id) == {}


def test_delete_refused_because_the_vm_is_busy_is_retried_not_given_up(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.fail["delete_vm"] = BUSY

    with pytest.raises(HyperstackRetryable):
        run("delete_vm", replica_id, hyperstack, vm_id=vm_id)
    run("delete_vm", replica_id, hyperstack, vm_id=vm_id)

    assert hyperstack.vms == {}


def test_failed_compensation_says_the_vm_may_still_exist(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    cleanup = catch(ProvisioningFailed("Hyperstack refused: 403"))

    run("mark_failed", replica_id, error={"Error": "VmError", "Cause": "ERROR"}, cleanup=cleanup)

    assert "may still exist: Hyperstack refused: 403" in row(replica_id).error_message


def test_mark_failed_leaves_a_replica_being_deleted_to_its_teardown(api, model_id, hyperstack):
    replica_id, _ = creating(api, model_id, hyperstack)
    being_deleted(api, replica_id)

    run("mark_failed", replica_id, error=catch(ReplicaGone("gone")), cleanup={})

    assert status_of(replica_id) == statuses.DELETING


# Tear down replica and Mark delete failed


def test_teardown_deletes_every_vm_of_the_replicas_name_then_its_rows(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    stray = hyperstack.add_vm(tasks.vm_name(replica_id))
    being_deleted(api, replica_id)

    run("teardown", replica_id, hyperstack)

    assert set(hyperstack.called("delete_vm")) == {vm_id, stray.id} and hyperstack.vms == {}
    assert row(replica_id) is None
    assert list(ReplicaSecurityRule.query(replica_id)) == []


def test_teardown_of_a_replica_whose_vm_is_gone_succeeds(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    del hyperstack.vms[vm_id]
    being_deleted(api, replica_id)

    assert run("teardown", replica_id, hyperstack) == {}

    assert row(replica_id) is None


def test_teardown_of_a_replica_already_gone_asks_hyperstack_nothing(api, model_id):
    replica_id = new_replica(api, model_id)
    being_deleted(api, replica_id)
    Replica(replica_id).delete()

    # run() fails the test if a client is asked for; not counted again as a delete that succeeded
    assert run("teardown", replica_id) == {"repeated": True}


def test_teardown_that_hyperstack_refuses_keeps_the_rows_and_marks_delete_failed(api, model_id, hyperstack):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    being_deleted(api, replica_id)
    hyperstack.fail["delete_vm"] = PERMANENT
    with pytest.raises(ProvisioningFailed) as failure:
        run("teardown", replica_id, hyperstack)

    run("mark_delete_failed", replica_id, error=catch(failure.value))

    assert status_of(replica_id) == statuses.DELETE_FAILED
    assert row(replica_id).error_message.startswith("Teardown failed, the VM may still exist: Hyperstack refused")
    assert list(hyperstack.vms) == [vm_id]


# Hyperstack's errors as the workflow's


@pytest.mark.parametrize(("error", "raised"), [(RETRYABLE, HyperstackRetryable), (PERMANENT, ProvisioningFailed)])
@pytest.mark.parametrize("method", ["find_vm_by_name", "create_vm"])
def test_create_vm_raises_hyperstack_errors_as_the_workflow_error_that_retries_or_compensates(
        api, model_id, hyperstack, method, error, raised):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.fail[method] = error

    with pytest.raises(raised):
        run("create_vm", replica_id, hyperstack)


@pytest.mark.parametrize(("error", "raised"), [(RETRYABLE, HyperstackRetryable), (PERMANENT, ProvisioningFailed)])
@pytest.mark.parametrize(("step", "method"), [("check_vm", "get_vm"), ("delete_vm", "find_vms_by_name"),
                                              ("delete_vm", "delete_vm"), ("teardown", "delete_vm")])
def test_other_steps_raise_hyperstack_errors_as_the_workflow_error_that_retries_or_fails(
        api, model_id, hyperstack, step, method, error, raised):
    replica_id, vm_id = creating(api, model_id, hyperstack)
    if step == "teardown":
        being_deleted(api, replica_id)
    hyperstack.fail[method] = error

    with pytest.raises(raised):
        run(step, replica_id, hyperstack, vm_id=vm_id, polls=0)


def test_the_errors_raised_are_those_the_workflow_retries_and_catches():
    states = json.loads(DEFINITION.read_text())["States"]
    retried = {error for state in states.values() for rule in state.get("Retry", []) for error in rule["ErrorEquals"]}

    assert HyperstackRetryable.__name__ in retried
    assert ProvisioningFailed.__name__ not in retried and ReplicaGone.__name__ not in retried


def test_steps_that_do_not_call_hyperstack_never_build_a_client(api, model_id):
    replica_id = new_replica(api, model_id)

    run("start_create", replica_id)  # run() fails the test if a client is asked for
    run("mark_failed", replica_id, error={"Error": "VmError", "Cause": "ERROR"}, cleanup={})

    assert status_of(replica_id) == statuses.FAILED


def test_an_unknown_step_fails_without_retry():
    with pytest.raises(ProvisioningFailed, match="Unknown workflow step"):
        tasks.handle({"step": "reboot", "replica_id": 1})
