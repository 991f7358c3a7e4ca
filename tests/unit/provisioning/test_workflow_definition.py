"""The workflows' definitions, checked offline: asl-validator and the rules every workflow keeps
(infra/provisioning.asl.json, infra/hibernate.asl.json, infra/wake.asl.json), then provisioning's own.

A definition is what `make package` inlines into the stack and what the local stack runs under
moto, so a mistake here is a mistake everywhere; tests/integration/test_workflow_local.py runs
provisioning's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.provisioning import errors
from chalicelib.provisioning.errors import HibernationRefused, HyperstackRetryable, ProvisioningFailed, ReplicaGone
from chalicelib.provisioning.workflow import execution_input
from tests.conftest import missing_prerequisite

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFINITION = REPO_ROOT / "infra" / "provisioning.asl.json"
# Every workflow the stack deploys (infra/template.json); each Task of each invokes the provision function.
WORKFLOWS = ("provisioning", "hibernate", "wake")
ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"
FUNCTION_ARN = "${ProvisionFunctionArn}"
# Lambda's own transient failures, which every Task retries whatever its step.
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                 "Lambda.TooManyRequestsException"}
# The error names Retry and Catch may match: Step Functions' and Lambda's, or a task exception's class name.
TASK_ERRORS = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}

CREATE_STEPS = {"start_create", "create_vm", "check_vm", "check_model", "mark_ready"}
COMPENSATION_STEPS = {"delete_vm", "mark_failed"}
DELETE_STEPS = {"create_ended", "stop_create", "teardown", "mark_delete_failed"}
HYPERSTACK_STEPS = {"create_vm", "check_vm", "check_model", "delete_vm", "teardown"}
# The task code's exceptions are the error names (their class names) that Retry and Catch match.
RETRYABLE = HyperstackRetryable.__name__
NOT_RETRIED = {ProvisioningFailed.__name__, ReplicaGone.__name__, HibernationRefused.__name__, "States.ALL",
               "States.TaskFailed"}
# Where every failure must lead (the compensation's first state, and the delete path's).
COMPENSATION = "Delete VM"
DELETE_FAILED = "Mark delete failed"
# Bad input: nothing was done, so there is nothing to compensate.
INPUT_ERROR = "Unknown action"


def _path(workflow: str) -> Path:
    return REPO_ROOT / "infra" / f"{workflow}.asl.json"


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text())


@pytest.fixture(scope="module", params=WORKFLOWS)
def workflow(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each workflow's definition, for the rules they all keep."""
    return json.loads(_path(request.param).read_text())


def _dispatched_steps() -> tuple[set[str], set[str]]:
    """The steps chalicelib.provisioning.tasks.handle runs: all of them, and those that call Hyperstack."""
    from chalicelib.provisioning import tasks

    hyperstack = set(tasks.STEPS_WITH_HYPERSTACK)
    return hyperstack | set(tasks.STEPS_WITHOUT_HYPERSTACK), hyperstack


@pytest.fixture(scope="module")
def states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return definition["States"]


