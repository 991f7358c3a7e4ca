"""The CloudWatch metrics each function emits (chalicelib.core.metric_names): one embedded metric format line per
dimension set on stdout, with exactly the contract's dimensions (Stage always, Powertools' `service` never).

Chat requests go through `service.handle` against replicas served on localhost (DynamoDB in moto); workflow
steps through `tasks.handle`; the reconciler against an in-memory Hyperstack.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.chat import metering, routing, service
from chalicelib.chat.openai_errors import internal_error_response
from chalicelib.core import metric_names as names
from chalicelib.core import replica_statuses as statuses
from chalicelib.core.observability import METRICS_NAMESPACE
from chalicelib.core.settings import get_chat_settings, get_settings
from chalicelib.core.vm_naming import replica_vm_name
from chalicelib.provisioning import outcomes, tasks
from chalicelib.store.tables import Replica
from tests.unit.plain_replica import PlainReplica
from tests.unit.provisioning.test_provisioning_tasks import FakeHyperstack
from tests.unit.provisioning.test_reconciler import DEPLOYMENT, sweep
from tests.unit.provisioning.test_reconciler import FakeHyperstack as FakeReconcilerHyperstack

USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
ANSWER = {"id": "c1", "object": "chat.completion", "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
          "usage": USAGE}
MODEL_NUMBERS = itertools.count()
STATE_MACHINE = "arn:aws:states:us-east-1:123456789012:execution:hyperstack-llm-proxy-prod-{machine}:replica-9-x"
REPLICA_ID = 424242

# (dimension name, value) pairs of a line, in order -> {metric name: (unit, value)}
Emitted = dict[tuple[tuple[str, str], ...], dict[str, tuple[str, float]]]


# --- reading the lines ------------------------------------------------------------------------------


@pytest.fixture
def emitted(capsys) -> Callable[[], Emitted]:
    """The EMF lines printed so far, each checked against the format and keyed by its dimensions."""

    def read() -> Emitted:
        found: Emitted = {}
        for text in capsys.readouterr().out.splitlines():
            line = json.loads(text)
            (directive,) = line["_aws"]["CloudWatchMetrics"]
            (dimensions,) = directive["Dimensions"]
            assert directive["Namespace"] == METRICS_NAMESPACE
            assert dimensions[0] == names.STAGE and "service" not in line, line
            key = tuple((name, line[name]) for name in dimensions)
            assert key not in found, f"two lines for {key}"
            found[key] = {metric["Name"]: (metric["Unit"], _single(line[metric["Name"]]))
                          for metric in directive["Metrics"]}
        return found

    return read


def _single(value: Any) -> float:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def stage() -> tuple[str, str]:
    return names.STAGE, get_settings().stage


def dims(**dimensions: str) -> tuple[tuple[str, str], ...]:
    return (stage(), *dimensions.items())


# --- chat requests ----------------------------------------------------------------------------------


@pytest.fixture
def replica() -> Iterator[Callable[..., PlainReplica]]:
    started: list[PlainReplica] = []

    def start(status: int = 200, body: Any = ANSWER, content_type: str = "application/json") -> PlainReplica:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        started.append(PlainReplica(status, payload, content_type))
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture(autouse=True)
def fresh_routing(monkeypatch) -> Iterator[None]:
    """No replica remembered as failed from another test; replicas tried in the order they were created."""
    monkeypatch.setattr(routing, "_failed_at", {})
    monkeypatch.setattr(routing, "_rotation", itertools.repeat(0))
    monkeypatch.setenv("PREFIX_AFFINITY", "off")  # the order is the rotation's, not a prompt's
    get_chat_settings.cache_clear()
    yield
    get_chat_settings.cache_clear()


def model_served_by(api, *endpoints: str) -> str:
    name = f"metrics/model-{next(MODEL_NUMBERS)}"
    model_id = api.create_model(name)
    for endpoint in endpoints:
        api.create_replica(model_id, endpoint)
    return name


def ask(key: str, model: str, stream: bool = False, read_all: bool = True) -> service.ChatResponse:
    """One request through the chat service, answered (its body read, or its first piece) and closed."""
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).encode()
    response = service.handle({"authorization": f"Bearer {key}"}, body)
    if read_all:
        b"".join(response.body)
    else:
        next(iter(response.body))
    response.close()
    return response


def test_an_answered_request_counts_its_outcome_model_timings_and_tokens(api, replica, emitted):
    model = model_served_by(api, replica().endpoint)
    key = api.create_key()["api_key"]

    ask(key, model)

    lines = emitted()
    assert set(lines) == {dims(Outcome="2xx"), dims(Model=model, Outcome="2xx"), dims(Model=model)}
    assert lines[dims(Outcome="2xx")] == {names.CHAT_REQUESTS: ("Count", 1.0)}
    assert lines[dims(Model=model, Outcome="2xx")] == {names.CHAT_REQUESTS_BY_MODEL: ("Count", 1.0)}
    by_model = lines[dims(Model=model)]
    assert by_model[names.PROMPT_TOKENS] == ("Count", 3.0) and by_model[names.COMPLETION_TOKENS] == ("Count", 5.0)
    for timing in (names.TIME_TO_FIRST_TOKEN, names.CHAT_DURATION):
        unit, milliseconds = by_model[timing]
        assert unit == "Milliseconds" and 0 < milliseconds < 10_000
    assert by_model[names.TIME_TO_FIRST_TOKEN][1] <= by_model[names.CHAT_DURATION][1]


def test_metrics_come_after_the_usage_row(api, replica, emitted, monkeypatch):
    model = model_served_by(api, replica().endpoint)
    key = api.create_key()["api_key"]
    order = []
    write = metering.Meter.write
    monkeypatch.setattr(metering.Meter, "write", lambda meter: (order.append("row"), write(meter))[1])
    monkeypatch.setattr(service.request_metrics, "emit_metrics", lambda *_: order.append("metrics"))

    ask(key, model)

    assert order[0] == "row" and set(order[1:]) == {"metrics"}


def test_a_rate_limited_request_is_a_4xx_refused_for_rate_limit_exceeded_without_a_model(api, replica, emitted):
    model = model_served_by(api, replica().endpoint)
    key = api.create_key(allowed_rpm=1)["api_key"]
    ask(key, model)
    emitted()

    assert ask(key, model).status == 429

    assert emitted() == {dims(Outcome="4xx"): {names.CHAT_REQUESTS: ("Count", 1.0)},
                         dims(Reason="rate_limit_exceeded"): {names.CHAT_REFUSALS: ("Count", 1.0)}}


@pytest.mark.parametrize(("key", "reason"), [("hsk_unknown", "invalid_api_key"), (None, "insufficient_quota")])
def test_a_refused_key_counts_its_reason(api, replica, emitted, key, reason):
    model = model_served_by(api, replica().endpoint)
    if key is None:  # a key whose month's tokens are spent
        key = api.create_key(token_budget=1)["api_key"]
        ask(key, model)
        emitted()

    response = ask(key, model)

    assert response.status in (401, 429)
    assert emitted()[dims(Reason=reason)] == {names.CHAT_REFUSALS: ("Count", 1.0)}


def test_an_unknown_model_is_refused_and_its_name_never_becomes_a_dimension(api, emitted):
    key = api.create_key()["api_key"]

    assert ask(key, "no/such-model").status == 404

    assert set(emitted()) == {dims(Outcome="4xx"), dims(Reason="model_not_found")}


def test_a_body_against_the_schema_is_refused_as_an_invalid_request(api, emitted):
    key = api.create_key()["api_key"]

    response = service.handle({"authorization": f"Bearer {key}"}, b'{"model": "m", "messages": "hi"}')
    response.close()

    assert response.status == 400
    assert set(emitted()) == {dims(Outcome="4xx"), dims(Reason="invalid_request_error")}


def test_a_client_gone_mid_stream_is_a_499_and_no_refusal(api, replica, emitted):
    events = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n' + \
        b'data: {"choices":[],"usage":' + json.dumps(USAGE).encode() + b"}\n\ndata: [DONE]\n\n"
    model = model_served_by(api, replica(body=events, content_type="text/event-stream").endpoint)
    key = api.create_key()["api_key"]

    ask(key, model, stream=True, read_all=False)

    lines = emitted()
    assert set(lines) == {dims(Outcome="499"), dims(Model=model, Outcome="499"), dims(Model=model)}
    assert lines[dims(Outcome="499")] == {names.CHAT_REQUESTS: ("Count", 1.0)}


def test_a_failover_counts_the_failed_replica_and_the_failover(api, replica, emitted):
    model = model_served_by(api, replica(500, {"error": "boom"}).endpoint, replica().endpoint)
    key = api.create_key()["api_key"]

    ask(key, model)

    lines = emitted()
    assert lines[(stage(),)] == {names.REPLICA_FAILURES: ("Count", 1.0), names.FAILOVERS: ("Count", 1.0)}
    assert dims(Outcome="2xx") in lines


def test_every_replica_failing_is_a_5xx_refused_with_each_failure_counted_and_no_failover(api, replica, emitted):
    model = model_served_by(api, replica(500, {"error": "boom"}).endpoint, replica(503, {"error": "down"}).endpoint)
    key = api.create_key()["api_key"]

    assert ask(key, model).status == 502

    lines = emitted()
    assert lines[(stage(),)] == {names.REPLICA_FAILURES: ("Count", 2.0), names.FAILOVERS: ("Count", 0.0)}
    assert lines[dims(Reason="upstream_unavailable")] == {names.CHAT_REFUSALS: ("Count", 1.0)}
    assert lines[dims(Model=model, Outcome="5xx")] == {names.CHAT_REQUESTS_BY_MODEL: ("Count", 1.0)}


def test_a_replicas_own_4xx_is_a_4xx_but_not_a_refusal_of_the_proxy(api, replica, emitted):
    model = model_served_by(api, replica(400, {"error": {"message": "too long"}}).endpoint)
    key = api.create_key()["api_key"]

    assert ask(key, model).status == 400

    lines = emitted()
    assert set(lines) == {dims(Outcome="4xx"), dims(Model=model, Outcome="4xx"), dims(Model=model)}


def test_a_failure_of_the_proxys_own_is_a_5xx(emitted):
    response = internal_error_response()
    b"".join(response.body)
    response.close()

    assert emitted() == {dims(Outcome="5xx"): {names.CHAT_REQUESTS: ("Count", 1.0)},
                         dims(Reason="internal_error"): {names.CHAT_REFUSALS: ("Count", 1.0)}}


def test_a_powertools_service_name_adds_no_dimension(api, emitted, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "chat")

    internal_error_response().close()

    assert set(emitted()) == {dims(Outcome="5xx"), dims(Reason="internal_error")}


# --- workflows --------------------------------------------------------------------------------------


def step(name: str, machine: str = "provisioning", status: str = statuses.DELETING) -> dict[str, Any]:
    """An ending step of a replica in `status` whose VM is gone: each of these ends its workflow."""
    Replica(REPLICA_ID, model_id=1, vm_status=status, created_at=0, name="vm").save()
    return again(name, machine)


def again(name: str, machine: str = "provisioning") -> dict[str, Any]:
    """The step delivered (again) as it was."""
    return tasks.handle({"step": name, "replica_id": REPLICA_ID, "execution_arn": STATE_MACHINE.format(
        machine=machine)}, hyperstack=FakeHyperstack)


def outcome(workflow: str, result: str) -> dict[tuple[tuple[str, str], ...], dict[str, tuple[str, float]]]:
    counted = {dims(Workflow=workflow, Outcome=result): {names.WORKFLOW_OUTCOMES: ("Count", 1.0)}}
    if result == names.FAILED:
        counted[(stage(),)] = {names.WORKFLOW_FAILURES: ("Count", 1.0)}
    return counted


def test_a_finished_teardown_is_a_delete_that_succeeded_counted_once_if_delivered_again(aws, emitted):
    step("teardown")
    again("teardown")

    assert emitted() == outcome("delete", "succeeded")


def test_a_failed_teardown_is_a_delete_that_failed_and_a_workflow_failure_counted_once(aws, emitted):
    step("mark_delete_failed")
    again("mark_delete_failed")

    assert emitted() == outcome("delete", "failed")


@pytest.mark.parametrize(("machine", "workflow", "status"), [
    ("provisioning", "create", statuses.BOOTING), ("hibernate", "hibernate", statuses.HIBERNATING),
    ("wake", "wake", statuses.WAKING)])
def test_a_compensated_workflow_fails_as_its_state_machine_says_counted_once(aws, emitted, machine, workflow, status):
    step("mark_failed", machine, status)
    again("mark_failed", machine)

    assert emitted() == outcome(workflow, "failed")


def test_a_compensation_whose_replica_was_deleted_meanwhile_is_counted_by_no_workflow(aws, emitted):
    step("mark_failed", status=statuses.DELETING)

    assert emitted() == {}


def test_local_state_machine_names_say_the_workflow_too():
    arn = "arn:aws:states:us-east-1:123456789012:execution:{}:local-1"
    assert [outcomes.workflow_of({"execution_arn": arn.format(name)}) for name in ("provisioning", "hibernate", "wake")
            ] == ["create", "hibernate", "wake"]


def test_steps_that_end_no_workflow_emit_nothing(aws, emitted):
    step("create_ended")

    assert emitted() == {}


@pytest.mark.parametrize(("name", "result", "expected"), [
    ("mark_ready", {}, ("create", "succeeded")),
    ("mark_hibernated", {}, ("hibernate", "succeeded")),
    ("hibernation_refused", {"reason": "no"}, ("hibernate", "failed")),
    ("hibernation_failed", {"outcome": "serving"}, ("hibernate", "failed")),
    ("hibernation_failed", {"outcome": "hibernated"}, ("hibernate", "succeeded")),
    ("hibernation_failed", {"outcome": "unsettled"}, ("hibernate", "failed")),  # interrupted, taken over later
    ("hibernation_failed", {"outcome": "lost"}, None),  # compensation follows, and its mark_failed counts it
    ("wake_failed", {"outcome": "unsettled"}, ("wake", "failed")),
    ("wake_failed", {"outcome": "lost"}, None),
    ("mark_awake", {}, ("wake", "succeeded")),
    ("check_vm", {"status": "ACTIVE"}, None),
])
def test_which_step_ends_which_workflow(name, result, expected):
    assert outcomes.ending(name, {"execution_arn": STATE_MACHINE.format(machine="x")}, result) == expected


# --- the reconciler ---------------------------------------------------------------------------------


def test_a_sweep_counts_the_vms_it_deleted_in_one_line(aws, emitted):
    hyperstack = FakeReconcilerHyperstack()
    hyperstack.add(replica_vm_name(DEPLOYMENT, 5))
    hyperstack.add(replica_vm_name(DEPLOYMENT, 6))

    sweep(hyperstack)

    assert emitted() == {(stage(),): {names.VMS_DELETED_BY_BACKSTOP: ("Count", 2.0)}}


def test_a_sweep_that_deletes_nothing_emits_nothing(aws, emitted):
    sweep(FakeReconcilerHyperstack())

    assert emitted() == {}


# --- a usage row lost -------------------------------------------------------------------------------


def test_a_lost_usage_row_is_counted_under_the_stage_only(emitted):
    from tests.unit.chat.test_metering import meter_for

    metering._log_lost_row(meter_for()._row(), RuntimeError("DynamoDB down"))

    assert emitted() == {(stage(),): {names.USAGE_ROWS_LOST: ("Count", 1.0)}}


# --- the scaler -------------------------------------------------------------------------------------


def test_the_scaler_emits_desired_and_serving_replicas_its_acts_and_a_model_at_max_replicas(
        api, emitted, executions):
    from chalicelib.admin import scaler
    from chalicelib.store import model_load
    from tests.unit.conftest import VM_DETAILS

    model_id = api.create_model("org/scaled")
    api.put(f"/v1/models/{model_id}/autoscaling", {
        "min_replicas": 1, "max_replicas": 2, "target_requests_per_minute": 10, "scale_in_after_seconds": 60,
        "vm_creation_details": VM_DETAILS})
    now = 29_000_000 * 60.0 + 30
    model_load.count(model_id, now, requests=50)  # five replicas' worth
    emitted()

    scaler.run(now)

    lines = emitted()
    assert lines[(stage(), (names.MODEL, "org/scaled"))] == {
        names.REPLICAS_DESIRED: ("Count", 2), names.REPLICAS_SERVING: ("Count", 0),
        names.SCALE_OUTS: ("Count", 2), names.SCALE_INS: ("Count", 0)}
    assert lines[(stage(),)] == {names.MODELS_AT_MAX_REPLICAS: ("Count", 1)}
