"""GPU replicas that cost nothing while idle, over the local stack: the idle check hibernates a replica
(and the fake Hyperstack's VM), a wake brings it back serving, and no path leaves a VM that nothing owns."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.integration.conftest import LocalStack, provisioning_env, start_local_stack
from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

MESSAGES = [{"role": "user", "content": "Good morning"}]
UNHIBERNATABLE = "n3-no-hibernation-x1"
pytestmark = pytest.mark.usefixtures("no_vm_left_unowned")


def _hibernated_on(stack: LocalStack, model_name: str) -> Iterator[dict]:
    """A replica idle past its hibernate_after_seconds (1 s), hibernated by the idle check: its row; deleted after."""
    _, replica_id = create_vm_replica(stack, model_name, hibernate_after_seconds=1)
    row = wait_for(stack, replica_id, {"HIBERNATED", "FAILED"})
    assert row["vm_status"] == "HIBERNATED", row["error_message"]
    yield row
    delete_replica(stack, replica_id)
    wait_for(stack, replica_id, {None})


@pytest.fixture
def hibernated(provisioning_stack, cloud, model_name):
    """A replica hibernated by the idle check: its row."""
    yield from _hibernated_on(provisioning_stack, model_name)


def test_idle_replica_is_hibernated_and_so_is_its_vm(cloud, hibernated):
    assert cloud.hyperstack.vms[hibernated["vm_id"]]["status"] == "HIBERNATED"
    assert hibernated["vm_id"] not in cloud.replicas  # its port serves nothing


def test_admin_wake_brings_the_replica_back_serving(provisioning_stack, cloud, model_name, hibernated):
    reply = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    again = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    awake = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])

    answer = client.chat.completions.create(model=model_name, messages=MESSAGES)

    assert (reply.status_code, again.status_code) == (202, 409)
    assert awake["vm_status"] == "SUCCESS", awake["error_message"]
    assert awake["wake_seconds"] >= 1 and answer.choices[0].message.content
    assert [vm for vm in cloud.hyperstack.restore_calls if vm == hibernated["vm_id"]] == [hibernated["vm_id"]]


def test_failed_wake_fails_the_replica_and_leaves_no_vm(provisioning_stack, cloud, hibernated):
    cloud.hyperstack.restore_goes_to_error = 1

    provisioning_stack.admin.post(provisioning_stack.url(f"/v1/replicas/{hibernated['id']}/wake"))
    failed = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})

    assert failed["vm_status"] == "FAILED" and "ERROR" in failed["error_message"]
    assert hibernated["vm_id"] not in cloud.hyperstack.vms


def test_delete_while_hibernated_leaves_no_vm(provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name, hibernate_after_seconds=1)
    row = wait_for(provisioning_stack, replica_id, {"HIBERNATED", "FAILED"})

    delete_replica(provisioning_stack, replica_id)

    assert wait_for(provisioning_stack, replica_id, {None}) is None
    assert row["vm_id"] not in cloud.hyperstack.vms


def test_flavor_that_cannot_hibernate_stays_serving_with_the_reason(provisioning_stack, cloud, model_name):
    cloud.hyperstack.flavors_without_hibernation = {UNHIBERNATABLE}
    try:
        _, replica_id = create_vm_replica(provisioning_stack, model_name, flavor_name=UNHIBERNATABLE,
                                          hibernate_after_seconds=1)
        wait_for(provisioning_stack, replica_id, {"SUCCESS"})
        refused = wait_for_row(provisioning_stack, replica_id, lambda row: row["error_message"])
    finally:
        cloud.hyperstack.flavors_without_hibernation = set()

    assert refused["vm_status"] == "SUCCESS" and refused["hibernate_after_seconds"] is None
    assert "Not hibernated" in refused["error_message"]
    assert cloud.hyperstack.vms[refused["vm_id"]]["status"] == "ACTIVE"
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def wait_for_row(stack, replica_id: int, condition, timeout: float = 30) -> dict:
    import time

    from tests.integration.conftest import replica_rows

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next((row for row in replica_rows(stack) if row["id"] == replica_id), None)
        if row and condition(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"replica {replica_id} never met the condition")


# Wake on demand: chat requests for a model whose replicas all hibernate


def test_request_for_a_hibernated_model_is_answered_model_waking_and_wakes_it(provisioning_stack, cloud,
                                                                             model_name, hibernated):
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"]).with_options(max_retries=0)

    with pytest.raises(openai.APIStatusError) as waking:
        client.chat.completions.create(model=model_name, messages=MESSAGES)
    awake = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})
    answer = client.chat.completions.create(model=model_name, messages=MESSAGES)

    assert waking.value.status_code == 503 and waking.value.body["code"] == "model_waking"
    assert int(waking.value.response.headers["retry-after"]) >= 1
    assert awake["vm_status"] == "SUCCESS" and answer.choices[0].message.content


def test_ten_racing_requests_start_one_restore(provisioning_stack, cloud, model_name, hibernated):
    client = provisioning_stack.client(provisioning_stack.new_key(allowed_rpm=100)["api_key"]).with_options(
        max_retries=0)

    def ask() -> int:
        try:
            client.chat.completions.create(model=model_name, messages=MESSAGES)
            return 200
        except openai.APIStatusError as refused:
            return refused.status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: ask(), range(10)))
    wait_for(provisioning_stack, hibernated["id"], {"SUCCESS", "FAILED"})

    assert statuses == [503] * 10
    assert [vm for vm in cloud.hyperstack.restore_calls if vm == hibernated["vm_id"]] == [hibernated["vm_id"]]


# A deployed chat function caches a model's replicas for seconds (REPLICA_CACHE_SECONDS); the provisioning
# stack caches nothing, so a stale view could not show there. This stack is that one with a 30 s cache.
LONG_CACHE_SECONDS = 30


@pytest.fixture(scope="module")
def long_cache_stack(cloud) -> Iterator[LocalStack]:
    # DRAIN_POLL_SECONDS stays 1 (it would follow the cache's seconds otherwise).
    stack = start_local_stack({**provisioning_env(cloud), "REPLICA_CACHE_SECONDS": str(LONG_CACHE_SECONDS)})
    yield stack
    stack.stop()


@pytest.fixture
def hibernated_behind_a_long_cache(long_cache_stack, cloud, model_name):
    """As `hibernated`, on the stack whose chat caches replicas for LONG_CACHE_SECONDS: its row."""
    yield from _hibernated_on(long_cache_stack, model_name)


def test_first_request_after_a_wake_is_served_or_told_at_most_5_s_despite_the_replica_cache(
        long_cache_stack, model_name, hibernated_behind_a_long_cache):
    client = long_cache_stack.client(long_cache_stack.new_key()["api_key"]).with_options(max_retries=0)
    asked_at = time.monotonic()
    with pytest.raises(openai.APIStatusError) as waking:  # wakes it; the model is now cached as waking
        client.chat.completions.create(model=model_name, messages=MESSAGES)
    awake = wait_for(long_cache_stack, hibernated_behind_a_long_cache["id"], {"SUCCESS", "FAILED"})
    woke_within_the_cache = time.monotonic() - asked_at < LONG_CACHE_SECONDS

    first = first_answer(client, model_name)

    # A never-woken replica's Retry-After is DEFAULT_WAKE_SECONDS (180): what the cached view would repeat.
    assert waking.value.body["code"] == "model_waking" and int(waking.value.response.headers["retry-after"]) > 5
    assert awake["vm_status"] == "SUCCESS" and woke_within_the_cache, awake["error_message"]
    assert first == "served" or (first[0] == "model_waking" and first[1] <= 5), first


def first_answer(client: openai.OpenAI, model: str) -> str | tuple[str, int]:
    """`"served"`, or the refusal's code and its Retry-After in seconds."""
    try:
        answer = client.chat.completions.create(model=model, messages=MESSAGES)
    except openai.APIStatusError as refused:
        return refused.body.get("code"), int(refused.response.headers.get("retry-after", -1))
    return "served" if answer.choices[0].message.content else "empty"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_caller_who_waits_for_the_model_gets_a_normal_answer(provisioning_stack, model_name, hibernated, stream):
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"]).with_options(max_retries=0)

    reply = client.chat.completions.create(model=model_name, messages=MESSAGES, stream=stream,
                                           extra_headers={"X-Wait-For-Model": "60"})

    text = ("".join(chunk.choices[0].delta.content or "" for chunk in reply if chunk.choices) if stream
            else reply.choices[0].message.content)
    assert text
    assert wait_for(provisioning_stack, hibernated["id"], {"SUCCESS"})["vm_status"] == "SUCCESS"


