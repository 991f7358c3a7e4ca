"""Choosing replicas: the function's cache of model lookups (DynamoDB emulated by moto)."""

import pytest

from chalicelib.chat import routing


@pytest.fixture(autouse=True)
def empty_cache():
    routing._cache.clear()  # the cache lives as long as the process, as in a Lambda instance
    yield
    routing._cache.clear()


def test_flood_of_unknown_model_names_does_not_grow_the_cache_past_its_bound(api):
    for index in range(routing.MAX_CACHED_MODELS + 50):
        assert routing.model_exists(f"made-up/{index}") is False

    assert len(routing._cache) <= routing.MAX_CACHED_MODELS


def test_model_looked_up_after_a_flood_is_still_found(api):
    model_id = api.create_model("org/real")
    api.create_replica(model_id)
    for index in range(routing.MAX_CACHED_MODELS + 1):
        routing.model_exists(f"made-up/{index}")

    assert routing.model_exists("org/real") is True
