"""The buffered chat route (`chalice local`, Chalice's test client) answers as the streaming one does."""

import json
import time


def test_chat_route_without_a_key_is_an_openai_shaped_401(api):
    reply = api.post("/v1/chat/completions", {"model": "m/x", "messages": [{"role": "user", "content": "hi"}]},
                     key=None)

    assert reply.status == 401
    assert reply.json["error"]["type"] == "authentication_error"


def test_chat_route_names_an_unknown_model(api):
    key = api.create_key()["api_key"]

    reply = api.post("/v1/chat/completions", {"model": "no/model", "messages": [{"role": "user", "content": "hi"}]},
                     key=key)

    assert reply.status == 404
    assert reply.json["error"]["code"] == "model_not_found"


def test_chat_lambda_handler_answers_a_function_url_event_whole(api):
    from app import chat

    event = {"version": "2.0", "rawPath": "/v1/chat/completions", "headers": {"content-type": "application/json"},
             "requestContext": {"http": {"method": "POST", "path": "/v1/chat/completions"}},
             "body": json.dumps({"model": "m/x", "messages": []}), "isBase64Encoded": False}

    result = chat(event, None)

    assert result["statusCode"] == 401
    assert json.loads(result["body"])["error"]["code"] == "invalid_api_key"


def test_completions_and_embeddings_routes_refuse_a_missing_key_in_openai_shape(api):
    completion = api.post("/v1/completions", {"model": "m/x", "prompt": "hi"}, key=None)
    embedding = api.post("/v1/embeddings", {"model": "m/x", "input": "hi"}, key=None)

    assert [completion.status, embedding.status] == [401, 401]
    assert {completion.json["error"]["code"], embedding.json["error"]["code"]} == {"invalid_api_key"}


def test_embeddings_route_names_an_unknown_model(api):
    key = api.create_key()["api_key"]

    reply = api.post("/v1/embeddings", {"model": "no/model", "input": "hi"}, key=key)

    assert reply.status == 404
    assert reply.json["error"]["code"] == "model_not_found"


def test_completions_route_refuses_a_bad_prompt_naming_it(api):
    key = api.create_key()["api_key"]

    reply = api.post("/v1/completions", {"model": "m/x", "prompt": []}, key=key)

    assert reply.status == 400
    assert reply.json["error"]["param"] == "prompt"


def test_chat_lambda_handler_answers_each_operations_path_and_404_elsewhere(api):
    from app import chat

    def event(path: str, body: dict) -> dict:
        return {"version": "2.0", "rawPath": path, "headers": {}, "body": json.dumps(body),
                "requestContext": {"http": {"method": "POST", "path": path}}, "isBase64Encoded": False}

    embedding = chat(event("/v1/embeddings", {"model": "m/x", "input": "hi"}), None)
    elsewhere = chat(event("/v1/moderations", {}), None)

    assert embedding["statusCode"] == 401
    assert (elsewhere["statusCode"], json.loads(elsewhere["body"])["error"]["code"]) == (404, "unknown_url")


def test_a_request_refused_by_a_cached_replica_gone_into_hibernation_is_told_the_model_wakes(api):
    from chalicelib.chat import routing
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.store.tables import Replica

    key = api.create_key()["api_key"]
    replica_id = api.create_replica(api.create_model("org/hibernating"), endpoint="http://127.0.0.1:9/v1")
    routing._cache.clear()
    routing.targets_for("org/hibernating")  # cached while it served
    Replica(replica_id).update(actions=[Replica.vm_status.set(statuses.HIBERNATED)])  # its VM gone since

    reply = api.post("/v1/chat/completions", {"model": "org/hibernating", "messages": [{"role": "user",
                                                                                        "content": "hi"}]}, key=key)
    routing._cache.clear()

    assert reply.status == 503 and reply.json["error"]["code"] == "model_waking"


def test_buffered_route_cuts_a_stalled_replica_within_api_gateways_time_and_meters_it(api, monkeypatch):
    """Behind API Gateway (chalice deploy) an answer later than 29 s is a 504 from the gateway itself, with
    nothing metered: the route ends the request first, in OpenAI's shape, and writes its usage row."""
    from chalicelib.core.settings import get_chat_settings
    from infra.local.mock_vllm import MockVllm

    monkeypatch.setenv("BUFFERED_ANSWER_SECONDS", "6")  # 29 in AWS; 3 s of it go to the row, 1 to the gateway
    get_chat_settings.cache_clear()
    with MockVllm(model="m/stalled", mode="stall") as replica:
        api.create_replica(api.create_model("m/stalled"), replica.base_url)
        key = api.create_key()["api_key"]
        started = time.monotonic()
        reply = api.post("/v1/chat/completions",
                         {"model": "m/stalled", "messages": [{"role": "user", "content": "hi"}]}, key=key)
        took = time.monotonic() - started
    get_chat_settings.cache_clear()

    assert reply.status == 504
    assert reply.json["error"]["type"] == "server_error"
    assert took < 60  # not the 120 s a stalled replica is otherwise given before its first byte
    rows = api.get("/v1/tables/metric").json["data"]
    assert [row["status"] for row in rows] == [504]


def test_an_autoscaled_models_requests_count_as_its_demand_answered_or_not(api):
    from chalicelib.chat import routing
    from chalicelib.store import model_load
    from tests.unit.conftest import VM_DETAILS

    routing._cache.clear()
    scaled, plain = api.create_model("org/scaled"), api.create_model("org/plain")
    for model_id in (scaled, plain):
        api.create_replica(model_id, endpoint="http://127.0.0.1:9/v1")  # nothing listens: every request fails
    api.put(f"/v1/models/{scaled}/autoscaling", {
        "min_replicas": 0, "max_replicas": 2, "target_requests_per_minute": 10, "scale_in_after_seconds": 60,
        "vm_creation_details": VM_DETAILS})
    key = api.create_key()["api_key"]
    if time.time() % 60 > 50:  # the requests all in one minute: per_minute reads one
        time.sleep(60 - time.time() % 60)

    statuses = [api.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                         key=key).status for model in ("org/scaled", "org/scaled", "org/scaled", "org/plain")]

    assert all(status >= 500 for status in statuses)
    assert model_load.per_minute(scaled, time.time()) == 3
    assert model_load.per_minute(plain, time.time()) == 0
    routing._cache.clear()