def test_a_wait_header_that_is_not_seconds_is_a_400(provisioning_stack, model_name, hibernated):
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"]).with_options(max_retries=0)

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=MESSAGES,
                                       extra_headers={"X-Wait-For-Model": "soon"})


# Hyperstack down for a while (issue #20): retried, never a deleted VM


def test_a_12_s_hyperstack_outage_while_a_replica_hibernates_deletes_no_vm_and_it_ends_hibernated(
        provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name, hibernate_after_seconds=1)
    serving = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    assert serving["vm_status"] == "SUCCESS", serving["error_message"]

    wait_for(provisioning_stack, replica_id, {"HIBERNATING", "HIBERNATED"})
    cloud.hyperstack.outage(12)
    ended = wait_for(provisioning_stack, replica_id, {"HIBERNATED", "FAILED", "SUCCESS"}, timeout=90)

    assert ended["vm_status"] == "HIBERNATED", ended["error_message"]
    assert cloud.hyperstack.vms[serving["vm_id"]]["status"] == "HIBERNATED"
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def test_restores_failing_for_20_s_then_the_model_wakes_on_its_same_vm_and_serves(provisioning_stack, cloud,
                                                                                  model_name, hibernated):
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])
    cloud.hyperstack.outage(20)

    with pytest.raises(openai.APIStatusError) as waking:
        client.chat.completions.create(model=model_name, messages=MESSAGES)
    answer = client.with_options(timeout=110).chat.completions.create(
        model=model_name, messages=MESSAGES, extra_headers={"X-Wait-For-Model": "100"})

    awake = wait_for(provisioning_stack, hibernated["id"], {"SUCCESS"})
    assert waking.value.status_code == 503 and waking.value.body["code"] == "model_waking"
    assert answer.choices[0].message.content
    assert awake["vm_id"] == hibernated["vm_id"] and cloud.hyperstack.vms[awake["vm_id"]]["status"] == "ACTIVE"


@pytest.mark.timeout(240)
def test_a_12_s_stream_on_a_replica_that_hibernates_after_3_s_completes_and_it_hibernates_afterwards(
        provisioning_stack, cloud, model_name):
    _, replica_id = create_vm_replica(provisioning_stack, model_name, hibernate_after_seconds=3)
    serving = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    assert serving["vm_status"] == "SUCCESS", serving["error_message"]
    cloud.replicas[serving["vm_id"]].pace_seconds = 0.2  # 60 tokens: 12 s
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])

    stream = client.with_options(timeout=60).chat.completions.create(
        model=model_name, messages=MESSAGES, stream=True, max_tokens=60, extra_body={"ignore_eos": True})
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    during = [row["vm_status"] for row in [wait_for(provisioning_stack, replica_id, {"SUCCESS", "HIBERNATING",
                                                                                      "HIBERNATED", "FAILED"})]]
    asleep = wait_for(provisioning_stack, replica_id, {"HIBERNATED", "FAILED"}, timeout=150)

    assert len(pieces) == 60 and during == ["SUCCESS"]
    assert asleep["vm_status"] == "HIBERNATED", asleep["error_message"]
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})
