"""Deployment-scoped VMs and the reconciler, over the local HTTP stack: two stacks share one fake
Hyperstack (as two deployments share an account), each with its own deployment id and reconciler."""

import re
import time
from collections.abc import Iterator

import pytest

from chalicelib.core.vm_naming import replica_id_of, replica_vm_name
from chalicelib.hyperstack.client import HyperstackClient, VmSpec
from tests.integration.conftest import FAKE_KEY, Cloud, LocalStack, replica_rows, start_local_stack
from tests.integration.provisioned import create_vm_replica, wait_for

# A sweep every second, and a grace of two: the scenarios take seconds, not the production quarter hours.
RECONCILE_ENV = {"RECONCILE_INTERVAL_SECONDS": "1", "RECONCILE_GRACE_SECONDS": "2"}
DEPLOYMENT_LINE = "Reconciler: deployment "


class Deployment:
    def __init__(self, stack: LocalStack, deployment_id: str) -> None:
        self.stack = stack
        self.id = deployment_id


def _started(cloud: Cloud) -> Deployment:
    stack = start_local_stack({"HYPERSTACK_API_URL": cloud.hyperstack.url, "HYPERSTACK_API_KEY": FAKE_KEY,
                               "MOCK_REPLICA": "0", "PROVISION_POLL_SECONDS": "1", **RECONCILE_ENV})
    for line in stack.process.stdout:  # the stack prints its deployment id at start
        if line.startswith(DEPLOYMENT_LINE):
            return Deployment(stack, line.removeprefix(DEPLOYMENT_LINE).split(",")[0])
    raise AssertionError("the local stack never printed its deployment id")


@pytest.fixture(scope="module")
def first(cloud: Cloud) -> Iterator[Deployment]:
    deployment = _started(cloud)
    yield deployment
    deployment.stack.stop()


@pytest.fixture(scope="module")
def second(cloud: Cloud) -> Iterator[Deployment]:
    deployment = _started(cloud)
    yield deployment
    deployment.stack.stop()


@pytest.fixture(autouse=True)
def no_vm_left_unowned(cloud: Cloud, first: Deployment, second: Deployment) -> Iterator[None]:
    """After every scenario, the shared Hyperstack holds no VM that no SUCCESS replica of either stack owns."""
    yield
    deadline = time.monotonic() + 15
    while True:
        owned = {row["vm_id"] for deployment in (first, second) for row in replica_rows(deployment.stack)
                 if row["vm_status"] == "SUCCESS"}
        unowned = set(cloud.hyperstack.vms) - owned
        if not unowned or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert unowned == set()


def test_each_stack_has_a_deployment_id_of_its_own(first, second):
    assert first.id != second.id
    assert all(re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{8}", deployment.id) for deployment in (first, second))


def test_two_stacks_sharing_one_hyperstack_each_keep_their_own_vm(first, second, cloud, model_name):
    _, first_replica = create_vm_replica(first.stack, model_name)
    _, second_replica = create_vm_replica(second.stack, model_name)
    first_row = wait_for(first.stack, first_replica, {"SUCCESS", "FAILED"})
    second_row = wait_for(second.stack, second_replica, {"SUCCESS", "FAILED"})
    time.sleep(5)  # both reconcilers sweep a few times past the grace period

    vms = cloud.hyperstack.vms
    assert (first_row["vm_status"], second_row["vm_status"]) == ("SUCCESS", "SUCCESS")
    assert replica_id_of(vms[first_row["vm_id"]]["name"], first.id) == first_replica
    assert replica_id_of(vms[second_row["vm_id"]]["name"], second.id) == second_replica
    for deployment, replica_id in ((first, first_replica), (second, second_replica)):
        row = wait_for(deployment.stack, replica_id, {"SUCCESS", "FAILED"})
        assert row["vm_status"] == "SUCCESS", row["error_message"]
        assert deployment.stack.admin.delete(deployment.stack.url(f"/v1/replicas/{replica_id}")).status_code == 204
        wait_for(deployment.stack, replica_id, {None})


def test_a_vm_injected_under_the_deployments_name_is_removed_by_its_reconciler(first, second, cloud):
    client = HyperstackClient(FAKE_KEY, host=cloud.hyperstack.url)
    spec = VmSpec(name=replica_vm_name(first.id, 987654), environment_name="default-CANADA-1",
                  image_name="Ubuntu 22.04", flavor_name="n3-RTX-A6000x1", key_name="someone", assign_floating_ip=False,
                  user_data="", labels=[], security_rules=[])
    injected = client.create_vm(spec)
    assert injected.id in cloud.hyperstack.vms

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and injected.id in cloud.hyperstack.vms:
        time.sleep(0.2)

    assert injected.id not in cloud.hyperstack.vms
