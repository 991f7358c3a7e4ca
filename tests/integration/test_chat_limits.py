"""Exact limits under concurrency, through the local HTTP stack and the official openai client.

A fresh key (or replica) has no window yet, so every request of a burst races to open one: the
same race as at the turn of a minute, without waiting for one.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

LIMIT = 5
MESSAGES = [{"role": "user", "content": "Count me"}]


def burst(stack, api_key: str, model: str, size: int) -> list[int]:
    """`size` requests released together; the status of each."""
    client = stack.client(api_key)
    start = threading.Barrier(size)

    def one(_: int) -> int:
        start.wait()
        try:
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
            return 200
        except openai.APIStatusError as error:
            return error.status_code

    with ThreadPoolExecutor(max_workers=size) as pool:
        return sorted(pool.map(one, range(size)))


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_key_limit_admits_exactly_allowed_rpm_of_a_racing_burst(stack, model_name, replica, size):
    stack.register_model(model_name, replica.base_url)
    key = stack.new_key(allowed_rpm=LIMIT)

    statuses = burst(stack, key["api_key"], model_name, size)

    assert statuses == [200] * LIMIT + [429] * (size - LIMIT)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_replica_limit_admits_exactly_its_rate_limit_of_a_racing_burst(stack, model_name, replica, size):
    stack.register_model(model_name, replica.base_url, rate_limits=(LIMIT,))
    key = stack.new_key(allowed_rpm=100)

    statuses = burst(stack, key["api_key"], model_name, size)

    assert statuses == [200] * LIMIT + [503] * (size - LIMIT)
    assert replica.requests_seen == LIMIT
