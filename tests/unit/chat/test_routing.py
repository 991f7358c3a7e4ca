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


# Retry-After that tells the truth (issue #20)


def test_a_waking_model_is_read_again_before_answering_waking_once_the_cache_is_a_second_old(api, monkeypatch):
    from chalicelib.chat.waking import ModelWaking
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.store.tables import Replica

    model_id = api.create_model("org/asleep")
    replica_id = api.create_replica(model_id)
    Replica(replica_id).update(actions=[Replica.vm_status.set(statuses.WAKING), Replica.wake_started_at.set(0)])
    clock = [1000.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    with pytest.raises(ModelWaking):
        routing.targets_for("org/asleep")  # cached now, for REPLICA_CACHE_SECONDS (5 s)
    Replica(replica_id).update(actions=[Replica.vm_status.set(statuses.SUCCESS)])  # the wake ends

    with pytest.raises(ModelWaking):
        routing.targets_for("org/asleep")  # the same instant: the cached rows stand
    clock[0] += routing.WAKING_REREAD_SECONDS + 0.1
    targets = routing.targets_for("org/asleep")

    assert [target.replica_id for target in targets] == [replica_id]


# No request routed to a replica marked for hibernation once it refused one (issue #20)


def test_a_replica_that_failed_makes_its_model_be_read_again_by_the_next_request(api):
    from chalicelib.chat.waking import ModelWaking
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.store.tables import Replica

    model_id = api.create_model("org/draining")
    replica_id = api.create_replica(model_id)
    [target] = routing.targets_for("org/draining")  # cached now, for REPLICA_CACHE_SECONDS (5 s)
    Replica(replica_id).update(actions=[Replica.vm_status.set(statuses.HIBERNATING)])

    assert [cached.replica_id for cached in routing.targets_for("org/draining")] == [replica_id]
    routing.mark_failed(target)

    with pytest.raises(ModelWaking):
        routing.targets_for("org/draining")


def test_after_every_cached_replica_refused_only_replicas_not_tried_are_offered(api):
    model_id = api.create_model("org/grown")
    api.create_replica(model_id)
    tried = routing.targets_for("org/grown")
    second = api.create_replica(model_id, endpoint="http://10.0.0.2:8000/v1")

    assert [target.replica_id for target in routing.untried("org/grown", tried)] == [second]


def test_the_by_model_index_holds_all_routing_reads_of_a_replica_and_no_more(api):
    from chalicelib.store.tables import Replica

    model_id = api.create_model("org/projected")
    replica_id = api.create_replica(model_id, rate_limit=60)
    Replica(replica_id).update(actions=[
        Replica.last_used_minute.set(5), Replica.wake_seconds.set(30), Replica.tls_fingerprint.set("ab" * 32),
        Replica.hibernate_after_seconds.set(300), Replica.api_key.set("replica-bearer")])
    whole = Replica.get(replica_id, consistent_read=True)
    (indexed,) = Replica.by_model.query(model_id)

    assert routing._target(indexed) == routing._target(whole)
    assert indexed.created_at is None and indexed.run_command is None  # the rest stays in the table
