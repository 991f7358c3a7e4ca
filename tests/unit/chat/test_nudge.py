"""A request refused for want of capacity nudges an autoscaled model's scaler (chalicelib/chat/nudge.py).

Lambda's Invoke is the network edge here: a recording client stands in for it (moto cannot run a function),
and what it records is handed to the app's own scale handler, as Lambda would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.chat import nudge, routing
from chalicelib.core.settings import get_chat_settings
from chalicelib.store.tables import Replica
from tests.unit.conftest import VM_DETAILS

FUNCTION = "hyperstack-llm-proxy-test-scale"


class RecordingLambda:
    def __init__(self) -> None:
        self.invoked: list[dict[str, Any]] = []

    def invoke(self, **call: Any) -> dict[str, Any]:
        self.invoked.append(call)
        return {"StatusCode": 202}


@pytest.fixture
def lambdas(monkeypatch) -> RecordingLambda:
    recording = RecordingLambda()
    monkeypatch.setenv("SCALE_FUNCTION_NAME", FUNCTION)
    monkeypatch.setattr(nudge, "_lambda", lambda: recording)
    get_chat_settings.cache_clear()
    routing._cache.clear()
    yield recording
    get_chat_settings.cache_clear()
    routing._cache.clear()


def ask(api, key: str, model: str) -> int:
    return api.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                    key=key).status


def autoscaled_model(api, name: str = "org/scaled") -> int:
    model_id = api.create_model(name)
    reply = api.put(f"/v1/models/{model_id}/autoscaling", {
        "min_replicas": 0, "max_replicas": 2, "target_requests_per_minute": 60, "scale_in_after_seconds": 60,
        "vm_creation_details": VM_DETAILS})
    assert reply.status == 200, reply.json
    return model_id


def test_a_capacity_refusal_nudges_the_scaler_once_however_many_come(api, lambdas):
    model_id = autoscaled_model(api)
    key = api.create_key()["api_key"]

    assert [ask(api, key, "org/scaled") for _ in range(3)] == [503, 503, 503]

    [call] = lambdas.invoked
    assert (call["FunctionName"], call["InvocationType"]) == (FUNCTION, "Event")
    assert json.loads(call["Payload"])["detail"] == {"model_id": model_id}


def test_the_nudge_runs_the_scale_handler_for_its_model_which_makes_a_replica(api, lambdas, executions):
    from app import scale

    model_id = autoscaled_model(api)
    other = autoscaled_model(api, "org/other")
    key = api.create_key()["api_key"]
    assert ask(api, key, "org/scaled") == 503

    outcome = scale(json.loads(lambdas.invoked[0]["Payload"]), None)

    assert list(outcome) == [str(model_id)] and outcome[str(model_id)]["created"]
    assert [r.model_id for r in Replica.scan()] == [model_id] and other != model_id


def test_a_model_without_autoscaling_is_never_nudged(api, lambdas):
    api.create_model("org/plain")
    key = api.create_key()["api_key"]

    assert ask(api, key, "org/plain") == 503
    assert lambdas.invoked == []


def test_another_refusal_does_not_nudge(api, lambdas):
    autoscaled_model(api)
    key = api.create_key(models=["org/elsewhere"])["api_key"]

    assert ask(api, key, "org/scaled") == 403
    assert lambdas.invoked == []


def test_a_nudge_that_cannot_be_sent_is_logged_and_the_answer_stands(api, lambdas, monkeypatch, log_lines):
    autoscaled_model(api)
    key = api.create_key()["api_key"]

    def refused(**_: Any) -> None:
        raise RuntimeError("AccessDenied")

    monkeypatch.setattr(lambdas, "invoke", refused)

    assert ask(api, key, "org/scaled") == 503
    assert any(line["message"] == "scaler not nudged" for line in log_lines())


def test_without_a_scale_function_nothing_is_written_or_sent(api, lambdas, monkeypatch):
    monkeypatch.delenv("SCALE_FUNCTION_NAME")
    monkeypatch.delenv("WORKFLOW_NAME_PREFIX", raising=False)
    get_chat_settings.cache_clear()
    model_id = autoscaled_model(api)

    assert nudge.nudge(model_id, "org/scaled", 1000.0) is False
    assert lambdas.invoked == []
