"""/v1/models: create, read, list, delete."""

from tests.unit.conftest import VM_DETAILS, started_executions


def test_create_model_answers_201_with_name_and_id(api):
    reply = api.post("/v1/models", {"name": "mistralai/Mistral-7B-Instruct-v0.3"})

    assert reply.status == 201
    assert reply.json == {"model_name": "mistralai/Mistral-7B-Instruct-v0.3", "id": 1}


def test_model_name_with_a_slash_is_readable_url_encoded(api):
    model_id = api.create_model("meta-llama/Llama-3.1-8B-Instruct")

    reply = api.get("/v1/models/meta-llama%2FLlama-3.1-8B-Instruct")

    assert reply.status == 200
    assert reply.json["id"] == model_id
    assert reply.json["name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert reply.json["replicas"] == []


def test_duplicate_model_name_is_a_conflict(api):
    api.create_model("qwen/Qwen2.5-7B")

    reply = api.post("/v1/models", {"name": "qwen/Qwen2.5-7B"})

    assert reply.status == 409
    assert "error" in reply.json


def test_create_model_without_name_names_the_field(api):
    reply = api.post("/v1/models", {})

    assert reply.status == 400
    assert reply.json == {"errors": {"name": ["Missing data for required field."]}}


def test_unknown_model_name_is_404(api):
    assert api.get("/v1/models/nope%2Fnothing").status == 404


def test_active_filter_keeps_models_with_a_serving_replica(api):
    serving = api.create_model("serving/model")
    api.create_replica(serving)
    pending = api.create_model("pending/model")
    api.post(f"/v1/models/{pending}/replicas", {"endpoint": "", "create_vm": True, "vm_creation_details": VM_DETAILS})
    api.create_model("bare/model")

    everything = api.get("/v1/models")
    active = api.get("/v1/models?active=true")

    assert [model["name"] for model in everything.json] == ["serving/model", "pending/model", "bare/model"]
    assert [model["name"] for model in active.json] == ["serving/model"]


def test_delete_model_removes_its_replicas_and_rules(api):
    model_id = api.create_model()
    api.create_replica(model_id)
    api.create_replica(model_id, "http://10.0.0.2:8000/v1")

    reply = api.delete(f"/v1/models/{model_id}")

    assert reply.status == 204
    assert api.get(f"/v1/models/{model_id}/replicas").status == 404
    assert api.get("/v1/tables/replicas").json["data"] == []


def test_delete_model_hands_its_provisioned_replicas_to_teardown(api):
    model_id = api.create_model()
    api.create_replica(model_id)
    vm_backed = api.post(f"/v1/models/{model_id}/replicas", {"create_vm": True, "vm_creation_details": VM_DETAILS})

    reply = api.delete(f"/v1/models/{model_id}")

    assert reply.status == 204
    assert api.get(f"/v1/models/{model_id}/replicas").status == 404
    remaining = api.get("/v1/tables/replicas").json["data"]
    assert [(row["id"], row["vm_status"]) for row in remaining] == [(vm_backed.json["replica_id"], "DELETING")]
    assert started_executions("delete") == 1


def test_deleting_a_model_frees_its_endpoints_for_a_new_model_of_the_same_name(api):
    first = api.create_model("same/name")
    api.create_replica(first, "http://10.0.0.9:8000/v1")
    api.delete(f"/v1/models/{first}")

    second = api.create_model("same/name")

    assert second != first
    assert api.create_replica(second, "http://10.0.0.9:8000/v1")


def test_delete_unknown_or_non_integer_model_id_is_404(api):
    assert api.delete("/v1/models/999").status == 404
    assert api.delete("/v1/models/abc").status == 404
    assert api.delete("/v1/models/-1").status == 404
