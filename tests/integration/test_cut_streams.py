"""Every relayed token is metered, however a stream ends: cut by the client, by a dying replica, or by a
replica that reports no usage at all; and a monthly token budget holds against streams cut on purpose."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import openai
import pytest
import requests

from infra.local.mock_vllm import MockVllm

MESSAGES = [{"role": "user", "content": "Tell me a long story about GPU replicas"}]


@pytest.fixture
def slow(stack, model_name) -> Iterator[MockVllm]:
    """A replica of the test's own model that paces its tokens, so a client can leave mid-stream."""
    with MockVllm(model=model_name, pace_seconds=0.2) as replica:
        stack.register_model(model_name, replica.base_url)
        yield replica


class Refused(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(error)
        self.error = error


def cut_after_words(stack, api_key: str, model: str, words: int = 2) -> list[str]:
    """A streamed chat read until `words` pieces of content arrived, then dropped: what the client saw."""
    seen: list[str] = []
    with requests.post(stack.url("/v1/chat/completions"), stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {api_key}"},
                       json={"model": model, "messages": MESSAGES, "stream": True, "max_tokens": 60}) as reply:
        if reply.status_code == 429:
            raise Refused(reply.json()["error"])
        assert reply.status_code == 200, reply.text
        for line in reply.iter_lines():
            if line.startswith(b"data: {"):
                chunk = json.loads(line.removeprefix(b"data: "))
                assert "usage" not in chunk  # the running usage the proxy asked for is not the client's
                content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                if content:
                    seen.append(content)
                    if len(seen) == words:
                        break
    return seen


def test_a_stream_dropped_after_two_words_leaves_a_row_of_at_least_two_completion_tokens(stack, slow):
    key = stack.new_key()

    seen = cut_after_words(stack, key["api_key"], slow.model)
    (row,) = stack.usage_rows(key["id"])

    assert len(seen) == 2
    assert row["status"] == 499
    assert row["completion_tokens"] >= 2 and row["prompt_tokens"] > 0
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
    assert row["usage_estimated"] is None  # the replica's own running count


def test_a_replica_that_reports_no_usage_is_metered_one_token_per_relayed_piece(stack, slow):
    slow.mode = "no_usage"
    key = stack.new_key()

    cut_after_words(stack, key["api_key"], slow.model)
    (row,) = stack.usage_rows(key["id"])

    assert row["completion_tokens"] >= 2 and row["prompt_tokens"] > 0 and row["usage_estimated"] is True


def test_a_stream_cut_by_a_dying_replica_is_metered_up_to_the_cut(stack, slow):
    slow.mode = "die_mid_stream"
    key = stack.new_key()

    words = []
    with pytest.raises(openai.APIError, match="broke"):  # the stream's last event: the proxy's error
        for chunk in stack.client(key["api_key"]).chat.completions.create(model=slow.model, messages=MESSAGES,
                                                                          stream=True):
            words += [chunk.choices[0].delta.content] if chunk.choices and chunk.choices[0].delta.content else []
    (row,) = stack.usage_rows(key["id"])

    assert len(words) == 2 and row["status"] == 502
    assert row["completion_tokens"] >= 2


def test_cut_streams_spend_a_small_budget_and_the_next_request_is_refused(stack, slow):
    key = stack.new_key(token_budget=40)
    cut = 0

    deadline = time.monotonic() + 30
    while True:  # each cut stream costs its prompt and the words relayed, however early it is dropped
        try:
            cut_after_words(stack, key["api_key"], slow.model)
            cut += 1
        except Refused as refused:
            error = refused.error
            break
        assert time.monotonic() < deadline, "cut streams never exhausted the budget"
        time.sleep(0.2)  # the tokens are added just after each row
    with pytest.raises(openai.RateLimitError) as next_request:
        stack.client(key["api_key"]).chat.completions.create(model=slow.model, messages=MESSAGES)

    assert error["code"] == next_request.value.body["code"] == "insufficient_quota"
    rows = stack.usage_rows(key["id"], expected=cut)
    assert len(rows) == cut and all(row["status"] == 499 and row["total_tokens"] for row in rows)
    assert sum(row["total_tokens"] for row in rows) >= 40
