"""The hibernate and wake workflows' steps, the idle check and the admin's hibernate/wake routes.

Hyperstack is the in-memory fake of the provisioning task tests, taught to hibernate and restore; the rows are
in moto's DynamoDB, and the executions the steps start are recorded by moto's Step Functions.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib.core import replica_statuses as statuses
from chalicelib.hyperstack.client import HibernationUnsupported, HyperstackError
from chalicelib.provisioning import idle_check, workflow
from chalicelib.provisioning.errors import (
    HibernationRefused,
    NotIdle,
    ProvisioningFailed,
    ReplicaGone,
    StillHibernating,
)
from chalicelib.store.replica_use import mark_used
from chalicelib.store.tables import Replica
from chalicelib.store.wake_requests import request_wake
from tests.conftest import TEST_HIBERNATE_ARN, TEST_WAKE_ARN
from tests.unit.provisioning.test_provisioning_tasks import CREDENTIALS, FakeHyperstack, creating, row, run
from tests.unit.replica_server import TlsReplicaServer

MINUTE = 60


class HibernatingHyperstack(FakeHyperstack):
    """The provisioning fake, plus hibernate and restore as Hyperstack's client does them (at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.cannot_hibernate = False

    def hibernate_vm(self, vm_id: int, retain_ip: bool = True) -> None:
        self._called("hibernate_vm", vm_id)
        if self.cannot_hibernate:
            raise HibernationUnsupported("Hyperstack answered 400: this flavor does not support hibernation")
        self.set_vm(vm_id, "HIBERNATED", floating_ip=self.vms[vm_id].floating_ip if retain_ip else None)

    def restore_vm(self, vm_id: int) -> None:
        self._called("restore_vm", vm_id)
        self.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")


def serving(api, model_id: int, hyperstack: HibernatingHyperstack, **fields: Any) -> tuple[int, int]:
    """A provisioned replica that reached SUCCESS on its VM: (replica id, VM id)."""
    replica_id, vm_id = creating(api, model_id, hyperstack)
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")
    run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)
    run("mark_ready", replica_id, vm_id=vm_id, floating_ip="127.0.0.1")
    if fields:
        Replica(replica_id).update(actions=[getattr(Replica, k).set(v) for k, v in fields.items()])
    return replica_id, vm_id


def hibernated(api, model_id: int, hyperstack: HibernatingHyperstack) -> tuple[int, int]:
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)
    run("hibernate_vm", replica_id, hyperstack, vm_id=vm_id)
    run("mark_hibernated", replica_id)
    return replica_id, vm_id


# Hibernate


def test_hibernation_takes_a_serving_replica_to_hibernated_and_its_vm_too(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack)

    assert run("start_hibernate", replica_id) == {"vm_id": vm_id, "last_used_minute": None}
    assert row(replica_id).vm_status == statuses.HIBERNATING
    run("hibernate_vm", replica_id, hyperstack, vm_id=vm_id)
    assert run("check_hibernated", replica_id, hyperstack, vm_id=vm_id, polls=0) == {"status": "HIBERNATED",
                                                                                     "polls": 1}
    run("mark_hibernated", replica_id)

    assert row(replica_id).vm_status == statuses.HIBERNATED
    assert hyperstack.vms[vm_id].status == "HIBERNATED"


def test_only_a_serving_replica_starts_hibernating(api, model_id, hyperstack):
    replica_id, _ = creating(api, model_id, hyperstack)

    with pytest.raises(ReplicaGone):
        run("start_hibernate", replica_id)
    assert row(replica_id).vm_status == statuses.CREATING_VM


def test_a_flavor_that_cannot_hibernate_leaves_the_replica_serving_with_the_reason(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack, hibernate_after_seconds=300)
    hyperstack.cannot_hibernate = True
    run("start_hibernate", replica_id)

    with pytest.raises(HibernationRefused) as refused:
        run("hibernate_vm", replica_id, hyperstack, vm_id=vm_id)
    run("hibernation_refused", replica_id, error={"Error": "HibernationRefused", "Cause": str(refused.value)})

    replica = row(replica_id)
    assert replica.vm_status == statuses.SUCCESS and replica.hibernate_after_seconds is None
    assert "does not support hibernation" in replica.error_message
    assert hyperstack.vms[vm_id].status == "ACTIVE"