def _tasks(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Task states, by the step they ask the provision function for."""
    return {s["Parameters"]["step"]: s for s in states.values() if s["Type"] == "Task"}


def _hyperstack_retrier(task: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in task["Retry"] if RETRYABLE in r["ErrorEquals"])


def _retry_budget(retrier: dict[str, Any]) -> float:
    """The longest total wait of a retrier's attempts (jitter only shortens them)."""
    cap, first, rate = retrier.get("MaxDelaySeconds", float("inf")), retrier["IntervalSeconds"], retrier["BackoffRate"]
    return sum(min(cap, first * rate**n) for n in range(retrier["MaxAttempts"]))


def _successors(state: dict[str, Any]) -> Iterator[str]:
    if "Next" in state:
        yield state["Next"]
    if "Default" in state:
        yield state["Default"]
    for choice in state.get("Choices", []):
        yield choice["Next"]
    for catcher in state.get("Catch", []):
        yield catcher["Next"]


def _reachable(states: dict[str, dict[str, Any]], start: str, removed: frozenset[str] = frozenset()) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in removed:
            continue
        seen.add(name)
        todo.extend(_successors(states[name]))
    return seen


# --- the rules every workflow keeps ----------------------------------------------------------------


@pytest.mark.parametrize("workflow_name", WORKFLOWS)
def test_asl_validator_accepts_the_definition(workflow_name: str) -> None:
    if not ASL_VALIDATOR.exists():
        missing_prerequisite("asl-validator (node_modules)", "run `npm ci` (make test does)")
    result = subprocess.run([str(ASL_VALIDATOR), "--json-path", str(_path(workflow_name))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"asl-validator:\n{result.stdout}\n{result.stderr}"


def test_the_definition_uses_jsonpath_only(workflow: dict[str, Any]) -> None:
    # moto's interpreter (the local stack) runs neither JSONata nor variables.
    assert workflow.get("QueryLanguage", "JSONPath") == "JSONPath"
    for name, state in workflow["States"].items():
        assert state.get("QueryLanguage", "JSONPath") == "JSONPath", name
        assert not {"Assign", "Arguments", "Output"} & set(state), name


def test_every_transition_names_a_state_and_every_state_is_reachable(workflow: dict[str, Any]) -> None:
    states = workflow["States"]
    for name, state in states.items():
        for target in _successors(state):
            assert target in states, f"{name} goes to unknown state {target!r}"
    assert _reachable(states, workflow["StartAt"]) == set(states)


def test_every_task_invokes_the_provision_function_with_a_step_it_runs(workflow: dict[str, Any]) -> None:
    known, _ = _dispatched_steps()
    tasks = [s for s in workflow["States"].values() if s["Type"] == "Task"]
    assert tasks
    for task in tasks:
        assert task["Resource"] == FUNCTION_ARN
        assert task["Parameters"]["replica_id.$"] == "$.replica_id"
        assert task["Parameters"]["step"] in known, f"tasks.handle runs no step {task['Parameters']['step']!r}"


def test_every_task_retries_lambda_errors_and_hyperstack_steps_retry_with_backoff(workflow: dict[str, Any]) -> None:
    _, hyperstack = _dispatched_steps()
    for name, task in workflow["States"].items():
        if task["Type"] != "Task":
            continue
        step, retriers = task["Parameters"]["step"], task.get("Retry", [])
        assert any(LAMBDA_ERRORS <= set(r["ErrorEquals"]) for r in retriers), name
        retried = {error for retrier in retriers for error in retrier["ErrorEquals"]}
        assert not retried & NOT_RETRIED, f"{name} retries {retried & NOT_RETRIED}"
        if step in hyperstack:
            retrier = _hyperstack_retrier(task)
            assert retrier["MaxAttempts"] >= 5 and retrier["BackoffRate"] > 1, name


def test_every_error_name_is_the_platforms_or_a_task_exception_and_catches_keep_the_input(
    workflow: dict[str, Any],
) -> None:
    for name, state in workflow["States"].items():
        for rule in [*state.get("Retry", []), *state.get("Catch", [])]:
            for error in rule["ErrorEquals"]:
                assert error.startswith(("States.", "Lambda.")) or error in TASK_ERRORS, f"{name}: {error}"
        for catcher in state.get("Catch", []):
            # The error goes beside the input, never over it: compensation still needs replica_id and vm.
            assert catcher["ResultPath"].startswith("$."), name
        catch_all = [c for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
        assert not catch_all or state["Catch"][-1] is catch_all[0], f"{name}: States.ALL must come last"


# Where each workflow's polling timings come from: the execution input (the starters pass them), or for a
# wake, which the chat function may start with the replica id alone, the result of its first step (`$.vm`).
TIMINGS_FROM = {"provisioning": "$.", "hibernate": "$.", "wake": "$.vm."}


@pytest.mark.parametrize("workflow_name", sorted(TIMINGS_FROM))
def test_polling_waits_and_their_bounds_come_from_the_input_or_the_first_step(workflow_name: str) -> None:
    prefix = TIMINGS_FROM[workflow_name]
    given = {prefix + field for field in execution_input("create", 1)}
    states = json.loads(_path(workflow_name).read_text())["States"]
    for name, state in states.items():
        if state["Type"] == "Wait":
            assert state["SecondsPath"] in given, name
            # Every loop back into a Wait passes a Choice that gives up after a maximum number of polls.
            loop_choices = [s for s in states.values() if s["Type"] == "Choice" and s.get("Default") == name]
            assert len(loop_choices) == 1, name
            bounds = [rule["NumericGreaterThanEqualsPath"] for rule in loop_choices[0]["Choices"]
                      if "NumericGreaterThanEqualsPath" in rule]
            assert bounds and all(bound in given for bound in bounds), name


# --- provisioning's own rules ----------------------------------------------------------------------


def test_every_provisioning_step_has_one_task(states: dict[str, dict[str, Any]]) -> None:
    steps = [s["Parameters"]["step"] for s in states.values() if s["Type"] == "Task"]
    assert sorted(steps) == sorted(CREATE_STEPS | COMPENSATION_STEPS | DELETE_STEPS), "one Task per step"


def test_provisioning_hyperstack_steps_retry_with_backoff(states: dict[str, dict[str, Any]]) -> None:
    tasks = _tasks(states)
    for step in HYPERSTACK_STEPS:  # check_model too: the model's health check retries like Hyperstack's calls
        retrier = _hyperstack_retrier(tasks[step])
        assert retrier["MaxAttempts"] >= 5 and retrier["BackoffRate"] > 1, step
    # Nobody retries the compensation's VM deletion after the workflow, so it tries for longest; the
    # teardown as long: Hyperstack refuses (409) to delete a VM still building, for minutes.
    budgets = {step: _retry_budget(_hyperstack_retrier(tasks[step])) for step in HYPERSTACK_STEPS}
    assert budgets["delete_vm"] == budgets["teardown"] == max(budgets.values())


def test_every_create_step_fails_into_compensation_with_the_error_at_error(states: dict[str, dict[str, Any]]) -> None:
    tasks = _tasks(states)
    expected = {step: COMPENSATION for step in CREATE_STEPS} | {
        step: DELETE_FAILED for step in ("create_ended", "stop_create", "teardown")}
    for step, target in expected.items():
        assert tasks[step]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": target}], step
    # A VM that cannot be deleted is still reported: compensation goes on with that error at $.cleanup.
    assert [c["ResultPath"] for c in tasks["delete_vm"]["Catch"]] == ["$.cleanup"]
    assert tasks["mark_failed"]["Parameters"]["error.$"] == "$.error"
    assert tasks["mark_failed"]["Parameters"]["cleanup.$"] == "$.cleanup"
    assert tasks["mark_delete_failed"]["Parameters"]["error.$"] == "$.error"
    # After the VM's deletion, a replica deleted meanwhile is not marked: it has no row left.
    after_delete = states[tasks["delete_vm"]["Next"]]
    assert tasks["delete_vm"]["Catch"][0]["Next"] == tasks["delete_vm"]["Next"]
    assert ReplicaGone.__name__ in json.dumps(after_delete["Choices"])
    assert after_delete["Default"] == next(name for name, s in states.items() if s is tasks["mark_failed"])


def test_errors_detected_by_choices_set_error_and_go_to_compensation(states: dict[str, dict[str, Any]]) -> None:
    reasons = [s for s in states.values() if s["Type"] == "Pass" and s.get("ResultPath") == "$.error"]
    assert len(reasons) == 3  # VM in ERROR, VM never ACTIVE, model never healthy
    for reason in reasons:
        assert reason["Next"] == COMPENSATION
        assert {"Error", "Cause.$"} <= set(reason["Parameters"])


def test_every_failure_path_goes_through_compensation_or_mark_delete_failed(
    definition: dict[str, Any], states: dict[str, dict[str, Any]]
) -> None:
    fails = {name for name, state in states.items() if state["Type"] == "Fail"}
    without_compensation = _reachable(states, definition["StartAt"], frozenset({COMPENSATION, DELETE_FAILED}))
    assert fails & without_compensation == {INPUT_ERROR}
    # ... and compensation itself always ends: in a Fail state, or in Succeed for a replica deleted meanwhile.
    for start in (COMPENSATION, DELETE_FAILED):
        ends = {n for n in _reachable(states, start) if states[n]["Type"] in ("Succeed", "Fail")}
        assert ends and "Replica ready" not in ends, start


def test_polling_waits_come_from_the_input_and_loops_are_bounded(states: dict[str, dict[str, Any]]) -> None:
    waits = {name: s for name, s in states.items() if s["Type"] == "Wait"}
    assert sorted(w["SecondsPath"] for w in waits.values()) == [
        "$.model_poll_seconds", "$.poll_seconds", "$.poll_seconds"]
    bounds = {
        rule["NumericGreaterThanEqualsPath"]
        for state in states.values() if state["Type"] == "Choice"
        for rule in state["Choices"] if "NumericGreaterThanEqualsPath" in rule
    }
    assert bounds == {"$.max_polls", "$.max_model_polls", "$.max_create_waits"}
    for name in waits:
        # Every loop back into a Wait passes a Choice that gives up after the maximum number of polls.
        loop_choices = [s for s in states.values() if s["Type"] == "Choice" and s.get("Default") == name]
        assert len(loop_choices) == 1, name
        assert any("NumericGreaterThanEqualsPath" in rule for rule in loop_choices[0]["Choices"]), name
