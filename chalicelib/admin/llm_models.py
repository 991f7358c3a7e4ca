"""LLM models: a unique name (what clients send as `model`) with replicas behind it."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from chalicelib.admin import replicas
from chalicelib.admin.schemas import CREATE_MODEL, MODEL_NAME, MODEL_NAME_PATTERN
from chalicelib.core.clock import iso, now
from chalicelib.core.errors import Conflict, NotFound
from chalicelib.core.patterns import matches
from chalicelib.core.validation import validate
from chalicelib.store.conditional import save_if
from chalicelib.store.lookups import model_by_id
from chalicelib.store.sequences import next_id
from chalicelib.store.tables import LlmModel, Replica


def create(body: Any) -> dict[str, Any]:
    request = validate(CREATE_MODEL, body)
    model = LlmModel(request["name"], id=next_id("llm_models"), created_at=now())
    if not save_if(model, LlmModel.name.does_not_exist()):
        raise Conflict("Model already exists.")
    return {"model_name": model.name, "id": model.id}


def list_models(active_only: bool) -> list[dict[str, Any]]:
    models = list(LlmModel.listing_index.query("llm_models"))
    if active_only:
        serving = {row.model_id for row in Replica.listing_index.query("replicas") if row.vm_status == replicas.SUCCESS}
        models = [model for model in models if model.id in serving]
    return [describe(model) for model in models]


def get(name_in_path: str) -> dict[str, Any]:
    name = name_from_path(name_in_path)
    if name is None:
        raise NotFound("Model not found")
    try:
        model = LlmModel.get(name)
    except LlmModel.DoesNotExist:
        raise NotFound("Model not found") from None
    return {**describe(model), "replicas": [replicas.describe(replica) for replica in replicas.of_model(model.id)]}


def name_from_path(name_in_path: str) -> str | None:
    """The model name a path segment holds (URL-encoded or not), or None if no model could have it."""
    # Names are validated to contain no '%', so decoding an already-decoded name is harmless.
    name = unquote(name_in_path)
    if not matches(MODEL_NAME_PATTERN, name) or len(name) > MODEL_NAME["maxLength"]:
        return None
    return name


def delete(model_id: int) -> None:
    model = model_by_id(model_id)
    if model is None:
        raise NotFound("Model not found")
    replicas.delete_all(model)


def describe(model: LlmModel) -> dict[str, Any]:
    return {"id": model.id, "name": model.name, "created_at": iso(model.created_at)}
