"""Every workflow step delivered twice, or failing on a transient error and retried, ends where delivering it
once does (issue #20).

Step Functions retries a Lambda task whose invocation may already have run: a step can see its own write.
Each workflow's path is walked with one of its steps run twice, for every step in turn, and must end as the
path does with each step run once: the same status, the same one VM, nothing deleted that serves. The
branch steps (compensation, refusals) are run twice on their own. Then each step of each path fails once
on a throttled DynamoDB call (its first, then its second: before and after its write), and on a Hyperstack
5xx where it calls Hyperstack: it raises the error its state retries, never one that compensates, and
its retry ends the path as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core import replica_statuses as statuses
from chalicelib.provisioning.errors import HibernationRefused, HyperstackRetryable, NotIdle, StoreRetryable
from chalicelib.provisioning.outcomes import REPEATED
from chalicelib.provisioning.tasks import STEPS_WITH_HYPERSTACK, STEPS_WITHOUT_HYPERSTACK
from chalicelib.store import replica_credentials
from chalicelib.store.replica_use import mark_used
from chalicelib.store.tables import Metric
from tests.conftest import TEST_HIBERNATE_ARN, TEST_STATE_MACHINE_ARN, TEST_WAKE_ARN
from tests.unit.provisioning.test_hibernation import HibernatingHyperstack
from tests.unit.provisioning.test_provisioning_tasks import CREDENTIALS, RETRYABLE, catch, new_replica, row, run
from tests.unit.replica_server import TlsReplicaServer


def execution(state_machine: str, name: str) -> str:
    return state_machine.replace(":stateMachine:", ":execution:") + f":{name}"


CREATE, HIBERNATE, WAKE = (execution(TEST_STATE_MACHINE_ARN, "create"), execution(TEST_HIBERNATE_ARN, "hibernate"),
                           execution(TEST_WAKE_ARN, "wake"))


class Walk:
    """One replica walked through the workflows' steps, against the in-memory Hyperstack and a model server."""

    def __init__(self, api, hyperstack: HibernatingHyperstack, server: TlsReplicaServer) -> None:
        self.hyperstack = hyperstack
        self.replica_id = new_replica(api, api.create_model(), port=server.port)
        replica_credentials.keep_first(self.replica_id, CREDENTIALS.api_key, CREDENTIALS.certificate_pem,
                                       CREDENTIALS.private_key_pem)
        self.vm_id: int | None = None

    def step(self, name: str, arn: str, **fields: Any) -> dict[str, Any]:
        hyperstack = self.hyperstack if name in HYPERSTACK_STEPS else None
        return run(name, self.replica_id, hyperstack, execution_arn=arn, **fields)

    def vm(self) -> dict[str, Any]:
        return {"vm_id": self.vm_id}

    def at(self) -> dict[str, Any]:
        return {"vm_id": self.vm_id, "floating_ip": "127.0.0.1"}


HYPERSTACK_STEPS = {"create_vm", "check_vm", "delete_vm", "teardown", "hibernate_vm", "check_hibernated",
                    "hibernation_failed", "restore_vm", "check_restored", "wake_failed"}


def _created(walk: Walk, result: dict[str, Any]) -> None:
    walk.vm_id = result["vm_id"]
    walk.hyperstack.set_vm(walk.vm_id, "ACTIVE", floating_ip="127.0.0.1")  # the VM boots meanwhile


# Each path: (step, its execution, the event's fields from the walk so far, what to do with its result).
Path = list[tuple[str, str, Callable[[Walk], dict[str, Any]], Callable[[Walk, dict[str, Any]], None]]]
_NONE: Callable[[Walk], dict[str, Any]] = lambda walk: {}  # noqa: E731
_KEEP: Callable[[Walk, dict[str, Any]], None] = lambda walk, result: None  # noqa: E731
PROVISION: Path = [
    ("start_create", CREATE, _NONE, _KEEP),
    ("create_vm", CREATE, _NONE, _created),
    ("check_vm", CREATE, lambda walk: {**walk.vm(), "polls": 0}, _KEEP),
    ("check_model", CREATE, lambda walk: {**walk.at(), "polls": 0}, _KEEP),
    ("mark_ready", CREATE, Walk.at, _KEEP),
]
HIBERNATION: Path = [
    ("start_hibernate", HIBERNATE, _NONE, _KEEP),
    ("check_drained", HIBERNATE, lambda walk: {"if_idle": True, "last_used_minute": None, "drain_poll_seconds": 0,
                                               "polls": 0}, _KEEP),
    ("hibernate_vm", HIBERNATE, Walk.vm, _KEEP),
    ("check_hibernated", HIBERNATE, lambda walk: {**walk.vm(), "polls": 0}, _KEEP),
    ("mark_hibernated", HIBERNATE, _NONE, _KEEP),
]
WAKING: Path = [
    ("start_wake", WAKE, _NONE, _KEEP),
    ("restore_vm", WAKE, Walk.vm, _KEEP),
    ("check_restored", WAKE, lambda walk: {**walk.vm(), "polls": 0}, _KEEP),
    ("check_awake", WAKE, lambda walk: {**walk.at(), "polls": 0}, _KEEP),
    ("mark_awake", WAKE, Walk.at, _KEEP),
]
PATHS = {"provision": (PROVISION, statuses.SUCCESS), "hibernate": (PROVISION + HIBERNATION, statuses.HIBERNATED),
         "wake": (PROVISION + HIBERNATION + WAKING, statuses.SUCCESS)}
