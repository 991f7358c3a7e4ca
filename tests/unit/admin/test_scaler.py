"""The scaler (chalicelib/admin/scaler.py): each autoscaled model brought to what its load needs.

Rows in moto's DynamoDB; the hibernate and wake executions recorded (the `executions` fixture), creates started
on moto's provisioning state machine. Replicas the scaler makes are moved on by hand where a test needs them
serving.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib.admin import scaler
from chalicelib.core import replica_statuses as statuses
from chalicelib.provisioning import workflow
from chalicelib.provisioning.power import REFUSED_REASON
from chalicelib.store import model_load
from chalicelib.store.tables import LlmModel, Replica
from tests.unit.conftest import VM_DETAILS
from tests.unit.provisioning.test_hibernation import hibernated, serving

NOW = 29_000_000 * 60.0 + 30  # half-way through some minute





def autoscale(api, model_id: int, **changes: Any) -> None:
    body = {"min_replicas": 1, "max_replicas": 3, "target_requests_per_minute": 60, "scale_in_after_seconds": 300,
            "vm_creation_details": {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_value"}}, **changes}
    reply = api.put(f"/v1/models/{model_id}/autoscaling", body)
    assert reply.status == 200, reply.json


def replicas_of(model_id: int) -> list[Replica]:
    return sorted((r for r in Replica.scan(consistent_read=True) if r.model_id == model_id), key=lambda r: r.id)


def autoscaled(model_id: int) -> list[Replica]:
    return [replica for replica in replicas_of(model_id) if replica.scale_slot is not None]


def become(replica_id: int, status: str, **fields: Any) -> None:
    """Move a replica on as its workflow would (SUCCESS: serving at an endpoint since a while ago)."""
    if status == statuses.SUCCESS:
        fields = {"endpoint": f"http://127.0.0.{replica_id}:8000/v1", "vm_id": 7000 + replica_id,
                  "serving_since": int(NOW) - 3600, **fields}
    Replica(replica_id).update(actions=[Replica.vm_status.set(status),
                                        *(getattr(Replica, k).set(v) for k, v in fields.items())])


def load(model_id: int, requests: int) -> None:
    model_load.count(model_id, NOW - 5, requests=requests)


def state_of(model_id: int) -> dict[str, Any]:
    model = next(m for m in LlmModel.scan(consistent_read=True) if m.id == model_id)
    return model.scaling_state.as_dict()


def test_min_replicas_brings_up_a_replica_from_the_template_marked_autoscaled(api, model_id, executions):
    autoscale(api, model_id)

    scaler.run(NOW)

    [made] = autoscaled(model_id)
    assert made.vm_status == statuses.PENDING and made.flavor_name == VM_DETAILS["flavor_name"]
    assert made.secret_names == ["HF_TOKEN"]
    assert api.get(f"/v1/models/{model_id}/replicas").json[0]["autoscaled"] is True
    assert state_of(model_id)["desired"] == 1 and state_of(model_id)["created"] == [made.id]


def test_a_second_run_while_the_first_replica_starts_makes_no_more(api, model_id, executions):
    autoscale(api, model_id)

    scaler.run(NOW)
    scaler.run(NOW + 60)

    assert len(autoscaled(model_id)) == 1


def test_load_over_the_target_adds_replicas_up_to_max_replicas(api, model_id, executions):
    autoscale(api, model_id, max_replicas=3)
    scaler.run(NOW)
    become(autoscaled(model_id)[0].id, statuses.SUCCESS)
    load(model_id, 600)  # ten replicas' worth

    scaler.run(NOW)

    assert len(autoscaled(model_id)) == 3
    assert "at max_replicas (3)" in state_of(model_id)["reason"]


def test_replicas_made_by_hand_count_against_max_replicas(api, model_id, executions):
    api.create_replica(model_id)
    api.create_replica(model_id, endpoint="http://10.0.0.2:8000/v1")
    autoscale(api, model_id, min_replicas=0, max_replicas=3)
    load(model_id, 600)

    scaler.run(NOW)

    assert len(autoscaled(model_id)) == 1


def test_runs_that_read_the_same_replicas_never_exceed_max_replicas(api, model_id, executions):
    """Runs that overlap all read the fleet before any of them made a replica: each acts on the same stale
    (empty) fleet, one after another here (moto in this process is not atomic under threads; DynamoDB's
    transactions are), and only the slots written with each replica stand between them and a fourth VM."""
    autoscale(api, model_id, max_replicas=3)
    load(model_id, 6000)
    stale: list[Replica] = []
    made_by_run = []
    for _ in range(4):
        model = next(m for m in LlmModel.scan(consistent_read=True) if m.id == model_id)
        settings = scaler.scaling_settings(model.autoscaling.as_dict())
        acted = {"woken": [], "created": [], "hibernating": [], "deleted": []}
        scaler._act(model, scaler.decide(6000, scaler.fleet_of(stale), settings, None, NOW), stale, settings, NOW,
                    acted)
        made_by_run.append(len(acted["created"]))

    made = autoscaled(model_id)
    assert made_by_run == [3, 0, 0, 0]
    assert len(made) == 3 and sorted(r.scale_slot for r in made) == [1, 2, 3]


def test_a_run_holding_the_models_lease_keeps_another_from_acting(api, model_id, executions):
    autoscale(api, model_id)
    model = next(m for m in LlmModel.scan(consistent_read=True) if m.id == model_id)
    LlmModel(model.name).update(actions=[LlmModel.scaler_lease_until.set(int(NOW) + 60)])

    assert scaler.run(NOW) == {}
    assert autoscaled(model_id) == []
    assert scaler.run(NOW + 61) != {}  # a lease outlived (its run died) frees the model
    assert len(autoscaled(model_id)) == 1


def test_hibernated_replicas_wake_before_any_is_made(api, model_id, hyperstack, executions):
    asleep, _ = hibernated(api, model_id, hyperstack)
    autoscale(api, model_id, min_replicas=1)

    scaler.run(NOW)

    assert [e["name"].rsplit("-", 1)[0] for e in executions if "wake" in e["name"]] == [f"replica-{asleep}-wake"]
    assert autoscaled(model_id) == []
    assert state_of(model_id)["woken"] == [asleep]


def test_a_wake_already_asked_is_not_asked_again(api, model_id, hyperstack, executions):
    hibernated(api, model_id, hyperstack)
    autoscale(api, model_id, min_replicas=1)

    scaler.run(NOW)
    scaler.run(NOW + 60)

    assert sum("wake" in e["name"] for e in executions) == 1


def test_load_below_the_need_scales_in_only_after_scale_in_after_seconds(api, model_id, executions):
    autoscale(api, model_id, min_replicas=1, max_replicas=3, scale_in_after_seconds=300)
    load(model_id, 150)
    scaler.run(NOW)
    for replica in autoscaled(model_id):
        become(replica.id, statuses.SUCCESS)
    model_load.count(model_id, NOW + 600, requests=0)  # the load stops

    scaler.run(NOW + 600)
    assert not any("scale-in" in e["name"] for e in executions)
    scaler.run(NOW + 600 + 299)
    assert not any("scale-in" in e["name"] for e in executions)
    scaler.run(NOW + 600 + 300)

    newest = autoscaled(model_id)[-1]
    assert [e["name"] for e in executions if "scale-in" in e["name"]] == \
        [f"replica-{newest.id}-scale-in-{int(NOW) - 3600}"]
    assert executions[-1]["input"]["if_idle"] is False  # drained, then hibernated: busy or not


def test_scale_in_never_goes_below_min_replicas(api, model_id, executions):
    autoscale(api, model_id, min_replicas=1, scale_in_after_seconds=1)
    scaler.run(NOW)
    become(autoscaled(model_id)[0].id, statuses.SUCCESS)

    scaler.run(NOW + 600)
    scaler.run(NOW + 1200)

    assert not any("scale-in" in e["name"] for e in executions)


def test_min_replicas_zero_scales_a_model_to_zero(api, model_id, executions):
    autoscale(api, model_id, min_replicas=0, scale_in_after_seconds=60)
    load(model_id, 30)
    scaler.run(NOW)
    [made] = autoscaled(model_id)
    become(made.id, statuses.SUCCESS)

    scaler.run(NOW + 120)
    scaler.run(NOW + 200)

    assert [e["name"] for e in executions if "scale-in" in e["name"]] == [
        f"replica-{made.id}-scale-in-{int(NOW) - 3600}"]


def test_hand_made_replicas_are_hibernated_never_deleted(api, model_id, hyperstack, executions):
    by_hand, _ = serving(api, model_id, hyperstack, serving_since=int(NOW) - 3600,
                         error_message=REFUSED_REASON.format(reason="flavor"))
    other, _ = serving(api, model_id, hyperstack, serving_since=int(NOW) - 3600)
    autoscale(api, model_id, min_replicas=0, scale_in_after_seconds=1)

    scaler.run(NOW)
    scaler.run(NOW + 10)

    assert {r.id: r.vm_status for r in replicas_of(model_id)} == {by_hand: statuses.SUCCESS,
                                                                   other: statuses.SUCCESS}
    assert [e["name"] for e in executions] == [f"replica-{other}-scale-in-{int(NOW) - 3600}"]


def test_an_autoscaled_replica_that_cannot_hibernate_is_deleted_on_scale_in(api, model_id, executions):
    autoscale(api, model_id, min_replicas=0, scale_in_after_seconds=1)
    load(model_id, 30)
    scaler.run(NOW)
    [made] = autoscaled(model_id)
    become(made.id, statuses.SUCCESS, error_message=REFUSED_REASON.format(reason="flavor"))

    scaler.run(NOW + 120)
    scaler.run(NOW + 130)

    assert Replica.get(made.id, consistent_read=True).vm_status == statuses.DELETING
    assert state_of(model_id)["deleted"] == [made.id]


def fail_two_creates(api, model_id: int, reason: str) -> None:
    """The scaler makes a replica twice, and each fails to provision with `reason`; a third run sees them."""
    autoscale(api, model_id, min_replicas=1)
    for attempt in range(2):
        scaler.run(NOW + attempt * 60)
        [made] = [r for r in autoscaled(model_id) if r.vm_status == statuses.PENDING]
        become(made.id, statuses.FAILED, error_message=reason)
    scaler.run(NOW + 120)


def test_creates_that_fail_back_off_and_the_state_says_why(api, model_id, executions):
    fail_two_creates(api, model_id, "The model never answered: bad run_command")

    assert [r.vm_status for r in autoscaled(model_id)] == [statuses.DELETING, statuses.DELETING]
    reason = state_of(model_id)["reason"]
    assert "not creating: 2 creates failed" in reason and "bad run_command" in reason
    assert api.get(f"/v1/models/{model_id}/autoscaling").json["state"]["failed_creates"][0]["reason"] == \
        "The model never answered: bad run_command"
    scaler.run(NOW + 180)
    assert len(autoscaled(model_id)) == 2  # still backing off: nothing made


def test_a_new_template_is_tried_afresh(api, model_id, executions):
    fail_two_creates(api, model_id, "bad run_command")

    autoscale(api, model_id, min_replicas=1, vm_creation_details={**VM_DETAILS, "run_command": "vllm serve x"})
    scaler.run(NOW + 180)

    assert any(r.vm_status == statuses.PENDING for r in autoscaled(model_id))


def test_a_model_being_deleted_is_not_scaled(api, model_id, executions):
    autoscale(api, model_id)
    model = next(m for m in LlmModel.scan(consistent_read=True) if m.id == model_id)
    LlmModel(model.name).update(actions=[LlmModel.deleting.set(True)])

    assert scaler.run(NOW) == {}
    assert autoscaled(model_id) == []


def test_a_model_without_autoscaling_is_left_alone(api, model_id, executions):
    load(model_id, 6000)

    assert scaler.run(NOW) == {}
    assert replicas_of(model_id) == []


def test_a_deployment_without_its_workflows_does_nothing_and_says_so(api, model_id, monkeypatch, log_lines):
    from chalicelib.core.settings import get_provision_settings, get_settings

    autoscale(api, model_id)
    monkeypatch.delenv("WAKE_STATE_MACHINE_ARN")
    monkeypatch.delenv("WORKFLOW_NAME_PREFIX", raising=False)  # Chalice's test client leaves the stage's
    monkeypatch.setattr(workflow, "_said_missing", set())
    get_provision_settings.cache_clear()
    get_settings.cache_clear()
    try:
        first, second = scaler.run(NOW), scaler.run(NOW + 60)
    finally:
        monkeypatch.undo()
        get_provision_settings.cache_clear()
        get_settings.cache_clear()

    assert first == second == {"missing": ["wake"]}
    assert autoscaled(model_id) == []
    assert sum("no workflows" in line["message"] for line in log_lines()) == 1


@pytest.mark.parametrize("when", [NOW, NOW + 0.5])
def test_each_run_records_its_decision_and_time(api, model_id, executions, when):
    autoscale(api, model_id, min_replicas=2)

    scaler.run(when)

    described = api.get(f"/v1/models/{model_id}/autoscaling").json["state"]
    assert described["desired_replicas"] == 2 and described["starting"] == 2
    assert described["decided_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(when)))
    assert "needs 2" in described["reason"]


def test_the_idle_check_hibernates_an_autoscaled_models_idle_replicas_only_down_to_min_replicas(
        api, model_id, hyperstack, executions):
    from chalicelib.provisioning import idle_check

    now = time.time()
    idle = {"hibernate_after_seconds": 60, "serving_since": int(now) - 3600}
    first, _ = serving(api, model_id, hyperstack, **idle)
    second, _ = serving(api, model_id, hyperstack, **idle)
    third, _ = serving(api, model_id, hyperstack, **idle)
    autoscale(api, model_id, min_replicas=2)
    elsewhere = api.create_model("org/unscaled")
    unscaled, _ = serving(api, elsewhere, hyperstack, **idle)

    hibernating = idle_check.run(now)["hibernating"]

    assert len(set(hibernating) & {first, second, third}) == 1 and unscaled in hibernating


def test_a_replica_serving_for_less_than_scale_in_after_seconds_is_not_scaled_in(api, model_id, executions):
    autoscale(api, model_id, min_replicas=0, scale_in_after_seconds=300)
    load(model_id, 30)
    scaler.run(NOW)
    [made] = autoscaled(model_id)
    become(made.id, statuses.SUCCESS, serving_since=int(NOW) + 500)  # woken a moment before the run below

    scaler.run(NOW + 400)
    scaler.run(NOW + 700)

    assert not any("scale-in" in e["name"] for e in executions)
    scaler.run(NOW + 800)
    assert [e["name"] for e in executions if "scale-in" in e["name"]] == [
        f"replica-{made.id}-scale-in-{int(NOW) + 500}"]


def test_time_below_the_need_counts_from_when_no_replica_is_starting_or_waking(api, model_id, executions):
    autoscale(api, model_id, min_replicas=0, max_replicas=2, scale_in_after_seconds=300)
    load(model_id, 90)
    scaler.run(NOW)
    first, second = autoscaled(model_id)
    become(first.id, statuses.SUCCESS)
    become(second.id, statuses.WAKING)

    scaler.run(NOW + 600)  # no load: below the need, but one still wakes
    assert state_of(model_id)["below_since"] is None
    become(second.id, statuses.SUCCESS)
    scaler.run(NOW + 660)

    assert state_of(model_id)["below_since"] == NOW + 660


def test_an_act_that_fails_still_leaves_the_failed_creates_it_tore_down_remembered(api, model_id, executions,
                                                                                   monkeypatch):
    from chalicelib.admin import replicas as replica_admin

    autoscale(api, model_id, min_replicas=1)
    scaler.run(NOW)
    [made] = autoscaled(model_id)
    become(made.id, statuses.FAILED, error_message="bad run_command")

    def unreachable(*_: Any, **__: Any) -> int:
        raise RuntimeError("DynamoDB unreachable")

    monkeypatch.setattr(replica_admin, "create_provisioned", unreachable)
    scaler.run(NOW + 60)  # tears the failed one down, then fails to create: logged, the run goes on

    state = state_of(model_id)
    assert [f["replica_id"] for f in state["failures"]] == [made.id] and state["deleted"] == [made.id]
    assert LlmModel.get("meta-llama/Llama-3.1-8B-Instruct").scaler_lease_until is None  # the lease is given back
