"""The models a user's key may call, as OpenAI's `GET /v1/models` and `GET /v1/models/{model}` show them.

A model is listed to a key when the key may use it (a key with `models` sees only those) and when at
least one of its replicas is serving (`SUCCESS`, with an endpoint): what the chat route would send a
request to. Anything else is OpenAI's 404, so a key learns nothing of the models it may not use.

Listing is a read and is not counted against the key's requests per minute: the key is
authenticated by one consistent GetItem of its item (by the key's hash), not by the chat route's
conditional count, which is a write. So a revoked key is refused at once, and no listing (an SDK
or a UI polls it) can use up the minute's budget of chat requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.admin.llm_models import name_from_path
from chalicelib.core.errors import NotFound, Unauthorized
from chalicelib.core.key_hashing import hash_key
from chalicelib.core.replica_statuses import takes_requests
from chalicelib.store.tables import ApiKey, LlmModel, Replica

# OpenAI's `owned_by`: the organisation that serves the model to this key, whoever trained it.
OWNED_BY = "hyperstack-llm-proxy"


@dataclass(frozen=True)
class UserKey:
    """An authenticated user's key: which models it may use (None: every model)."""

    key_id: int
    models: frozenset[str] | None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


def authenticate(plaintext_key: str | None, now: float) -> UserKey:
    """The key, if it exists, is enabled and has not expired; the chat route's wording otherwise."""
    if not plaintext_key:
        raise Unauthorized("You didn't provide an API key.", code="invalid_api_key")
    try:
        key = ApiKey.get(hash_key(plaintext_key), consistent_read=True)
    except ApiKey.DoesNotExist:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key") from None
    if not key.enabled:
        raise Unauthorized("This API key is disabled.", code="invalid_api_key")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("This API key has expired.", code="invalid_api_key")
    return UserKey(key_id=int(key.id), models=frozenset(key.models) if key.models is not None else None)


def list_models(key: UserKey) -> dict[str, Any]:
    """OpenAI's model list: the models this key may use that have a serving replica, oldest first."""
    serving = {int(replica.model_id) for replica in Replica.listing_index.query("replicas") if is_serving(replica)}
    models = [model for model in LlmModel.listing_index.query("llm_models")
              if int(model.id) in serving and key.may_use(model.name)]
    return {"object": "list", "data": [describe(model) for model in models]}


def retrieve(key: UserKey, name_in_path: str) -> dict[str, Any]:
    """OpenAI's model object; 404 alike for a model that does not exist, is not the key's, or is not served."""
    name = name_from_path(name_in_path)
    if name is None or not key.may_use(name):
        raise model_not_found(name_in_path if name is None else name)
    try:
        model = LlmModel.get(name)
    except LlmModel.DoesNotExist:
        raise model_not_found(name) from None
    if not any(is_serving(replica) for replica in Replica.by_model.query(model.id)):
        raise model_not_found(name)
    return describe(model)


def is_serving(replica: Replica) -> bool:
    return takes_requests(replica.vm_status, replica.endpoint)


def describe(model: LlmModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.created_at), "owned_by": OWNED_BY}


def model_not_found(name: str) -> NotFound:
    # OpenAI's own wording, which does not say which of the two it is.
    return NotFound(f"The model `{name}` does not exist or you do not have access to it.",
                    code="model_not_found", param="model")