CASES = [(path, index) for path, (steps, _) in PATHS.items() for index in range(len(steps))
         if path == "provision" or index >= len(PATHS[path][0]) - len(HIBERNATION if path == "hibernate" else WAKING)]


@pytest.fixture
def server() -> Iterator[TlsReplicaServer]:
    with TlsReplicaServer(CREDENTIALS, api_key=CREDENTIALS.api_key) as running:
        yield running


@pytest.fixture
def walk(api, server) -> Walk:
    return Walk(api, HibernatingHyperstack(), server)


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    """What the workflow reads of a step's answer: all but `repeated`, which only keeps its ending from being
    counted twice (chalicelib.provisioning.outcomes)."""
    return {key: value for key, value in result.items() if key != REPEATED}


def walked(walk: Walk, steps: Path, twice: int | None = None, failing: int | None = None,
           fail: Callable[[str], AbstractContextManager] | None = None) -> list[dict[str, Any]]:
    """The path's steps in order, the one at `twice` delivered a second time with the same event; the one at
    `failing` first run inside `fail(step)` (which arms a fault and checks what the step raised), then again."""
    results = []
    for index, (name, arn, fields, then) in enumerate(steps):
        event = fields(walk)
        if index == failing and fail is not None:
            with fail(name):
                walk.step(name, arn, **event)
        result = walk.step(name, arn, **event)
        if index == twice:
            again = walk.step(name, arn, **event)
            assert _answer(again) == _answer(result), f"{name} answered otherwise the second time"
            assert not result.get(REPEATED), f"{name} said it repeated the first time"
        then(walk, result)
        results.append(result)
    return results


@pytest.mark.parametrize(("path", "index"), CASES,
                         ids=[f"{path}-{PATHS[path][0][index][0]}" for path, index in CASES])
def test_a_step_delivered_twice_ends_where_once_does(walk, path, index):
    steps, status = PATHS[path]

    walked(walk, steps, twice=index)

    replica = row(walk.replica_id)
    assert replica.vm_status == status, replica.error_message
    assert list(walk.hyperstack.vms) == [walk.vm_id] == [replica.vm_id]
    assert walk.hyperstack.called("delete_vm") == []


# Each step failing once on a transient error, then retried

FIRST_HYPERSTACK_CALL = {"create_vm": "find_vm_by_name", "check_vm": "get_vm", "hibernate_vm": "hibernate_vm",
                         "check_hibernated": "get_vm", "restore_vm": "restore_vm", "check_restored": "get_vm"}


class Throttle:
    """DynamoDB answering one call as throttled: `arm(after)` lets `after` calls through, then fails the next."""

    def __init__(self) -> None:
        self.left: int | None = None

    def arm(self, after: int) -> None:
        self.left = after

    def disarm(self) -> bool:
        """True if the armed failure never happened (the step made fewer calls)."""
        never, self.left = self.left is not None, None
        return never

    def hook(self, model: Any, params: Any, **_: Any) -> None:
        if self.left is None:
            return
        self.left -= 1
        if self.left < 0:
            self.left = None
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "Rate of requests exceeds the allowed throughput."},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, model.name)


@pytest.fixture
def throttle(api) -> Iterator[Throttle]:
    client = Metric._get_connection().connection.client  # every table's: they share one client
    throttled = Throttle()
    client.meta.events.register("before-call.dynamodb", throttled.hook)
    yield throttled
    client.meta.events.unregister("before-call.dynamodb", throttled.hook)


@pytest.mark.parametrize("after", [0, 1], ids=["first-call", "second-call"])
@pytest.mark.parametrize(("path", "index"), CASES,
                         ids=[f"{path}-{PATHS[path][0][index][0]}" for path, index in CASES])
def test_a_step_throttled_by_dynamodb_is_retried_and_ends_where_once_does(walk, throttle, path, index, after):
    steps, status = PATHS[path]

    @contextmanager
    def throttled(step: str) -> Iterator[None]:
        throttle.arm(after)
        try:
            yield
        except StoreRetryable:
            return
        # It ended without the failure: only a step that makes no more than `after` calls may.
        assert throttle.disarm() and after > 0, f"{step} swallowed a throttled DynamoDB call"

    walked(walk, steps, failing=index, fail=throttled)

    replica = row(walk.replica_id)
    assert replica.vm_status == status, replica.error_message
    assert list(walk.hyperstack.vms) == [walk.vm_id] and walk.hyperstack.called("delete_vm") == []


