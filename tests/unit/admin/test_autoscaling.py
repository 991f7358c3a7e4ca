"""PUT/GET/DELETE /v1/models/{model_ref}/autoscaling: a model's autoscaling settings (issue #23)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.store import template_secrets
from chalicelib.store.tables import Bookkeeping
from tests.unit.conftest import VM_DETAILS


def settings(**changes: Any) -> dict[str, Any]:
    return {"min_replicas": 1, "max_replicas": 3, "target_requests_per_minute": 60, "scale_in_after_seconds": 300,
            "vm_creation_details": dict(VM_DETAILS), **changes}



def test_put_answers_the_settings_and_a_state_not_decided_yet(api, model_id):
    reply = api.put(f"/v1/models/{model_id}/autoscaling", settings(hibernate_after_seconds=600))

    assert reply.status == 200, reply.json
    body = reply.json
    assert (body["model_id"], body["min_replicas"], body["max_replicas"]) == (model_id, 1, 3)
    assert (body["target_requests_per_minute"], body["scale_in_after_seconds"]) == (60, 300)
    assert body["hibernate_after_seconds"] == 600 and body["rate_limit"] is None
    assert body["vm_creation_details"]["flavor_name"] == VM_DETAILS["flavor_name"]
    assert body["state"]["desired_replicas"] is None and "not decided" in body["state"]["reason"]
    assert api.get(f"/v1/models/{model_id}/autoscaling").json == body


def test_the_templates_secrets_are_kept_apart_and_shown_by_name_only(api, model_id):
    template = {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_secret_value"}}

    reply = api.put(f"/v1/models/{model_id}/autoscaling", settings(vm_creation_details=template))

    assert reply.json["vm_creation_details"]["secrets"] == ["HF_TOKEN"]
    assert "hf_secret_value" not in api.get(f"/v1/models/{model_id}/autoscaling").body.decode()
    assert "hf_secret_value" not in api.get("/v1/tables/llm_models").body.decode()
    assert template_secrets.read(model_id) == {"HF_TOKEN": "hf_secret_value"}


def test_a_put_replaces_the_settings_whole_secrets_included(api, model_id):
    template = {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_secret_value"}}
    api.put(f"/v1/models/{model_id}/autoscaling", settings(vm_creation_details=template, rate_limit=100))

    reply = api.put(f"/v1/models/{model_id}/autoscaling", settings(max_replicas=5))

    assert reply.json["max_replicas"] == 5 and reply.json["rate_limit"] is None
    assert reply.json["vm_creation_details"]["secrets"] == [] and template_secrets.read(model_id) == {}


@pytest.mark.parametrize(("changes", "field"), [
    ({"min_replicas": 4, "max_replicas": 3}, "min_replicas"),
    ({"min_replicas": -1}, "min_replicas"),
    ({"max_replicas": 0}, "max_replicas"),
    ({"max_replicas": 65}, "max_replicas"),
    ({"target_requests_per_minute": 0}, "target_requests_per_minute"),
    ({"scale_in_after_seconds": 0}, "scale_in_after_seconds"),
    ({"hibernate_after_seconds": 0}, "hibernate_after_seconds"),
    ({"vm_creation_details": {**VM_DETAILS, "port": 59443}}, "vm_creation_details"),  # the TLS front's port
    ({"vm_creation_details": {**VM_DETAILS, "name": " bad name"}}, "vm_creation_details"),
    ({"vm_creation_details": None}, "vm_creation_details"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_settings_are_a_400_naming_the_field_and_store_nothing(api, model_id, changes, field):
    reply = api.put(f"/v1/models/{model_id}/autoscaling", settings(**changes))

    assert reply.status == 400, reply.json
    assert field in reply.json["errors"]
    assert api.get(f"/v1/models/{model_id}/autoscaling").status == 404


def test_a_missing_setting_is_a_400_naming_it(api, model_id):
    body = settings()
    del body["target_requests_per_minute"]

    reply = api.put(f"/v1/models/{model_id}/autoscaling", body)

    assert reply.status == 400 and "target_requests_per_minute" in reply.json["errors"]


def test_an_unknown_model_is_a_404_on_every_method(api):
    assert api.put("/v1/models/999/autoscaling", settings()).status == 404
    assert api.get("/v1/models/999/autoscaling").status == 404
    assert api.delete("/v1/models/999/autoscaling").status == 404
    assert api.get("/v1/models/not-an-id/autoscaling").status == 404


def test_a_users_key_is_a_401(api, model_id):
    user = api.create_key()["api_key"]

    assert api.put(f"/v1/models/{model_id}/autoscaling", settings(), key=user).status == 401
    assert api.get(f"/v1/models/{model_id}/autoscaling", key=user).status == 401


def test_a_model_without_autoscaling_is_a_404_on_get(api, model_id):
    reply = api.get(f"/v1/models/{model_id}/autoscaling")

    assert reply.status == 404 and "no autoscaling" in reply.json["error"]


def test_delete_stops_autoscaling_leaves_the_replicas_and_may_run_twice(api, model_id):
    replica_id = api.create_replica(model_id)
    template = {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_secret_value"}}
    api.put(f"/v1/models/{model_id}/autoscaling", settings(vm_creation_details=template))

    assert api.delete(f"/v1/models/{model_id}/autoscaling").status == 204
    assert api.delete(f"/v1/models/{model_id}/autoscaling").status == 204

    assert api.get(f"/v1/models/{model_id}/autoscaling").status == 404
    assert [r["id"] for r in api.get(f"/v1/models/{model_id}/replicas").json] == [replica_id]
    with pytest.raises(Bookkeeping.DoesNotExist):
        Bookkeeping.get(template_secrets.key(model_id))


def test_a_model_being_deleted_cannot_be_given_autoscaling(api, model_id):
    from chalicelib.store.tables import LlmModel

    LlmModel("meta-llama/Llama-3.1-8B-Instruct").update(actions=[LlmModel.deleting.set(True)])

    reply = api.put(f"/v1/models/{model_id}/autoscaling", settings())

    assert reply.status == 404 and "being deleted" in reply.json["error"]


def test_the_state_counts_the_models_replicas_by_status(api, model_id):
    api.create_replica(model_id)
    api.create_replica(model_id, endpoint="http://10.0.0.2:8000/v1")

    state = api.put(f"/v1/models/{model_id}/autoscaling", settings()).json["state"]

    assert (state["serving"], state["starting"], state["hibernated"]) == (2, 0, 0)


def test_hand_made_replicas_are_not_marked_autoscaled(api, model_id):
    api.create_replica(model_id)

    assert [r["autoscaled"] for r in api.get(f"/v1/models/{model_id}/replicas").json] == [False]


def test_deleting_the_model_deletes_its_templates_secrets(api, model_id):
    template = {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_secret_value"}}
    api.put(f"/v1/models/{model_id}/autoscaling", settings(vm_creation_details=template))

    assert api.delete(f"/v1/models/{model_id}").status == 204

    assert template_secrets.read(model_id) == {}
