"""The replica's state machine (issue #20): every move of a provisioned replica's `vm_status`, failures included.

TRANSITIONS is the table in docs/replicas.md (`## The replica's state machine`), row for row. Each row is driven here:
the replica is put in its `from` status through the real steps, then the event is played as the workflows
(infra/*.asl.json) and the admin API play it, step by step through `tasks.handle`, with the Catch and Choice
results the definitions hand on; the replica must end in `to`, and its VM kept or deleted as the row's drive
says. A row whose `from` is `any` is driven from every status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core.replica_statuses import (
    BOOTING,
    CREATING_VM,
    DELETE_FAILED,
    DELETING,
    FAILED,
    HIBERNATED,
    HIBERNATING,
    PENDING,
    SUCCESS,
    WAKING,
)
from chalicelib.core.settings import get_provision_settings
from chalicelib.core.step_functions import execution_arn
from chalicelib.provisioning import idle_check, tasks, workflow
from chalicelib.provisioning.errors import (
    HibernationRefused,
    NotIdle,
    ProvisioningFailed,
    ReplicaGone,
    StillHibernating,
    StoreRetryable,
)
from chalicelib.provisioning.reconciler import reconcile
from chalicelib.store.lookups import model_by_id
from chalicelib.store.replica_use import mark_used
from chalicelib.store.tables import Replica
from chalicelib.store.wake_requests import request_wake
from tests.conftest import TEST_HIBERNATE_ARN, TEST_STATE_MACHINE_ARN, TEST_WAKE_ARN
from tests.unit.conftest import VM_DETAILS
from tests.unit.provisioning.test_hibernation import HibernatingHyperstack, executions_of, serving
from tests.unit.provisioning.test_provisioning_tasks import (
    CREDENTIALS,
    EXECUTION_ARN,
    PERMANENT,
    being_deleted,
    booting,
    catch,
    creating,
    new_replica,
    row,
    run,
)
from tests.unit.provisioning.test_teardown_races import create_execution_ends
from tests.unit.replica_server import TlsReplicaServer

ANY = "any"  # a row that holds from every status
GONE = "(row gone)"  # the replica's rows are deleted
ALL_STATUSES = (PENDING, CREATING_VM, BOOTING, SUCCESS, FAILED, DELETING, DELETE_FAILED, HIBERNATING, HIBERNATED,
                WAKING)

TRANSITIONS: list[tuple[str, str, str]] = [
    (PENDING, "create workflow starts", CREATING_VM),
    (PENDING, "create workflow cannot start (the POST answers 503)", GONE),
    (PENDING, "its first step fails for good (DynamoDB throttled past its retries)", FAILED),
    (CREATING_VM, "VM ACTIVE with its floating IP", BOOTING),
    (CREATING_VM, "Hyperstack refuses the VM", FAILED),
    (CREATING_VM, "VM in ERROR (its VM deleted)", FAILED),
    (CREATING_VM, "VM never ACTIVE (its VM deleted)", FAILED),
    (CREATING_VM, "VM vanished", FAILED),
    (BOOTING, "model answers", SUCCESS),
    (BOOTING, "model never answered (its VM deleted)", FAILED),
    (CREATING_VM, "execution ended undone, idle check takes over", CREATING_VM),
    (BOOTING, "execution ended undone, idle check takes over", BOOTING),
    (FAILED, "admin retry (its cause fixed; secrets given again)", PENDING),
    (SUCCESS, "idle check: idle for its time", HIBERNATING),
    (SUCCESS, "idle check, but used since (its first step reads again)", SUCCESS),
    (SUCCESS, "admin hibernate", HIBERNATING),
    (SUCCESS, "reconciler: its VM vanished", FAILED),
    (SUCCESS, "reconciler: its VM in ERROR (a later sweep deletes it)", FAILED),
    (HIBERNATING, "VM hibernated", HIBERNATED),
    (HIBERNATING, "a wake is asked (it waits for the VM to hibernate)", HIBERNATING),
    (HIBERNATING, "used while draining (idle check's hibernation)", SUCCESS),
    (HIBERNATING, "flavor refuses (hibernation turned off)", SUCCESS),
    (HIBERNATING, "hibernation failed, VM ACTIVE", SUCCESS),
    (HIBERNATING, "hibernation failed, VM hibernated after all", HIBERNATED),
    (HIBERNATING, "hibernation failed, VM gone or ERROR (its VM deleted)", FAILED),
    (HIBERNATING, "hibernation failed, VM still on its way (execution ends, VM kept)", HIBERNATING),
    (HIBERNATING, "execution ended undone, idle check takes over", HIBERNATING),
    (HIBERNATED, "reconciler: its VM vanished", FAILED),
    (HIBERNATED, "a request asks a wake", WAKING),
    (HIBERNATED, "admin wake", WAKING),
    (HIBERNATED, "wake asked but never started: idle check starts it", WAKING),
    (WAKING, "VM restored, model answers", SUCCESS),
    (WAKING, "VM gone or ERROR (its VM deleted)", FAILED),
    (WAKING, "model never answered (its VM deleted)", FAILED),
    (WAKING, "VM not ACTIVE in time (execution ends, VM kept)", WAKING),
    (WAKING, "execution ended undone, idle check takes over", WAKING),
    (ANY, "admin DELETE", DELETING),
    (ANY, "admin DELETE of its model", DELETING),
    (ANY, "admin DELETE, teardown cannot start (503)", DELETE_FAILED),
    (DELETING, "a create step still running (deletes the VM it made)", DELETING),
    (DELETING, "teardown: its VMs, then its rows", GONE),
    (DELETING, "teardown failed (VM may remain)", DELETE_FAILED),
    (DELETE_FAILED, "an earlier teardown, still running, succeeds", GONE),
    (DELETE_FAILED, "idle check retries the teardown, TEARDOWN_RETRY_SECONDS after it started", DELETING),
    (DELETING, "teardown lost (stopped, or failed unmarked): idle check starts another after TEARDOWN_STALL_SECONDS",
     DELETING),
]

IP = "127.0.0.1"  # every fake VM's floating IP, where the model server of these tests listens
MAX_POLLS = 3  # a poll's `polls` once its checks ran out; the Choice state then leaves the loop


@dataclass
class World:
    """One replica, the fakes around it, and the execution that moved it last (the steps' `execution_arn`)."""

    api: Any
    model_id: int
    hyperstack: HibernatingHyperstack
    sfn: Any
    server: TlsReplicaServer
    monkeypatch: pytest.MonkeyPatch
    replica_id: int = 0
    vm_id: int | None = None
    execution: str = EXECUTION_ARN
    drain: dict[str, Any] = field(default_factory=dict)  # the drain's event, from the hibernation's first step

    def step(self, name: str, **fields: Any) -> dict[str, Any]:
        return run(name, self.replica_id, self.hyperstack, execution_arn=self.execution, **fields)

    def vm(self, **fields: Any) -> dict[str, Any]:
        return {"vm_id": self.vm_id, **fields}


@pytest.fixture
def world(api, model_id, hyperstack, sfn, monkeypatch) -> Iterator[World]:
    with TlsReplicaServer(CREDENTIALS, api_key=CREDENTIALS.api_key) as server:
        yield World(api, model_id, hyperstack, sfn, server, monkeypatch)


def _ok(reply: Any, status: int) -> Any:
    assert reply.status == status, reply.json
    return reply


def _started_by(w: World, state_machine: str, action: Callable[[], Any]) -> str:
    """Run `action`; the ARN of the one execution of `state_machine` it started."""
    before = set(executions_of(w.sfn, state_machine))
    action()
    (name,) = set(executions_of(w.sfn, state_machine)) - before
    return execution_arn(state_machine, name)


def _input(w: World) -> dict[str, Any]:
    return json.loads(w.sfn.describe_execution(executionArn=w.execution)["input"])


def _compensated(w: World, error: dict[str, Any]) -> None:
    """What a Catch (or a Pass naming the error) leads to: delete the VM, then mark the replica FAILED."""
    cleanup = w.step("delete_vm", **w.vm())
    w.step("mark_failed", **w.vm(), error=error, cleanup=cleanup)


def _this_minute() -> int:
    return int(time.time() // 60)


# Putting a replica in each status, through the steps that bring it there


def _pending(w: World) -> None:
    w.replica_id = new_replica(w.api, w.model_id)


def _creating_vm(w: World) -> None:  # the VM not asked for yet: the events below ask for it
    _pending(w)
    w.step("start_create")


def _asks_for_the_vm(w: World) -> None:
    w.vm_id = w.step("create_vm")["vm_id"]


def _booting(w: World) -> None:
    w.replica_id, w.vm_id = booting(w.api, w.model_id, w.hyperstack, port=w.server.port)


def _success(w: World) -> None:
    w.replica_id, w.vm_id = serving(w.api, w.model_id, w.hyperstack, port=w.server.port)


def _failed(w: World) -> None:
    _creating_vm(w)
    _asks_for_the_vm(w)
    _compensated(w, {"Error": "VmError", "Cause": "Hyperstack reported the VM in status ERROR"})


def _deleting(w: World) -> None:
    w.replica_id, w.vm_id = creating(w.api, w.model_id, w.hyperstack)
    being_deleted(w.api, w.replica_id)


def _delete_failed(w: World) -> None:
    _deleting(w)
    _teardown_fails(w)


def _hibernating(w: World) -> None:
    _success(w)
    _idle_check_hibernates(w)


def _hibernated(w: World) -> None:
    _hibernating(w)
    _vm_hibernates(w)


def _waking(w: World) -> None:
    _hibernated(w)
    _admin_wakes(w)


ARRANGE: dict[str, Callable[[World], None]] = {
    PENDING: _pending, CREATING_VM: _creating_vm, BOOTING: _booting, SUCCESS: _success, FAILED: _failed,
    DELETING: _deleting, DELETE_FAILED: _delete_failed, HIBERNATING: _hibernating, HIBERNATED: _hibernated,
    WAKING: _waking,
}


# The events


def _create_starts(w: World) -> None:
    w.step("start_create")


def _create_cannot_start(w: World) -> None:
    """Another replica, POSTed while Step Functions refuses: its rows go (the one arranged stays aside)."""
    tried: list[int] = []

    def refused(action: str, replica_id: int) -> str:
        tried.append(replica_id)
        raise RuntimeError("Step Functions is unavailable")

    w.monkeypatch.setattr(workflow, "start", refused)
    body = {"endpoint": "", "create_vm": True, "vm_creation_details": VM_DETAILS}
    _ok(w.api.post(f"/v1/models/{w.model_id}/replicas", body), 503)
    (w.replica_id,) = tried


def _first_step_fails_for_good(w: World) -> None:
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "UpdateItem")

    def advance(*_: Any, **__: Any) -> None:
        raise throttled

    with w.monkeypatch.context() as patched:
        patched.setattr(tasks, "advance", advance)
        with pytest.raises(StoreRetryable) as failure:  # retried by its state; this is its last try
            w.step("start_create")
    _compensated(w, catch(failure.value))


def _vm_active(w: World) -> None:
    _asks_for_the_vm(w)
    w.hyperstack.set_vm(w.vm_id, "ACTIVE", floating_ip=IP)
    assert w.step("check_vm", **w.vm(polls=0))["status"] == "ACTIVE"


def _create_refused(w: World) -> None:
    w.hyperstack.fail["create_vm"] = PERMANENT
    with pytest.raises(ProvisioningFailed) as refused:
        w.step("create_vm")
    _compensated(w, catch(refused.value))


def _vm_in_error(w: World) -> None:
    _asks_for_the_vm(w)
    w.hyperstack.set_vm(w.vm_id, "ERROR")
    assert w.step("check_vm", **w.vm(polls=0))["status"] == "ERROR"
    _compensated(w, {"Error": "VmError", "Cause": f"Hyperstack reported VM {w.vm_id} in status ERROR"})


def _vm_never_active(w: World) -> None:
    _asks_for_the_vm(w)
    assert w.step("check_vm", **w.vm(polls=MAX_POLLS - 1)) == {"status": "CREATING", "floating_ip": None,
                                                               "polls": MAX_POLLS, "vm_status": "CREATING"}
    _compensated(w, {"Error": "VmNeverActive", "Cause": f"VM {w.vm_id} never became ACTIVE ({MAX_POLLS} checks)"})


def _vm_vanished(w: World) -> None:
    _asks_for_the_vm(w)
    del w.hyperstack.vms[w.vm_id]
    with pytest.raises(ProvisioningFailed) as vanished:
        w.step("check_vm", **w.vm(polls=0))
    _compensated(w, catch(vanished.value))


def _model_answers(w: World) -> None:
    assert w.step("check_model", **w.vm(floating_ip=IP, polls=0))["healthy"]
    w.step("mark_ready", **w.vm(floating_ip=IP))


def _model_never_answered(w: World) -> None:
    w.server.answer = 503
    assert not w.step("check_model", **w.vm(floating_ip=IP, polls=MAX_POLLS - 1))["healthy"]
    _compensated(w, {"Error": "ModelNeverHealthy", "Cause": f"The model on VM {w.vm_id} never answered"})


def _admin_retries(w: World) -> None:
    _ok(w.api.post(f"/v1/replicas/{w.replica_id}/retry", {}), 202)


def _idle_for_its_time(w: World) -> None:
    Replica(w.replica_id).update(actions=[Replica.hibernate_after_seconds.set(60), Replica.serving_since.set(0)])


def _idle_check_hibernates(w: World) -> None:
    _idle_for_its_time(w)
    w.execution = _started_by(w, TEST_HIBERNATE_ARN, idle_check.run)
    marked = w.step("start_hibernate", if_idle=True)
    w.drain = {"if_idle": True, "last_used_minute": marked["last_used_minute"], "drain_poll_seconds": 0, "polls": 0}


def _used_since_the_idle_check(w: World) -> None:
    _idle_for_its_time(w)
    w.execution = _started_by(w, TEST_HIBERNATE_ARN, idle_check.run)
    mark_used(w.replica_id, _this_minute())  # a request, after the check read the replica
    with pytest.raises(NotIdle):  # "Used meanwhile"
        w.step("start_hibernate", if_idle=True)


def _admin_hibernates(w: World) -> None:
    w.execution = _started_by(w, TEST_HIBERNATE_ARN,
                              lambda: _ok(w.api.post(f"/v1/replicas/{w.replica_id}/hibernate", {}), 202))
    w.step("start_hibernate", if_idle=_input(w)["if_idle"])


def _swept(w: World) -> None:
    fake = w.hyperstack
    w.monkeypatch.setattr(fake, "find_vms_by_prefix", raising=False,
                          value=lambda prefix: [vm for vm in fake.vms.values() if vm.name.startswith(prefix)])
    reconcile(fake, datetime.now(UTC))


def _reconciler_finds_vm_vanished(w: World) -> None:
    del w.hyperstack.vms[w.vm_id]
    _swept(w)


def _reconciler_finds_vm_in_error(w: World) -> None:
    w.hyperstack.set_vm(w.vm_id, "ERROR")
    _swept(w)


def _vm_hibernates(w: World) -> None:
    assert w.step("check_drained", **w.drain)["drained"]
    w.step("hibernate_vm", **w.vm())
    assert w.step("check_hibernated", **w.vm(polls=0))["status"] == "HIBERNATED"
    w.step("mark_hibernated")


def _wake_asked_mid_hibernation(w: World) -> None:
    wake = _started_by(w, TEST_WAKE_ARN, lambda: _ok(w.api.post(f"/v1/replicas/{w.replica_id}/wake", {}), 202))
    with pytest.raises(StillHibernating):  # retried by its state until the hibernation ends
        run("start_wake", w.replica_id, execution_arn=wake)


def _used_while_draining(w: World) -> None:
    mark_used(w.replica_id, _this_minute())  # a request routed from a cache read before the replica was marked
    with pytest.raises(NotIdle):
        w.step("check_drained", **w.drain)


def _flavor_refuses(w: World) -> None:
    w.hyperstack.cannot_hibernate = True
    with pytest.raises(HibernationRefused) as refused:
        w.step("hibernate_vm", **w.vm())
    w.step("hibernation_refused", error=catch(refused.value))


def _hibernation_fails_on_an_active_vm(w: World) -> None:
    w.hyperstack.fail["hibernate_vm"] = PERMANENT
    with pytest.raises(ProvisioningFailed) as failed:
        w.step("hibernate_vm", **w.vm())
    assert w.step("hibernation_failed", **w.vm(), error=catch(failed.value)) == {"outcome": "serving"}


def _hibernated_after_all(w: World) -> None:
    w.step("hibernate_vm", **w.vm())
    w.hyperstack.set_vm(w.vm_id, "HIBERNATING")
    assert w.step("check_hibernated", **w.vm(polls=MAX_POLLS - 1))["status"] == "HIBERNATING"  # checks ran out
    w.hyperstack.set_vm(w.vm_id, "HIBERNATED")
    error = {"Error": "VmNeverHibernated", "Cause": f"VM {w.vm_id} did not hibernate ({MAX_POLLS} checks)"}
    assert w.step("hibernation_failed", **w.vm(), error=error) == {"outcome": "hibernated"}


def _hibernation_fails_on_a_vm_in_error(w: World) -> None:
    w.step("hibernate_vm", **w.vm())
    w.hyperstack.set_vm(w.vm_id, "ERROR")
    assert w.step("check_hibernated", **w.vm(polls=0))["status"] == "ERROR"
    error = {"Error": "VmError", "Cause": f"Hyperstack reported VM {w.vm_id} in status ERROR while hibernating it"}
    assert w.step("hibernation_failed", **w.vm(), error=error) == {"outcome": "lost"}
    _compensated(w, error)


def _hibernation_fails_on_a_vm_on_its_way(w: World) -> None:
    w.step("hibernate_vm", **w.vm())
    w.hyperstack.set_vm(w.vm_id, "HIBERNATING")
    error = {"Error": "VmNeverHibernated", "Cause": f"VM {w.vm_id} did not hibernate ({MAX_POLLS} checks)"}
    assert w.step("hibernation_failed", **w.vm(), error=error)["outcome"] == "unsettled"  # "Hibernation interrupted"


def _ended_and_taken_over(w: World, state_machine: str) -> None:
    w.sfn.stop_execution(executionArn=w.execution)  # it ended without finishing (here ABORTED)
    w.execution = _started_by(w, state_machine, idle_check.run)


def _create_taken_over(w: World) -> None:
    """The replica's create execution, the last to move it, ends undone: a new one takes over, with the same VM."""
    w.execution = execution_arn(TEST_STATE_MACHINE_ARN, f"replica-{w.replica_id}-create")  # the admin API started it
    Replica(w.replica_id).update(actions=[Replica.moved_by.set(w.execution)])
    _ended_and_taken_over(w, TEST_STATE_MACHINE_ARN)
    w.step("start_create")
    made = w.step("create_vm")["vm_id"]
    assert w.vm_id in (None, made), "the VM made before is the one carried on with"
    w.vm_id = made


def _hibernation_taken_over(w: World) -> None:
    _ended_and_taken_over(w, TEST_HIBERNATE_ARN)
    w.step("start_hibernate", if_idle=_input(w)["if_idle"])


def _request_asks_a_wake(w: World) -> None:
    from chalicelib.chat import routing

    key = w.api.create_key()["api_key"]
    body = {"model": model_by_id(w.model_id).name, "messages": [{"role": "user", "content": "hi"}]}
    routing._cache.clear()
    try:
        w.execution = _started_by(w, TEST_WAKE_ARN, lambda: _ok(w.api.post("/v1/chat/completions", body, key=key),
                                                                503))
    finally:
        routing._cache.clear()
    w.step("start_wake")


def _admin_wakes(w: World) -> None:
    w.execution = _started_by(w, TEST_WAKE_ARN,
                              lambda: _ok(w.api.post(f"/v1/replicas/{w.replica_id}/wake", {}), 202))
    w.step("start_wake")


def _idle_check_starts_an_asked_wake(w: World) -> None:
    request_wake(w.replica_id, int(time.time() * 1000) - 60_000)  # its asker died before starting it
    w.execution = _started_by(w, TEST_WAKE_ARN, idle_check.run)
    w.step("start_wake")


def _restored(w: World) -> dict[str, Any]:
    w.step("restore_vm", **w.vm())
    return w.step("check_restored", **w.vm(polls=0))


def _wakes(w: World) -> None:
    restored = _restored(w)
    assert w.step("check_awake", **w.vm(floating_ip=restored["floating_ip"], polls=0))["healthy"]
    w.step("mark_awake", **w.vm(floating_ip=restored["floating_ip"]))


def _wake_loses_its_vm(w: World) -> None:
    w.step("restore_vm", **w.vm())
    del w.hyperstack.vms[w.vm_id]
    with pytest.raises(ProvisioningFailed) as vanished:
        w.step("check_restored", **w.vm(polls=0))
    assert w.step("wake_failed", **w.vm()) == {"outcome": "lost"}
    _compensated(w, catch(vanished.value))


def _woken_model_never_answered(w: World) -> None:
    restored = _restored(w)
    w.server.answer = 503
    assert not w.step("check_awake", **w.vm(floating_ip=restored["floating_ip"], polls=MAX_POLLS - 1))["healthy"]
    _compensated(w, {"Error": "ModelNeverReady", "Cause": f"The model did not answer on VM {w.vm_id}"})


def _vm_not_back_in_time(w: World) -> None:
    w.step("restore_vm", **w.vm())
    w.hyperstack.set_vm(w.vm_id, "RESTORING")
    assert w.step("check_restored", **w.vm(polls=MAX_POLLS - 1))["status"] == "RESTORING"  # checks ran out
    assert w.step("wake_failed", **w.vm())["outcome"] == "unsettled"  # "Wake interrupted"


def _wake_taken_over(w: World) -> None:
    _ended_and_taken_over(w, TEST_WAKE_ARN)
    w.step("start_wake")


def _admin_deletes(w: World) -> None:
    _ok(w.api.delete(f"/v1/replicas/{w.replica_id}"), 204)


def _admin_deletes_its_model(w: World) -> None:
    _ok(w.api.delete(f"/v1/models/{w.model_id}"), 204)


def _teardown_cannot_start(w: World) -> None:
    def refused(*_: Any) -> str:
        raise RuntimeError("Step Functions is unavailable")

    w.monkeypatch.setattr(workflow, "start", refused)
    _ok(w.api.delete(f"/v1/replicas/{w.replica_id}"), 503)


def _create_step_still_running(w: World) -> None:
    with pytest.raises(ReplicaGone):
        w.step("check_vm", **w.vm(polls=0))
    w.step("delete_vm", **w.vm())  # then "Replica deleted meanwhile": nothing marked


def _teardown(w: World) -> None:
    create_execution_ends(w.replica_id)
    assert w.step("create_ended", polls=0)["ended"]
    w.step("teardown")


def _teardown_fails(w: World) -> None:
    w.hyperstack.fail["delete_vm"] = PERMANENT
    with pytest.raises(ProvisioningFailed) as failed:
        w.step("teardown")
    w.step("mark_delete_failed", error=catch(failed.value))


def _earlier_teardown_succeeds(w: World) -> None:
    w.step("teardown")


def _teardown_retried(w: World, after_seconds: int) -> None:
    """The idle check, `after_seconds` after the latest teardown started, starts another: its first step claims
    the replica (DELETING again, its clock restarted). Not a second before."""
    started = int(row(w.replica_id).teardown_started_at)
    assert idle_check.run(started + after_seconds - 1)["tearing_down"] == []
    w.execution = _started_by(w, TEST_STATE_MACHINE_ARN, lambda: idle_check.run(started + after_seconds))
    assert _input(w)["action"] == "delete"
    create_execution_ends(w.replica_id)
    w.step("create_ended", polls=0)
    assert row(w.replica_id).teardown_started_at >= started


def _idle_check_retries_a_failed_teardown(w: World) -> None:
    _teardown_retried(w, get_provision_settings().teardown_retry_seconds)


def _idle_check_restarts_a_lost_teardown(w: World) -> None:
    _teardown_retried(w, get_provision_settings().teardown_stall_seconds)


# Where the VMs are after the event
KEPT = "its VM kept"  # Hyperstack holds the replica's VM, and no other
NO_VM = "no VM"  # none left (deleted, vanished, or never made)
AS_BEFORE = "VMs as before"  # the event itself touches no VM (a teardown's step does)

DRIVES: dict[tuple[str, str], tuple[Callable[[World], None], str]] = {
    (PENDING, "create workflow starts"): (_create_starts, NO_VM),
    (PENDING, "create workflow cannot start (the POST answers 503)"): (_create_cannot_start, NO_VM),
    (PENDING, "its first step fails for good (DynamoDB throttled past its retries)"): (_first_step_fails_for_good,
                                                                                        NO_VM),
    (CREATING_VM, "VM ACTIVE with its floating IP"): (_vm_active, KEPT),
    (CREATING_VM, "Hyperstack refuses the VM"): (_create_refused, NO_VM),
    (CREATING_VM, "VM in ERROR (its VM deleted)"): (_vm_in_error, NO_VM),
    (CREATING_VM, "VM never ACTIVE (its VM deleted)"): (_vm_never_active, NO_VM),
    (CREATING_VM, "VM vanished"): (_vm_vanished, NO_VM),
    (BOOTING, "model answers"): (_model_answers, KEPT),
    (BOOTING, "model never answered (its VM deleted)"): (_model_never_answered, NO_VM),
    (FAILED, "admin retry (its cause fixed; secrets given again)"): (_admin_retries, NO_VM),
    (SUCCESS, "idle check: idle for its time"): (_idle_check_hibernates, KEPT),
    (SUCCESS, "idle check, but used since (its first step reads again)"): (_used_since_the_idle_check, KEPT),
    (SUCCESS, "admin hibernate"): (_admin_hibernates, KEPT),
    (SUCCESS, "reconciler: its VM vanished"): (_reconciler_finds_vm_vanished, NO_VM),
    (SUCCESS, "reconciler: its VM in ERROR (a later sweep deletes it)"): (_reconciler_finds_vm_in_error, KEPT),
    (HIBERNATING, "VM hibernated"): (_vm_hibernates, KEPT),
    (HIBERNATING, "a wake is asked (it waits for the VM to hibernate)"): (_wake_asked_mid_hibernation, KEPT),
    (HIBERNATING, "used while draining (idle check's hibernation)"): (_used_while_draining, KEPT),
    (HIBERNATING, "flavor refuses (hibernation turned off)"): (_flavor_refuses, KEPT),
    (HIBERNATING, "hibernation failed, VM ACTIVE"): (_hibernation_fails_on_an_active_vm, KEPT),
    (HIBERNATING, "hibernation failed, VM hibernated after all"): (_hibernated_after_all, KEPT),
    (HIBERNATING, "hibernation failed, VM gone or ERROR (its VM deleted)"): (_hibernation_fails_on_a_vm_in_error,
                                                                            NO_VM),
    (HIBERNATING, "hibernation failed, VM still on its way (execution ends, VM kept)"): (
        _hibernation_fails_on_a_vm_on_its_way, KEPT),
    (CREATING_VM, "execution ended undone, idle check takes over"): (_create_taken_over, KEPT),
    (BOOTING, "execution ended undone, idle check takes over"): (_create_taken_over, KEPT),
    (HIBERNATING, "execution ended undone, idle check takes over"): (_hibernation_taken_over, KEPT),
    (HIBERNATED, "reconciler: its VM vanished"): (_reconciler_finds_vm_vanished, NO_VM),
    (HIBERNATED, "a request asks a wake"): (_request_asks_a_wake, KEPT),
    (HIBERNATED, "admin wake"): (_admin_wakes, KEPT),
    (HIBERNATED, "wake asked but never started: idle check starts it"): (_idle_check_starts_an_asked_wake, KEPT),
    (WAKING, "VM restored, model answers"): (_wakes, KEPT),
    (WAKING, "VM gone or ERROR (its VM deleted)"): (_wake_loses_its_vm, NO_VM),
    (WAKING, "model never answered (its VM deleted)"): (_woken_model_never_answered, NO_VM),
    (WAKING, "VM not ACTIVE in time (execution ends, VM kept)"): (_vm_not_back_in_time, KEPT),
    (WAKING, "execution ended undone, idle check takes over"): (_wake_taken_over, KEPT),
    (ANY, "admin DELETE"): (_admin_deletes, AS_BEFORE),
    (ANY, "admin DELETE of its model"): (_admin_deletes_its_model, AS_BEFORE),
    (ANY, "admin DELETE, teardown cannot start (503)"): (_teardown_cannot_start, AS_BEFORE),
    (DELETING, "a create step still running (deletes the VM it made)"): (_create_step_still_running, NO_VM),
    (DELETING, "teardown: its VMs, then its rows"): (_teardown, NO_VM),
    (DELETING, "teardown failed (VM may remain)"): (_teardown_fails, KEPT),
    (DELETE_FAILED, "an earlier teardown, still running, succeeds"): (_earlier_teardown_succeeds, NO_VM),
    (DELETE_FAILED, "idle check retries the teardown, TEARDOWN_RETRY_SECONDS after it started"): (
        _idle_check_retries_a_failed_teardown, KEPT),
    (DELETING, "teardown lost (stopped, or failed unmarked): idle check starts another after TEARDOWN_STALL_SECONDS"): (
        _idle_check_restarts_a_lost_teardown, AS_BEFORE),
}

CASES = [(status, event, to, (row_from, event)) for row_from, event, to in TRANSITIONS
         for status in (ALL_STATUSES if row_from == ANY else (row_from,))]


@pytest.mark.parametrize(("from_status", "event", "to_status", "drive"), CASES,
                         ids=[f"{status}-{event}-{to}" for status, event, to, _ in CASES])
def test_the_event_moves_the_replica_as_the_table_says(world, from_status, event, to_status, drive):
    ARRANGE[from_status](world)
    assert row(world.replica_id).vm_status == from_status
    play, vms = DRIVES[drive]
    before = dict(world.hyperstack.vms)

    play(world)

    replica = row(world.replica_id)
    assert (replica.vm_status if replica else GONE) == to_status, replica and replica.error_message
    if vms == KEPT:
        assert list(world.hyperstack.vms) == [world.vm_id]
    elif vms == NO_VM:
        assert world.hyperstack.vms == {}
    else:
        assert world.hyperstack.vms == before


def test_every_status_leads_on_without_a_delete_and_all_but_failed_without_an_admin():
    """No dead end: a replica leaves every status, a teardown's included, by a move no admin makes, but FAILED, which
    waits for an admin's decision (its VM is gone, and it says why) and is left by a retry as well as a DELETE."""
    moves = [(status, event) for status, event, to in TRANSITIONS if to != status]
    without_an_admin = {status for status, event in moves if not event.startswith("admin")}
    without_a_delete = {status for status, event in moves if "DELETE" not in event}

    assert set(ALL_STATUSES) - without_an_admin == {FAILED}
    assert set(ALL_STATUSES) - without_a_delete == set()



TABLE_PAGE = Path(__file__).resolve().parents[3] / "docs" / "replicas.md"
HEADING = "## The replica's state machine"


def markdown_table() -> str:
    """The documented table, made from TRANSITIONS (statuses in backticks)."""

    def cell(value: str) -> str:
        return f"`{value}`" if value in ALL_STATUSES else value

    lines = ["| from | event | to |", "| --- | --- | --- |"]
    lines += [f"| {cell(start)} | {event} | {cell(end)} |" for start, event, end in TRANSITIONS]
    return "\n".join(lines)


def documented_rows() -> list[tuple[str, ...]]:
    """The rows of the table under HEADING, its header and separator left out, backticks stripped."""
    lines = TABLE_PAGE.read_text().splitlines()
    rows = []
    for line in lines[lines.index(HEADING) + 1:]:
        if line.startswith("#"):  # the next heading
            break
        if line.startswith("|"):
            rows.append(tuple(cell.strip().strip("`") for cell in line.strip("|").split("|")))
    assert rows[:1] == [("from", "event", "to")], "the table's header is | from | event | to |"
    return rows[2:]


def test_the_documented_table_is_the_table_these_tests_drive():
    assert documented_rows() == TRANSITIONS, f"docs/replicas.md's table differs; from TRANSITIONS:\n{markdown_table()}"
