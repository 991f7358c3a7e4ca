"""The demo replica of the local stack: a mock vLLM server registered as a model's replica."""

from __future__ import annotations

from chalicelib.admin import replicas
from chalicelib.core.errors import Conflict
from chalicelib.store.tables import LlmModel
from infra.local.mock_vllm import MockVllm


def start_demo_replica(model: str, port: int, pace_seconds: float) -> MockVllm:
    replica = MockVllm(model=model, port=port, pace_seconds=pace_seconds).start()
    register_replica(model, replica.base_url)
    return replica


def register_replica(model: str, endpoint: str) -> None:
    """Make `endpoint` a SUCCESS replica of `model`; nothing changes when it already is."""
    from chalicelib.admin import llm_models

    try:
        llm_models.create({"name": model})
    except Conflict:
        pass
    try:
        replicas.create(LlmModel.get(model).id, {"endpoint": endpoint})
    except Conflict:
        pass