def test_a_failed_hibernation_of_a_vm_still_active_leaves_the_replica_serving(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)

    outcome = run("hibernation_failed", replica_id, hyperstack, vm_id=vm_id,
                  error={"Error": "VmNeverHibernated", "Cause": "VM did not hibernate (3 checks)"})

    assert outcome == {"outcome": "serving"}
    assert row(replica_id).vm_status == statuses.SUCCESS and "did not hibernate" in row(replica_id).error_message


def test_a_failed_hibernation_of_a_vm_not_active_hands_it_to_compensation(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)
    hyperstack.set_vm(vm_id, "ERROR")

    outcome = run("hibernation_failed", replica_id, hyperstack, vm_id=vm_id, error={"Error": "VmError"})
    run("delete_vm", replica_id, hyperstack, vm_id=vm_id)
    run("mark_failed", replica_id, vm_id=vm_id, error={"Error": "VmError", "Cause": "ERROR"}, cleanup={})

    assert outcome == {"outcome": "lost"}
    assert hyperstack.vms == {} and row(replica_id).vm_status == statuses.FAILED


# Wake


def test_wake_restores_the_vm_checks_the_model_and_serves_again(api, model_id, hyperstack):
    with TlsReplicaServer(CREDENTIALS, api_key=CREDENTIALS.api_key) as server:
        replica_id, vm_id = hibernated(api, model_id, hyperstack)
        Replica(replica_id).update(actions=[Replica.port.set(server.port)])

        started = run("start_wake", replica_id)
        assert row(replica_id).vm_status == statuses.WAKING
        run("restore_vm", replica_id, hyperstack, vm_id=vm_id)
        check = run("check_restored", replica_id, hyperstack, vm_id=vm_id, polls=0)
        health = run("check_awake", replica_id, vm_id=vm_id, floating_ip=check["floating_ip"], polls=0)
        run("mark_awake", replica_id, vm_id=vm_id, floating_ip=check["floating_ip"])

    replica = row(replica_id)
    # The wake's polls read their timings from its first step: a starter passes the replica id alone.
    assert set(started) == {"vm_id", "poll_seconds", "max_polls", "model_poll_seconds", "max_model_polls",
                            "max_create_waits", "drain_poll_seconds", "max_drain_polls"}
    assert check["status"] == "ACTIVE" and health["healthy"] is True
    assert replica.vm_status == statuses.SUCCESS and replica.endpoint == f"https://127.0.0.1:{server.port}/v1"
    assert replica.wake_seconds >= 1 and replica.wake_requested_at is None
    assert abs(replica.serving_since - time.time()) < 60


def test_a_wake_asked_mid_hibernation_waits_for_the_vm_to_be_hibernated(api, model_id, hyperstack):
    replica_id, _ = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)

    with pytest.raises(StillHibernating):
        run("start_wake", replica_id)
    assert row(replica_id).vm_status == statuses.HIBERNATING


def test_a_wake_of_a_replica_deleted_meanwhile_does_nothing(api, model_id, hyperstack):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    assert api.delete(f"/v1/replicas/{replica_id}").status == 204

    with pytest.raises(ReplicaGone):
        run("start_wake", replica_id)
    assert row(replica_id).vm_status == statuses.DELETING


def test_a_failed_wake_deletes_the_vm_and_fails_the_replica(api, model_id, hyperstack):
    replica_id, vm_id = hibernated(api, model_id, hyperstack)
    run("start_wake", replica_id)
    hyperstack.fail["restore_vm"] = HyperstackError("Hyperstack answered 400", retryable=False, status=400)
    with pytest.raises(Exception):  # noqa: B017 - the ASL catches whatever the step raised
        run("restore_vm", replica_id, hyperstack, vm_id=vm_id)

    run("delete_vm", replica_id, hyperstack, vm_id=vm_id)
    run("mark_failed", replica_id, vm_id=vm_id, error={"Error": "ProvisioningFailed", "Cause": "restore refused"},
        cleanup={})

    assert hyperstack.vms == {} and row(replica_id).vm_status == statuses.FAILED


# Asking for a wake


def test_one_wake_ask_wins_however_many_race(api, model_id, hyperstack):
    replica_id, _ = hibernated(api, model_id, hyperstack)

    asks = [request_wake(replica_id, 1000 + n) for n in range(10)]

    assert asks == [1000] + [None] * 9


