"""The reconciler against an in-memory Hyperstack and replica rows in moto: what it deletes, what it
spares, which replicas it fails, and the one log line per action."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.core import replica_statuses as statuses
from chalicelib.core.vm_naming import replica_vm_name
from chalicelib.hyperstack.client import HyperstackError, Vm
from chalicelib.provisioning.reconciler import reconcile
from chalicelib.store.tables import Replica

DEPLOYMENT = "test-0badcafe"
OTHER_DEPLOYMENT = "test-0badcaff"
GRACE = 600
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(seconds=GRACE + 1)
YOUNG = NOW - timedelta(seconds=GRACE - 60)


class FakeHyperstack:
    """The client methods the reconciler calls, over a dict of VMs."""

    def __init__(self) -> None:
        self.vms: dict[int, Vm] = {}
        self.deleted: list[int] = []
        self.fail_deletes: HyperstackError | None = None
        self._ids = itertools.count(9001)

    def add(self, name: str, created_at: datetime | None = OLD, status: str = "ACTIVE") -> Vm:
        vm = Vm(id=next(self._ids), name=name, status=status, floating_ip="127.0.0.1", fixed_ip=None,
                created_at=created_at)
        self.vms[vm.id] = vm
        return vm

    def find_vms_by_prefix(self, prefix: str) -> list[Vm]:
        return [vm for vm in self.vms.values() if vm.name.startswith(prefix)]

    def get_vm(self, vm_id: int) -> Vm | None:
        return self.vms.get(int(vm_id))

    def delete_vm(self, vm_id: int) -> None:
        if self.fail_deletes is not None:
            raise self.fail_deletes
        self.deleted.append(vm_id)
        self.vms.pop(int(vm_id), None)


@pytest.fixture
def hyperstack(aws) -> FakeHyperstack:
    return FakeHyperstack()


def replica(replica_id: int, status: str, vm_id: int | None = None) -> None:
    Replica(replica_id, model_id=1, vm_status=status, vm_id=vm_id, created_at=0, endpoint="http://127.0.0.1:1/v1"
            ).save()


def sweep(hyperstack: FakeHyperstack) -> Any:
    return reconcile(hyperstack, NOW, grace_seconds=GRACE, deployment=DEPLOYMENT)


def test_a_vm_of_no_replica_older_than_the_grace_period_is_deleted(hyperstack):
    orphan = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))

    summary = sweep(hyperstack)

    assert summary.deleted_vms == [orphan.id] and hyperstack.vms == {}


def test_a_vm_of_no_replica_younger_than_the_grace_period_is_kept(hyperstack):
    hyperstack.add(replica_vm_name(DEPLOYMENT, 5), created_at=YOUNG)

    assert sweep(hyperstack).deleted_vms == [] and hyperstack.deleted == []


def test_a_vm_of_unknown_age_is_kept(hyperstack):
    hyperstack.add(replica_vm_name(DEPLOYMENT, 5), created_at=None)

    assert sweep(hyperstack).deleted_vms == []


def test_a_vm_of_another_deployment_is_never_touched(hyperstack):
    hyperstack.add(replica_vm_name(OTHER_DEPLOYMENT, 5))
    hyperstack.add("someone-elses-vm")

    summary = sweep(hyperstack)

    assert (summary.vms_seen, hyperstack.deleted) == (0, [])


@pytest.mark.parametrize("status", statuses.IN_PROGRESS)
def test_a_vm_of_a_replica_being_provisioned_is_kept_even_before_its_id_is_recorded(hyperstack, status):
    hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, status)

    assert sweep(hyperstack).deleted_vms == []


def test_the_vm_of_a_serving_replica_is_kept(hyperstack):
    vm = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, statuses.SUCCESS, vm.id)

    summary = sweep(hyperstack)

    assert (summary.deleted_vms, summary.failed_replicas) == ([], [])


@pytest.mark.parametrize("status", [statuses.FAILED, statuses.DELETING, statuses.DELETE_FAILED])
def test_a_vm_whose_replica_failed_or_is_going_is_deleted(hyperstack, status):
    vm = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, status, vm.id)

    assert sweep(hyperstack).deleted_vms == [vm.id]


def test_a_second_vm_beside_a_serving_replicas_own_is_deleted(hyperstack):
    own = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    duplicate = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, statuses.SUCCESS, own.id)

    assert sweep(hyperstack).deleted_vms == [duplicate.id]
    assert list(hyperstack.vms) == [own.id]


def test_a_serving_replica_whose_vm_vanished_is_failed_with_the_reason(hyperstack):
    replica(5, statuses.SUCCESS, vm_id=4242)

    summary = sweep(hyperstack)

    row = Replica.get(5)
    assert summary.failed_replicas == [5]
    assert row.vm_status == statuses.FAILED and "4242 vanished" in row.error_message


def test_a_serving_replica_whose_vm_is_in_error_is_failed_with_the_reason(hyperstack):
    vm = hyperstack.add(replica_vm_name(DEPLOYMENT, 5), status="ERROR")
    replica(5, statuses.SUCCESS, vm.id)

    sweep(hyperstack)

    assert "ERROR" in Replica.get(5).error_message and Replica.get(5).vm_status == statuses.FAILED


def test_replicas_given_by_url_are_left_alone(hyperstack):
    replica(5, statuses.SUCCESS, vm_id=None)

    assert sweep(hyperstack).failed_replicas == []
    assert Replica.get(5).vm_status == statuses.SUCCESS


def test_nothing_to_do_is_no_action_and_no_line(hyperstack, log_lines):
    vm = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, statuses.SUCCESS, vm.id)

    summary = sweep(hyperstack)

    assert (summary.deleted_vms, summary.failed_replicas, summary.errors) == ([], [], [])
    assert log_lines() == []


def test_each_action_is_one_structured_log_line(hyperstack, log_lines):
    orphan = hyperstack.add(replica_vm_name(DEPLOYMENT, 6))
    replica(5, statuses.SUCCESS, vm_id=4242)

    sweep(hyperstack)

    lines = log_lines()
    assert [line["message"] for line in lines] == ["reconciler deleted vm", "reconciler marked replica failed"]
    assert (lines[0]["vm_id"], lines[0]["replica_id"], lines[0]["deployment"]) == (orphan.id, 6, DEPLOYMENT)
    assert (lines[1]["replica_id"], lines[1]["vm_id"]) == (5, 4242)


def test_a_refused_delete_is_logged_and_the_sweep_goes_on(hyperstack, log_lines):
    hyperstack.add(replica_vm_name(DEPLOYMENT, 6))
    replica(5, statuses.SUCCESS, vm_id=4242)
    hyperstack.fail_deletes = HyperstackError("409 the VM is busy", retryable=False, status=409)

    summary = sweep(hyperstack)

    assert summary.deleted_vms == [] and summary.failed_replicas == [5]
    assert "reconciler action failed" in [line["message"] for line in log_lines()]


@pytest.mark.parametrize("status", [statuses.HIBERNATING, statuses.HIBERNATED, statuses.WAKING])
def test_the_vm_of_a_dormant_replica_is_kept_and_the_replica_left_as_it_is(hyperstack, status):
    vm = hyperstack.add(replica_vm_name(DEPLOYMENT, 5), status="HIBERNATED")
    replica(5, status, vm_id=vm.id)

    summary = sweep(hyperstack)

    assert summary.deleted_vms == [] and vm.id in hyperstack.vms
    assert summary.failed_replicas == [] and Replica.get(5).vm_status == status


@pytest.mark.parametrize("vm_status", [None, "ERROR"])
def test_a_hibernated_replica_whose_vm_vanished_or_broke_is_failed_rather_than_woken_in_vain(hyperstack, vm_status):
    vm_id = hyperstack.add(replica_vm_name(DEPLOYMENT, 5), status=vm_status).id if vm_status else 4242
    replica(5, statuses.HIBERNATED, vm_id=vm_id)

    summary = sweep(hyperstack)

    assert summary.failed_replicas == [5]
    row = Replica.get(5)
    assert row.vm_status == statuses.FAILED and f"VM {vm_id}" in row.error_message


@pytest.mark.parametrize("status", [statuses.HIBERNATING, statuses.WAKING])
def test_a_replica_on_its_way_whose_vm_vanished_is_left_to_its_workflow(hyperstack, status):
    replica(5, status, vm_id=4242)

    assert sweep(hyperstack).failed_replicas == [] and Replica.get(5).vm_status == status


def test_a_second_vm_beside_a_hibernated_replicas_is_deleted(hyperstack):
    kept = hyperstack.add(replica_vm_name(DEPLOYMENT, 5), status="HIBERNATED")
    extra = hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    replica(5, statuses.HIBERNATED, vm_id=kept.id)

    assert sweep(hyperstack).deleted_vms == [extra.id]