HYPERSTACK_CASES = [(path, index) for path, index in CASES if PATHS[path][0][index][0] in FIRST_HYPERSTACK_CALL]


@pytest.mark.parametrize(("path", "index"), HYPERSTACK_CASES,
                         ids=[f"{path}-{PATHS[path][0][index][0]}" for path, index in HYPERSTACK_CASES])
def test_a_step_answered_5xx_by_hyperstack_is_retried_and_ends_where_once_does(walk, path, index):
    steps, status = PATHS[path]

    @contextmanager
    def failing(step: str) -> Iterator[None]:
        walk.hyperstack.fail[FIRST_HYPERSTACK_CALL[step]] = RETRYABLE
        with pytest.raises(HyperstackRetryable):
            yield

    walked(walk, steps, failing=index, fail=failing)

    assert row(walk.replica_id).vm_status == status
    assert list(walk.hyperstack.vms) == [walk.vm_id] and walk.hyperstack.called("delete_vm") == []


# The branches, each twice


def serving(walk: Walk) -> None:
    walked(walk, PROVISION)


def hibernating(walk: Walk) -> None:
    serving(walk)
    walk.step("start_hibernate", HIBERNATE)


def test_hibernation_failed_twice_on_an_active_vm_leaves_it_serving_both_times(walk):
    hibernating(walk)
    event = {**walk.vm(), "error": catch(HibernationRefused("Hyperstack answered 500"))}

    first, second = (walk.step("hibernation_failed", HIBERNATE, **event) for _ in range(2))

    assert first == _answer(second) == {"outcome": "serving"} and second[REPEATED]
    assert row(walk.replica_id).vm_status == statuses.SUCCESS and list(walk.hyperstack.vms) == [walk.vm_id]


def test_hibernation_refused_twice_leaves_it_serving_with_hibernation_off(walk):
    hibernating(walk)
    event = {"error": catch(HibernationRefused("Hyperstack refused: this flavor cannot hibernate"))}

    first, second = (walk.step("hibernation_refused", HIBERNATE, **event) for _ in range(2))

    replica = row(walk.replica_id)
    assert first == _answer(second) and second[REPEATED]
    assert replica.vm_status == statuses.SUCCESS and replica.hibernate_after_seconds is None


def test_compensation_twice_deletes_the_vm_once_and_fails_the_replica(walk):
    walked(walk, PROVISION[:3])
    error = {"error": catch(RuntimeError("The model never answered"))}

    for _ in range(2):
        walk.step("delete_vm", CREATE, **walk.vm())
    for _ in range(2):
        walk.step("mark_failed", CREATE, **walk.vm(), **error)

    assert walk.hyperstack.vms == {} and row(walk.replica_id).vm_status == statuses.FAILED


def test_teardown_twice_leaves_no_vm_and_no_row(api, walk):
    serving(walk)
    assert api.delete(f"/v1/replicas/{walk.replica_id}").status == 204

    for _ in range(2):
        walk.step("teardown", CREATE)

    assert walk.hyperstack.vms == {} and row(walk.replica_id) is None


def test_a_drain_that_found_the_replica_used_twice_leaves_it_serving_both_times(walk):
    hibernating(walk)
    mark_used(walk.replica_id, 10**8)  # a request routed from a cache read before the replica was marked
    event = {"if_idle": True, "last_used_minute": None, "drain_poll_seconds": 0, "polls": 0}

    for _ in range(2):
        with pytest.raises(NotIdle):
            walk.step("check_drained", HIBERNATE, **event)

    assert row(walk.replica_id).vm_status == statuses.SUCCESS and list(walk.hyperstack.vms) == [walk.vm_id]


def test_a_wake_failed_twice_on_a_vm_still_there_keeps_it_and_the_replica_waking(walk):
    hibernating(walk)
    walked(walk, HIBERNATION[1:] + WAKING[:2])
    walk.hyperstack.set_vm(walk.vm_id, "RESTORING")

    first, second = (walk.step("wake_failed", WAKE, **walk.vm()) for _ in range(2))

    assert first == second == {"outcome": "unsettled", "vm_status": "RESTORING"}
    assert row(walk.replica_id).vm_status == statuses.WAKING and list(walk.hyperstack.vms) == [walk.vm_id]


# The steps off the paths: compensation, refusals and teardown, run twice by the tests above; and the
# teardown's create_ended (a read), stop_create (stops a running execution only) and mark_delete_failed
# (a move from DELETING, which a second delivery finds done and leaves), tested in test_teardown_races.py
# and test_provisioning_tasks.py.
BRANCH_STEPS = {"hibernation_failed", "hibernation_refused", "delete_vm", "mark_failed", "teardown", "wake_failed",
                "create_ended", "stop_create", "mark_delete_failed"}


def test_every_workflow_step_is_run_twice_by_this_module():
    on_paths = {name for steps, _ in PATHS.values() for name, *_ in steps}

    assert set(STEPS_WITH_HYPERSTACK) | set(STEPS_WITHOUT_HYPERSTACK) == on_paths | BRANCH_STEPS
