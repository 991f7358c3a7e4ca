"""How the workflows end, as metrics: WORKFLOW_OUTCOMES by Workflow and Outcome, and WORKFLOW_FAILURES.

A workflow ends in the step before its Succeed or Fail state (infra/*.asl.json), so the step that
returned says how it ended:

- create (provisioning.asl.json, action create): `mark_ready` succeeded; `mark_failed` (after compensation) failed;
- delete (provisioning.asl.json, action delete): `teardown` succeeded; `mark_delete_failed` failed;
- hibernate: `mark_hibernated` succeeded, and so did a `hibernation_failed` that found the VM hibernated after
  all; `hibernation_refused` (its flavor cannot), a `hibernation_failed` that leaves the replica serving or
  unsettled (the execution ends interrupted, and the idle check takes it over), and `mark_failed` after
  compensation failed;
- wake: `mark_awake` succeeded; a `wake_failed` that leaves the replica unsettled (interrupted), and
  `mark_failed` after compensation, failed.

`mark_failed` ends all three compensations: its workflow is read from the state machine's name in the
execution ARN every Task is given (`...:execution:<state machine>:<execution>`, the state machine named
`...-hibernate`, `...-wake` or `...-provisioning`, locally `hibernate`, `wake`, `provisioning`). Endings
without a step of their own (the replica deleted meanwhile, or moved on) are counted by no workflow:
another one owns the replica then.

Each ending is counted once: a step delivered again (Step Functions retries a Lambda task whose invocation may
have run) finds its ending already made, answers as before plus `repeated`, and is not counted again; so is a
teardown that finds the rows already gone (another teardown, beside it, counted them). A `wake_failed` moves
nothing, so a second delivery of it is counted again.
"""

from __future__ import annotations

from typing import Any

from chalicelib.core import metric_names as names
from chalicelib.core.observability import COUNT, emit_metrics

CREATE, DELETE, HIBERNATE, WAKE = "create", "delete", "hibernate", "wake"
REPEATED = "repeated"  # in a step's answer: its ending was made before (by its own earlier delivery)

_ENDINGS = {
    "mark_ready": (CREATE, names.SUCCEEDED),
    "teardown": (DELETE, names.SUCCEEDED),
    "mark_delete_failed": (DELETE, names.FAILED),
    "mark_hibernated": (HIBERNATE, names.SUCCEEDED),
    "hibernation_refused": (HIBERNATE, names.FAILED),
    "mark_awake": (WAKE, names.SUCCEEDED),
}


def ending(step: str, event: dict[str, Any], result: dict[str, Any]) -> tuple[str, str] | None:
    """(workflow, outcome) if `step`, having returned `result`, ends its workflow; None otherwise."""
    if step == "mark_failed":
        return workflow_of(event), names.FAILED
    if step in ("hibernation_failed", "wake_failed"):
        outcome = result.get("outcome")
        if outcome == "lost":
            return None  # compensation follows, and its mark_failed counts
        workflow = HIBERNATE if step == "hibernation_failed" else WAKE
        return workflow, names.SUCCEEDED if outcome == "hibernated" else names.FAILED
    return _ENDINGS.get(step)


def workflow_of(event: dict[str, Any]) -> str:
    """The workflow of a `mark_failed`: the one its state machine runs (provisioning's compensates a create)."""
    arn = event.get("execution_arn")
    machine = arn.split(":")[-2] if isinstance(arn, str) and arn.count(":") >= 2 else ""
    if machine.endswith("hibernate"):
        return HIBERNATE
    if machine.endswith("wake"):
        return WAKE
    return CREATE


def repeated(already: bool) -> dict[str, Any]:
    """What an ending step adds to its answer: that it found its ending already made, if it did."""
    return {REPEATED: True} if already else {}


def record(step: str, event: dict[str, Any], result: dict[str, Any]) -> None:
    ended = None if result.get(REPEATED) else ending(step, event, result)
    if ended is None:
        return
    workflow, outcome = ended
    emit_metrics({names.WORKFLOW: workflow, names.OUTCOME: outcome}, [(names.WORKFLOW_OUTCOMES, COUNT, 1)])
    if outcome == names.FAILED:
        emit_metrics({}, [(names.WORKFLOW_FAILURES, COUNT, 1)])