def test_a_serving_replica_cannot_be_asked_to_wake(api, model_id, hyperstack):
    replica_id, _ = serving(api, model_id, hyperstack)

    assert request_wake(replica_id, 1000) is None


def test_hibernation_ending_after_a_wake_ask_starts_that_wake(api, model_id, hyperstack, executions):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)
    run("hibernate_vm", replica_id, hyperstack, vm_id=vm_id)
    asked = request_wake(replica_id, 1234)

    run("mark_hibernated", replica_id)

    assert [e["name"] for e in executions] == [f"replica-{replica_id}-wake-{asked}"]


# The idle check


def test_idle_check_hibernates_a_replica_idle_for_its_time_and_spares_the_others(api, model_id, hyperstack,
                                                                               executions):
    now = time.time()
    idle, _ = serving(api, model_id, hyperstack, hibernate_after_seconds=300, serving_since=int(now) - 3600,
                      last_used_minute=int(now // MINUTE) - 10)
    busy, _ = serving(api, model_id, hyperstack, hibernate_after_seconds=300, serving_since=int(now) - 3600,
                      last_used_minute=int(now // MINUTE))
    never, _ = serving(api, model_id, hyperstack, serving_since=int(now) - 3600)

    summary = idle_check.run(now)

    assert summary["hibernating"] == [idle]
    assert [e["name"] for e in executions] == [f"replica-{idle}-hibernate-{int(now) - 3600}"]
    assert {busy, never}.isdisjoint(summary["hibernating"])


def test_overlapping_idle_checks_start_one_hibernation(api, model_id, hyperstack, executions):
    now = time.time()
    serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=int(now) - 3600)

    idle_check.run(now)
    idle_check.run(now + 1)

    assert len(executions) == 1


def test_idle_check_starts_a_wake_asked_for_but_never_started(api, model_id, hyperstack, executions):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    asked = request_wake(replica_id, int(time.time() * 1000) - 60_000)

    idle_check.run()

    assert [e["name"] for e in executions] == [f"replica-{replica_id}-wake-{asked}"]


# The admin's routes


def test_admin_hibernates_a_serving_replica_with_a_202(api, model_id, hyperstack, executions):
    replica_id, _ = serving(api, model_id, hyperstack)

    reply = api.post(f"/v1/replicas/{replica_id}/hibernate", {})

    assert reply.status == 202 and len(executions) == 1


def test_admin_hibernate_of_a_replica_by_url_is_a_409(api, model_id, executions):
    replica_id = api.create_replica(model_id)

    assert api.post(f"/v1/replicas/{replica_id}/hibernate", {}).status == 409
    assert executions == []


def test_admin_wake_of_a_hibernated_replica_starts_one_wake_and_a_second_is_a_409(api, model_id, hyperstack,
                                                                                  executions):
    replica_id, _ = hibernated(api, model_id, hyperstack)

    first = api.post(f"/v1/replicas/{replica_id}/wake", {})
    second = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert (first.status, second.status) == (202, 409) and len(executions) == 1


def test_admin_wake_of_a_serving_replica_is_a_409_and_of_none_a_404(api, model_id, hyperstack, executions):
    replica_id, _ = serving(api, model_id, hyperstack)

    assert api.post(f"/v1/replicas/{replica_id}/wake", {}).status == 409
    assert api.post("/v1/replicas/999/wake", {}).status == 404


def test_hibernate_after_seconds_is_accepted_shown_and_changed_on_a_provisioned_replica(api, model_id, hyperstack):
    replica_id, _ = serving(api, model_id, hyperstack)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"hibernate_after_seconds": 900})
    (listed,) = api.get(f"/v1/models/{model_id}/replicas").json

    assert reply.status == 204 and listed["hibernate_after_seconds"] == 900


def test_hibernate_after_seconds_on_a_replica_by_url_is_refused(api, model_id):
    reply = api.post(f"/v1/models/{model_id}/replicas",
                     {"endpoint": "http://10.0.0.9:8000/v1", "hibernate_after_seconds": 300})

    assert reply.status == 400 and set(reply.json["errors"]) == {"hibernate_after_seconds"}


# No dead ends: an execution that failed does not block its purpose


def executions_of(sfn, state_machine_arn: str) -> dict[str, str]:
    listed = sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]
    return {execution["name"]: execution["status"] for execution in listed}


