"""Prefix affinity over the local stack (issue #24): three mock replicas of one model, many conversations.

A stack of this module's own, so that the replicas' ids, and so every key's rendezvous order, are the same on
every run: where twelve conversations land is then fixed, and the spread asserted is not left to chance.
"""

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from infra.local.mock_vllm import MockVllm
from tests.integration.conftest import STACK_ENV, LocalStack, local_stack

CONVERSATIONS = 12
TURNS = 4


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with local_stack(STACK_ENV) as running:
        yield running


@pytest.fixture
def model_name(request) -> str:
    return f"affinity/{request.node.name[:40]}"


@pytest.fixture
def replicas(model_name: str) -> Iterator[list[MockVllm]]:
    running = [MockVllm(model=model_name).start() for _ in range(3)]
    yield running
    for replica in running:
        replica.stop()


@pytest.fixture
def three(stack, model_name, replicas) -> dict:
    model_id = stack.register_model(model_name, *(replica.base_url for replica in replicas))
    key = stack.new_key(allowed_rpm=1000)["api_key"]
    return {"model_id": model_id, "key": key, "client": stack.client(key)}


def _served_by(replicas: list[MockVllm], send) -> int:
    """Which replica (its index) answered the one request `send` makes."""
    before = [replica.requests_seen for replica in replicas]
    send()
    changed = [index for index, replica in enumerate(replicas) if replica.requests_seen != before[index]]
    assert len(changed) == 1, changed
    return changed[0]


def _history(conversation: int, turn: int) -> list[dict]:
    messages = [{"role": "system", "content": f"You are assistant number {conversation}. " + "Be brief. " * 50},
                {"role": "user", "content": f"Question 0 of conversation {conversation}"}]
    for earlier in range(1, turn + 1):
        messages += [{"role": "assistant", "content": f"Answer {earlier - 1}"},
                     {"role": "user", "content": f"Question {earlier} of conversation {conversation}"}]
    return messages


def _play(three, model_name, replicas, conversations=range(CONVERSATIONS)) -> dict[int, list[int]]:
    """Every conversation's turns, interleaved (turn 0 of each, then turn 1 of each, ...): who served each."""
    served: dict[int, list[int]] = {conversation: [] for conversation in conversations}
    for turn in range(TURNS):
        for conversation in conversations:
            messages = _history(conversation, turn)
            served[conversation].append(_served_by(replicas, lambda messages=messages: three["client"].chat.completions
                                                   .create(model=model_name, max_tokens=4, messages=messages)))
    return served


def test_each_conversation_keeps_to_one_replica_and_conversations_spread(three, model_name, replicas):
    served = _play(three, model_name, replicas)

    on_its_replica = sum(Counter(turns).most_common(1)[0][1] for turns in served.values())
    assert on_its_replica >= 0.9 * CONVERSATIONS * TURNS, served
    homes = Counter(Counter(turns).most_common(1)[0][0] for turns in served.values())
    assert len(homes) >= 2, homes
    assert max(homes.values()) <= CONVERSATIONS * 2 / 3, homes


def test_one_prompt_cache_key_sends_different_prompts_to_one_replica(three, model_name, replicas):
    def sender(text: str):
        return lambda: three["client"].chat.completions.create(
            model=model_name, max_tokens=4, messages=[{"role": "user", "content": text}],
            extra_body={"prompt_cache_key": "tenant-42"})

    homes = {_served_by(replicas, sender(text)) for text in ("alpha", "beta", "gamma", "delta")}
    assert len(homes) == 1
    assert replicas[homes.pop()].last_request["prompt_cache_key"] == "tenant-42"  # relayed untouched


def test_removing_a_replica_moves_only_the_conversations_it_held(stack, three, model_name, replicas):
    before = {conversation: turns[0] for conversation, turns in _play(three, model_name, replicas).items()}
    gone = Counter(before.values()).most_common(1)[0][0]
    rows = stack.admin.get(stack.url(f"/v1/models/{three['model_id']}/replicas")).json()
    replica_id = next(row["id"] for row in rows if row["endpoint"] == replicas[gone].base_url)
    assert stack.admin.delete(stack.url(f"/v1/replicas/{replica_id}")).status_code == 204
    time.sleep(1.5)  # the stack's REPLICA_CACHE_SECONDS (1): every instance has read the replicas again

    after = {conversation: turns[0] for conversation, turns in _play(three, model_name, replicas).items()}
    moved = {conversation for conversation in before if before[conversation] != after[conversation]}
    assert moved == {conversation for conversation, home in before.items() if home == gone}
    assert gone not in after.values()


def test_embeddings_keep_rotating_over_the_replicas(stack, three, model_name, replicas):
    reply = [requests.post(stack.url("/v1/embeddings"), json={"model": model_name, "input": "same text"},
                           headers={"Authorization": f"Bearer {three['key']}"}, timeout=10) for _ in range(6)]
    assert all(answer.status_code == 200 for answer in reply)
    assert sum(1 for replica in replicas if replica.requests_seen) >= 2
