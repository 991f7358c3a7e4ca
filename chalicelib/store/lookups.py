"""Finding rows by their integer id, through each table's `listing` index."""

from __future__ import annotations

from chalicelib.store.tables import ApiKey, LlmModel


def model_by_id(model_id: int) -> LlmModel | None:
    return next(iter(LlmModel.listing_index.query("llm_models", LlmModel.id == model_id, limit=1)), None)


def api_key_by_id(key_id: int) -> ApiKey | None:
    return next(iter(ApiKey.listing_index.query("api_key", ApiKey.id == key_id, limit=1)), None)