def test_idle_check_starts_again_a_wake_whose_execution_failed_once_a_minute(api, model_id, hyperstack, sfn):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    asked = request_wake(replica_id, int(time.time() * 1000) - 60_000)
    name = f"replica-{replica_id}-wake-{asked}"
    failed = sfn.start_execution(stateMachineArn=TEST_WAKE_ARN, name=name)["executionArn"]
    sfn.stop_execution(executionArn=failed)  # ended without waking it: ABORTED, its name taken for 90 days

    idle_check.run()
    idle_check.run()  # an overlapping check, in the same minute: the same restart

    started = executions_of(sfn, TEST_WAKE_ARN)
    assert started.pop(name) == "ABORTED"
    (again,) = started
    assert again.startswith(f"{name}-again-")


def test_idle_check_starts_again_a_hibernation_whose_execution_failed(api, model_id, hyperstack, sfn):
    replica_id, _ = serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=0)
    idle_check.run()
    (first,) = executions_of(sfn, TEST_HIBERNATE_ARN)
    sfn.stop_execution(executionArn=TEST_HIBERNATE_ARN.replace(":stateMachine:", ":execution:") + f":{first}")

    idle_check.run()

    assert sorted(executions_of(sfn, TEST_HIBERNATE_ARN).values()) == ["ABORTED", "RUNNING"]


def test_admin_wake_after_a_failed_wake_starts_it_again_and_then_is_a_409(api, model_id, hyperstack, sfn):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    assert api.post(f"/v1/replicas/{replica_id}/wake", {}).status == 202
    (failed,) = sfn.list_executions(stateMachineArn=TEST_WAKE_ARN)["executions"]
    sfn.stop_execution(executionArn=failed["executionArn"])

    again = api.post(f"/v1/replicas/{replica_id}/wake", {})
    while_it_runs = api.post(f"/v1/replicas/{replica_id}/wake", {})

    assert (again.status, while_it_runs.status) == (202, 409)
    assert sorted(executions_of(sfn, TEST_WAKE_ARN).values()) == ["ABORTED", "RUNNING"]


