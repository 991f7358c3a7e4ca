"""Prefix affinity (issue #24): what the routing key is made of, and the rendezvous order every instance agrees on."""

import pytest

from chalicelib.chat.affinity import PREFIX_CHARACTERS, rendezvous, routing_key, spill_limit
from chalicelib.chat.operations import CHAT, COMPLETIONS, EMBEDDINGS

SYSTEM = {"role": "system", "content": "You are a pirate. " * 20}


def chat(*messages, **fields):
    return {"model": "m", "messages": list(messages), **fields}


def test_every_turn_of_a_conversation_has_the_key_of_its_first():
    first = chat(SYSTEM, {"role": "user", "content": "Hello"})
    later = chat(SYSTEM, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Arr"},
                 {"role": "user", "content": "Where is the treasure?"})
    assert routing_key(first, CHAT) == routing_key(later, CHAT) is not None


def test_conversations_that_start_differently_have_different_keys():
    one = chat(SYSTEM, {"role": "user", "content": "Hello"})
    other_user = chat(SYSTEM, {"role": "user", "content": "Good day"})
    other_system = chat({"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Hello"})
    assert len({routing_key(body, CHAT) for body in (one, other_user, other_system)}) == 3


def test_the_callers_prompt_cache_key_wins_over_the_prompt():
    keyed = [chat({"role": "user", "content": text}, prompt_cache_key="tenant-7") for text in ("a", "b", "c", "d")]
    assert len({routing_key(body, CHAT) for body in keyed}) == 1
    assert routing_key(keyed[0], CHAT) != routing_key(chat({"role": "user", "content": "a"}), CHAT)


def test_only_the_leading_characters_are_hashed():
    long_system = {"role": "system", "content": "x" * PREFIX_CHARACTERS}
    one = chat(long_system, {"role": "user", "content": "first question"})
    other = chat(long_system, {"role": "user", "content": "another question"})
    assert routing_key(one, CHAT) == routing_key(other, CHAT)  # past the bound, the rest is not read


def test_content_parts_are_keyed_by_their_text():
    parts = chat({"role": "user", "content": [{"type": "text", "text": "Hello"}]})
    plain = chat({"role": "user", "content": "Hello"})
    assert routing_key(parts, CHAT) == routing_key(plain, CHAT)


@pytest.mark.parametrize("prompt", ["Once upon a time", ["Once upon a time", "x"], [1, 2, 3], [[1, 2, 3], [4]]])
def test_completions_are_keyed_by_the_leading_prompt(prompt):
    assert routing_key({"model": "m", "prompt": prompt}, COMPLETIONS) is not None


def test_embeddings_and_empty_bodies_have_no_key():
    assert routing_key({"model": "m", "input": "hello"}, EMBEDDINGS) is None
    assert routing_key({"model": "m", "messages": []}, CHAT) is None
    assert routing_key({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}, CHAT) is None


def test_rendezvous_order_is_the_same_whatever_order_the_replicas_come_in():
    assert rendezvous("k", [1, 2, 3, 4], str) == rendezvous("k", [4, 3, 2, 1], str)


def test_removing_a_replica_moves_only_the_keys_it_ranked_first():
    keys = [f"conversation-{n}" for n in range(300)]
    before = {key: rendezvous(key, [1, 2, 3], str)[0] for key in keys}
    after = {key: rendezvous(key, [1, 3], str)[0] for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == 2}


def test_keys_spread_over_every_replica():
    firsts = [rendezvous(f"conversation-{n}", [1, 2, 3], str)[0] for n in range(300)]
    assert all(70 <= firsts.count(replica) <= 130 for replica in (1, 2, 3))


@pytest.mark.parametrize(("replicas", "limit"), [(1, 1), (2, 2), (3, 2), (4, 2), (5, 3), (8, 4)])
def test_a_key_spills_over_to_half_the_replicas_and_at_least_two(replicas, limit):
    assert spill_limit(replicas) == limit
