"""The provisioning state machine (infra/provisioning.asl.json) executed by moto's interpreter.

The embedded emulator runs in this process; its Lambda invocations of the provision function are
answered by `FakeTasks`, a script of results per step (raising the task code's own exceptions, whose
class names are the error names Retry and Catch match), so each test drives one path through the
real definition and asserts the steps called and the execution's end. Waits are 1 s; the one retry
test waits its real (jittered, at most 2 s) Retry interval.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.core.config import default_user_config

from chalicelib.provisioning.errors import HyperstackRetryable, ProvisioningFailed, ReplicaGone
from infra.local.emulator import start_emulator
from infra.local.workflows import setup_local_workflow, start_execution, states_entered, wait_for_execution

pytestmark = pytest.mark.timeout(60)

REPLICA_ID = 7
VM_ID = 4242
FLOATING_IP = "203.0.113.10"
CREATE = {"action": "create", "replica_id": REPLICA_ID, "poll_seconds": 1, "max_polls": 3,
          "model_poll_seconds": 1, "max_model_polls": 3}
DELETE = {"action": "delete", "replica_id": REPLICA_ID, "poll_seconds": 1, "max_create_waits": 3}


def vm(status: str) -> dict[str, Any]:
    return {"status": status, "floating_ip": FLOATING_IP if status == "ACTIVE" else None}


class FakeTasks:
    """The provision Lambda, scripted: each step answers its results in order, then repeats the last."""

    DEFAULTS: dict[str, list[Any]] = {
        "create_vm": [{"vm_id": VM_ID}],
        "check_vm": [vm("ACTIVE")],
        "check_model": [{"healthy": True}],
        "delete_vm": [{"vm_deleted": True}],
        "create_ended": [{"ended": True, "polls": 1}],
    }

    def __init__(self, emulator_url: str, **script: list[Any]) -> None:
        self.dynamodb = boto3.client("dynamodb", endpoint_url=emulator_url)
        self.script = {**self.DEFAULTS, **script}
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        # The real tasks write DynamoDB through the same emulator: this must not deadlock.
        self.dynamodb.list_tables()
        self.events.append(event)
        answers = self.script.get(event["step"], [{}])
        calls = sum(1 for e in self.events if e["step"] == event["step"])
        answer = answers[min(calls, len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if "polls" in event:  # the poll counter is the task's to advance
            answer = {**answer, "polls": event["polls"] + 1}
        return answer

    @property
    def steps(self) -> list[str]:
        return [e["step"] for e in self.events]

    def event(self, step: str) -> dict[str, Any]:
        return next(e for e in self.events if e["step"] == step)


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    previous_port, previous_config = os.environ.get("MOTO_PORT"), default_user_config["stepfunctions"]
    url, server = start_emulator()
    yield url
    server.shutdown()
    # start_emulator publishes its port and turns moto's interpreter on, for the whole process:
    # local stacks started later must not inherit the port, nor other tests' mock_aws the interpreter.
    default_user_config["stepfunctions"] = previous_config
    if previous_port is None:
        os.environ.pop("MOTO_PORT", None)
    else:
        os.environ["MOTO_PORT"] = previous_port


def run(emulator_url: str, tasks: FakeTasks, execution_input: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    state_machine_arn = setup_local_workflow(emulator_url, tasks)
    execution_arn = start_execution(emulator_url, state_machine_arn, execution_input)
    return wait_for_execution(emulator_url, execution_arn, timeout=45), states_entered(emulator_url, execution_arn)


def test_happy_path_polls_the_vm_then_the_model_and_marks_the_replica_ready(emulator_url: str) -> None:
    tasks = FakeTasks(
        emulator_url,
        check_vm=[vm("CREATING"), vm("CREATING"), vm("ACTIVE")],
        check_model=[{"healthy": False, "answer": NOT_LISTENING}, {"healthy": True}],
    )
    execution, states = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["start_create", "create_vm", "check_vm", "check_vm", "check_vm",
                           "check_model", "check_model", "mark_ready"]
    assert states[-1] == "Replica ready"
    assert [e["polls"] for e in tasks.events if e["step"] == "check_vm"] == [0, 1, 2]
    assert [e["polls"] for e in tasks.events if e["step"] == "check_model"] == [0, 1]
    assert tasks.event("check_vm")["vm_id"] == VM_ID
    assert tasks.event("check_model")["floating_ip"] == FLOATING_IP
    ready = tasks.event("mark_ready")
    assert (ready["replica_id"], ready["vm_id"], ready["floating_ip"]) == (REPLICA_ID, VM_ID, FLOATING_IP)
    assert ready["execution_arn"] == execution["executionArn"]


def test_vm_in_error_deletes_the_vm_then_marks_the_replica_failed(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_vm=[vm("CREATING"), vm("ERROR")])
    execution, _ = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "ProvisioningFailed"
    assert tasks.steps == ["start_create", "create_vm", "check_vm", "check_vm", "delete_vm", "mark_failed"]
    assert tasks.event("delete_vm")["vm_id"] == VM_ID
    failed = tasks.event("mark_failed")
    assert failed["error"]["Error"] == "VmError"
    assert str(VM_ID) in failed["error"]["Cause"]
    assert failed["cleanup"] == {"vm_deleted": True}


def test_a_vm_never_active_within_max_polls_is_compensated(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_vm=[vm("CREATING")])
    execution, _ = run(emulator_url, tasks, {**CREATE, "max_polls": 2})
    assert execution["status"] == "FAILED"
    assert tasks.steps == ["start_create", "create_vm", "check_vm", "check_vm", "delete_vm", "mark_failed"]
    assert tasks.event("mark_failed")["error"]["Error"] == "VmNeverActive"


NOT_LISTENING = "nothing accepted a connection on 203.0.113.10:8000: the VM's TLS front is not listening"


def test_a_model_that_never_answers_is_compensated(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_model=[{"healthy": False, "answer": NOT_LISTENING}])
    execution, _ = run(emulator_url, tasks, {**CREATE, "max_model_polls": 2})
    assert execution["status"] == "FAILED"
    assert tasks.steps[-4:] == ["check_model", "check_model", "delete_vm", "mark_failed"]
    assert tasks.event("mark_failed")["error"]["Error"] == "ModelNeverHealthy"


def test_a_model_that_never_answers_fails_saying_what_the_last_check_found(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_model=[{"healthy": False, "answer": NOT_LISTENING}])

    run(emulator_url, tasks, {**CREATE, "max_model_polls": 2})

    assert tasks.event("mark_failed")["error"]["Cause"].endswith(f"(2 health checks); the last: {NOT_LISTENING}")


def test_a_retryable_hyperstack_error_is_retried(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, create_vm=[HyperstackRetryable("429 Too Many Requests"), {"vm_id": VM_ID}])
    execution, _ = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["start_create", "create_vm", "create_vm", "check_vm", "check_model", "mark_ready"]


def test_provisioning_failed_is_not_retried_and_goes_to_compensation(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, create_vm=[ProvisioningFailed("flavor not available")])
    execution, _ = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "FAILED"
    assert tasks.steps == ["start_create", "create_vm", "delete_vm", "mark_failed"]
    # No VM id is known: delete_vm looks the VM up by its deterministic name.
    assert tasks.event("delete_vm")["vm_id"] is None
    error = tasks.event("mark_failed")["error"]
    assert error["Error"] == "ProvisioningFailed"
    assert "flavor not available" in error["Cause"]


def test_a_failed_vm_deletion_still_marks_the_replica_failed(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_vm=[vm("ERROR")], delete_vm=[ProvisioningFailed("VM is locked")])
    execution, _ = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "FAILED"
    assert tasks.steps[-2:] == ["delete_vm", "mark_failed"]
    cleanup = tasks.event("mark_failed")["cleanup"]
    assert cleanup["Error"] == "ProvisioningFailed"
    assert "VM is locked" in cleanup["Cause"]


def test_a_replica_deleted_meanwhile_deletes_the_vm_and_marks_nothing(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, check_vm=[vm("CREATING"), ReplicaGone("replica 7 was deleted")])
    execution, states = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["start_create", "create_vm", "check_vm", "check_vm", "delete_vm"]
    assert states[-1] == "Replica deleted meanwhile"


def test_a_replica_deleted_meanwhile_whose_vm_cannot_be_deleted_fails_loudly(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, start_create=[ReplicaGone("gone")], delete_vm=[RuntimeError("boom")])
    execution, _ = run(emulator_url, tasks, CREATE)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "VmCleanupFailed"
    assert tasks.steps == ["start_create", "delete_vm"]


def test_delete_tears_the_replica_down(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url)
    execution, states = run(emulator_url, tasks, DELETE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["create_ended", "teardown"]
    assert tasks.event("teardown")["replica_id"] == REPLICA_ID
    assert states == ["Create or delete?", "Start waiting for provisioning to end", "Provisioning ended?",
                      "May a VM still appear?", "Tear down replica", "Replica deleted"]


def test_teardown_waits_for_the_create_execution_to_end_before_it_looks(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, create_ended=[{"ended": False, "polls": 1}, {"ended": True, "polls": 2}])
    execution, _ = run(emulator_url, tasks, DELETE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["create_ended", "create_ended", "teardown"]


def test_teardown_stops_a_create_execution_that_never_ends_then_tears_down(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, create_ended=[{"ended": False, "polls": n} for n in (1, 2, 3)])
    execution, _ = run(emulator_url, tasks, DELETE)
    assert execution["status"] == "SUCCEEDED", execution
    assert tasks.steps == ["create_ended"] * 3 + ["stop_create", "teardown"]


def test_a_failed_teardown_marks_the_deletion_failed(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url, teardown=[ProvisioningFailed("security rule 9 cannot be deleted")])
    execution, _ = run(emulator_url, tasks, DELETE)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "DeletionFailed"
    assert tasks.steps == ["create_ended", "teardown", "mark_delete_failed"]
    error = tasks.event("mark_delete_failed")["error"]
    assert error["Error"] == "ProvisioningFailed"
    assert "security rule 9" in error["Cause"]


def test_an_unknown_action_fails_without_calling_any_step(emulator_url: str) -> None:
    tasks = FakeTasks(emulator_url)
    execution, _ = run(emulator_url, tasks, {**DELETE, "action": "resize"})
    assert execution["status"] == "FAILED"
    assert execution["error"] == "InvalidInput"
    assert tasks.steps == []