def test_an_idle_checks_hibernation_of_a_replica_used_since_keeps_it_serving(api, model_id, hyperstack):
    replica_id, _ = serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=0,
                            last_used_minute=int(time.time() // MINUTE))  # used this minute

    with pytest.raises(NotIdle):
        run("start_hibernate", replica_id, if_idle=True)

    assert row(replica_id).vm_status == statuses.SUCCESS


def test_an_admins_hibernation_goes_ahead_whenever_it_was_last_used(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack, hibernate_after_seconds=60,
                                last_used_minute=int(time.time() // MINUTE))

    assert run("start_hibernate", replica_id, if_idle=False) == {"vm_id": vm_id,
                                                                 "last_used_minute": int(time.time() // MINUTE)}
    assert row(replica_id).vm_status == statuses.HIBERNATING


# No dead ends: a replica left HIBERNATING or WAKING by an execution that ended is taken over


def _ended(sfn, state_machine_arn: str, name: str) -> str:
    """An execution of that workflow that ended without finishing (stopped: ABORTED)."""
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name)["executionArn"]
    sfn.stop_execution(executionArn=arn)
    return arn


def _resumed(sfn, state_machine_arn: str) -> str:
    (name,) = [name for name, status in executions_of(sfn, state_machine_arn).items() if status == "RUNNING"]
    assert "-resumed-" in name
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def test_a_wake_left_waking_by_an_ended_execution_is_taken_over_by_the_next_and_restores_the_same_vm(
        api, model_id, hyperstack, sfn):
    replica_id, vm_id = hibernated(api, model_id, hyperstack)
    ended = _ended(sfn, TEST_WAKE_ARN, f"replica-{replica_id}-wake-1")
    run("start_wake", replica_id, execution_arn=ended)  # its wake got this far, then its execution ended

    assert idle_check.run()["taken_over"] == [replica_id]
    resumed = _resumed(sfn, TEST_WAKE_ARN)
    run("start_wake", replica_id, execution_arn=resumed)
    run("restore_vm", replica_id, hyperstack, vm_id=vm_id, execution_arn=resumed)

    assert row(replica_id).vm_status == statuses.WAKING and row(replica_id).moved_by == resumed
    assert hyperstack.vms[vm_id].status == "ACTIVE" and list(hyperstack.vms) == [vm_id]


def test_a_wake_whose_execution_still_runs_is_not_taken_over(api, model_id, hyperstack, sfn):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    running = sfn.start_execution(stateMachineArn=TEST_WAKE_ARN, name=f"replica-{replica_id}-wake-1")["executionArn"]
    run("start_wake", replica_id, execution_arn=running)

    assert idle_check.run()["taken_over"] == []
    with pytest.raises(ReplicaGone):
        run("start_wake", replica_id, execution_arn=running.replace("wake-1", "wake-2"))
    assert row(replica_id).moved_by == running


def test_a_hibernation_left_hibernating_by_an_ended_execution_is_taken_over_and_ends_hibernated(
        api, model_id, hyperstack, sfn):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    ended = _ended(sfn, TEST_HIBERNATE_ARN, f"replica-{replica_id}-hibernate-1")
    run("start_hibernate", replica_id, execution_arn=ended)

    assert idle_check.run()["taken_over"] == [replica_id]
    resumed = _resumed(sfn, TEST_HIBERNATE_ARN)
    for step in ("start_hibernate", "hibernate_vm", "mark_hibernated"):
        run(step, replica_id, hyperstack, vm_id=vm_id, execution_arn=resumed)

    assert row(replica_id).vm_status == statuses.HIBERNATED and hyperstack.vms[vm_id].status == "HIBERNATED"


def test_two_executions_taking_over_one_replica_leave_it_to_the_first(api, model_id, hyperstack, sfn):
    replica_id, _ = hibernated(api, model_id, hyperstack)
    run("start_wake", replica_id, execution_arn=_ended(sfn, TEST_WAKE_ARN, f"replica-{replica_id}-wake-1"))
    first, second = (TEST_WAKE_ARN.replace(":stateMachine:", ":execution:") + f":replica-{replica_id}-wake-{n}"
                     for n in ("a", "b"))

    run("start_wake", replica_id, execution_arn=first)
    with pytest.raises(ReplicaGone):
        run("start_wake", replica_id, execution_arn=second)  # the first one's execution did not end

    assert row(replica_id).moved_by == first


# Compensation deletes a VM only when Hyperstack says it is gone or failed


@pytest.mark.parametrize(("vm_status", "outcome", "replica_status"), [
    ("ACTIVE", "serving", statuses.SUCCESS),
    ("HIBERNATED", "hibernated", statuses.HIBERNATED),
    ("HIBERNATING", "unsettled", statuses.HIBERNATING),
    ("ERROR", "lost", statuses.HIBERNATING),
])
def test_a_failed_hibernation_reads_the_vm_again_and_only_a_lost_one_goes_to_compensation(
        api, model_id, hyperstack, vm_status, outcome, replica_status):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)
    hyperstack.set_vm(vm_id, vm_status)

    result = run("hibernation_failed", replica_id, hyperstack, vm_id=vm_id, error={"Error": "VmNeverHibernated"})

    assert result["outcome"] == outcome and row(replica_id).vm_status == replica_status
    assert hyperstack.called("delete_vm") == []


def test_a_failed_hibernation_that_cannot_read_hyperstack_raises_and_deletes_nothing(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack)
    run("start_hibernate", replica_id)
    hyperstack.fail["get_vm"] = HyperstackError("Hyperstack answered 401: invalid API key", retryable=False, status=401)

    with pytest.raises(ProvisioningFailed):  # the workflow ends "Hibernation interrupted": no compensation
        run("hibernation_failed", replica_id, hyperstack, vm_id=vm_id, error={"Error": "HyperstackRetryable"})

    assert row(replica_id).vm_status == statuses.HIBERNATING and list(hyperstack.vms) == [vm_id]


@pytest.mark.parametrize(("vm_status", "outcome"), [(None, "lost"), ("ERROR", "lost"), ("RESTORING", "unsettled"),
                                                    ("HIBERNATED", "unsettled"), ("ACTIVE", "unsettled")])
def test_a_failed_wake_reads_the_vm_again_and_calls_it_lost_only_when_gone_or_in_error(
        api, model_id, hyperstack, vm_status, outcome):
    replica_id, vm_id = hibernated(api, model_id, hyperstack)
    run("start_wake", replica_id)
    if vm_status is None:
        del hyperstack.vms[vm_id]
    else:
        hyperstack.set_vm(vm_id, vm_status)

    assert run("wake_failed", replica_id, hyperstack, vm_id=vm_id)["outcome"] == outcome
    assert row(replica_id).vm_status == statuses.WAKING and hyperstack.called("delete_vm") == []


# Hibernation never cuts a request in flight: the drain


def test_an_admins_hibernation_drains_until_the_minute_of_last_use_is_over(api, model_id, hyperstack):
    this_minute = int(time.time() // MINUTE)
    replica_id, _ = serving(api, model_id, hyperstack, last_used_minute=this_minute)
    run("start_hibernate", replica_id, if_idle=False)
    event = {"if_idle": False, "last_used_minute": this_minute, "drain_poll_seconds": 0, "polls": 0}

    busy = run("check_drained", replica_id, **event)
    Replica(replica_id).update(actions=[Replica.last_used_minute.set(this_minute - 2)])  # as if minutes passed
    quiet = run("check_drained", replica_id, **{**event, "polls": 1})

    assert busy == {"drained": False, "polls": 1} and quiet == {"drained": True, "polls": 2}


def test_an_idle_checks_hibernation_used_while_draining_is_called_off_and_serves_on(api, model_id, hyperstack):
    replica_id, vm_id = serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=0)
    marked = run("start_hibernate", replica_id, if_idle=True)
    mark_used(replica_id, int(time.time() // MINUTE))  # a request routed from a cache read before the mark

    with pytest.raises(NotIdle):
        run("check_drained", replica_id, if_idle=True, last_used_minute=marked["last_used_minute"],
            drain_poll_seconds=0, polls=0)

    assert row(replica_id).vm_status == statuses.SUCCESS and hyperstack.called("hibernate_vm") == []
    assert row(replica_id).serving_since > 0


def _idle_check_twice(monkeypatch, unset: tuple[str, ...], prefix: str | None) -> tuple[dict, dict, list[str]]:
    """Two idle checks of an idle replica with the workflow variables `unset` and WORKFLOW_NAME_PREFIX `prefix`
    (None: unset too; Chalice's test client sets the stage's in requests); their results and the warnings."""
    from chalicelib.core.settings import get_provision_settings, get_settings

    warned = []
    monkeypatch.setattr(idle_check.logger, "warning", lambda message, **_: warned.append(message))
    for name in unset:
        monkeypatch.delenv(name)
    if prefix is None:
        monkeypatch.delenv("WORKFLOW_NAME_PREFIX", raising=False)
    else:
        monkeypatch.setenv("WORKFLOW_NAME_PREFIX", prefix)
    monkeypatch.setattr(workflow, "_said_missing", set())
    get_provision_settings.cache_clear()
    get_settings.cache_clear()
    try:
        first, second = idle_check.run(), idle_check.run()
    finally:
        monkeypatch.undo()
        get_provision_settings.cache_clear()
        get_settings.cache_clear()
    return first, second, warned


SAID_ONCE = ["idle check has no workflows to start: nothing is hibernated, woken or taken over"]
NOTHING_STARTED = {"hibernating": [], "waking": [], "taken_over": [], "tearing_down": []}  # an idle check's outcome


def test_an_idle_check_without_its_workflows_does_nothing_and_says_so_once(api, model_id, hyperstack, monkeypatch):
    serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=0)  # idle: would hibernate

    first, second, warned = _idle_check_twice(monkeypatch, ("HIBERNATE_STATE_MACHINE_ARN",), prefix=None)

    assert first == second == {**NOTHING_STARTED, "missing": ["hibernate"]}
    assert warned == SAID_ONCE


def test_an_idle_check_whose_named_workflows_are_not_deployed_does_nothing_and_says_so_once(
    api, model_id, hyperstack, monkeypatch
):
    """Under `chalice deploy` the state machines are named, not given: before the companion stack exists,
    the idle check finds them missing when it starts one, and says so once instead of failing every minute."""
    serving(api, model_id, hyperstack, hibernate_after_seconds=60, serving_since=0)  # idle: would hibernate

    first, second, warned = _idle_check_twice(
        monkeypatch, ("PROVISION_STATE_MACHINE_ARN", "HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN"),
        prefix="hyperstack-llm-proxy-nowhere")

    missing = ["The workflow hyperstack-llm-proxy-nowhere-hibernate is not deployed (see docs/deploying.md)."]
    assert first == second == {**NOTHING_STARTED, "missing": missing}
    assert warned == SAID_ONCE
