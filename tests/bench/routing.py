"""`make bench` routing rows (issue #24): follow-up turns' time to first token on two llama.cpp replicas, through
the proxy with prefix affinity, through the proxy rotating (PREFIX_AFFINITY=off, as before), and straight to the
replica the conversation's key picks (the ideal: no proxy, always the replica holding the prefix).

Several conversations with long, distinct system prompts take turns, interleaved. A replica keeps the KV cache
of a few prompts (one per slot), so a turn that reaches the replica holding its conversation's prefix skips most
of its prefill. Each way runs its own conversations, so that none finds another's prompts cached; the ways take
turns, three rounds each, so that the machine's slower spells fall on all three alike.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

from chalicelib.chat.affinity import rendezvous, routing_key
from chalicelib.chat.operations import CHAT
from infra.local import llama_replica

Row = tuple[str, str, str, str]
CONVERSATIONS = 3  # odd: rotating over two replicas, a conversation's turns alternate between them
TURNS = 5
ROUNDS = 3  # each way plays its fresh conversations this often, in turn with the others: 36 follow-ups a way
SLOTS = 2  # per replica (llama.cpp's default here): two replicas hold the three conversations' prefixes
SYSTEM_WORDS = 260  # a few hundred tokens: a prefill worth skipping on this CPU
VOCABULARY = ("harbour", "lantern", "meadow", "copper", "orbit", "velvet", "quarry", "saddle", "thistle", "ember",
              "glacier", "pylon", "cipher", "marble", "tundra", "beacon", "walnut", "fjord", "rampart", "sonnet")


def routing_rows(affine: Any, affine_key: str, rotating: Any, rotating_key: str,
                 client: Callable[..., Any]) -> list[Row]:
    """`affine` and `rotating`: local stacks with PREFIX_AFFINITY on and off; `client(base_url, key)`: run.py's."""
    if not llama_replica.available():
        return [("routing (llama.cpp, SmolLM2-135M)", "-", "skipped", f"wheels not installed: "
                 f"{llama_replica.INSTALL_HINT}")]
    replicas = [llama_replica.LlamaReplica(threads=1, slots=SLOTS, alias=f"replica-{n}").start() for n in range(2)]
    try:
        endpoints = [replica.base_url for replica in replicas]
        model_id = affine.register_model("bench/affinity", *endpoints)
        rotating.register_model("bench/rotation", *endpoints)
        rows = affine.admin.get(affine.url(f"/v1/models/{model_id}/replicas")).json()
        by_id = {row["id"]: row["endpoint"] for row in rows}
        senders: dict[str, Callable[[dict[str, Any]], float]] = {
            "affinity": lambda body: client(affine.url("/v1"), affine_key).stream(
                {**body, "model": "bench/affinity"})[0],
            "rotation": lambda body: client(rotating.url("/v1"), rotating_key).stream(
                {**body, "model": "bench/rotation"})[0],
            "ideal": lambda body: client(_picked(body, by_id), "unused").stream(body)[0],
        }
        samples: dict[str, list[float]] = {way: [] for way in senders}
        for round_ in range(ROUNDS):  # the ways take turns, so a slower spell of a shared machine hits each alike
            for way, send in senders.items():
                samples[way] += _play(f"{way}-{round_}", send)
    finally:
        for replica in replicas:
            replica.stop()
    return _rows(samples)


def _picked(body: dict[str, Any], endpoints_by_id: dict[int, str]) -> str:
    """The endpoint the proxy's rendezvous order puts first for this request."""
    first = rendezvous(routing_key(body, CHAT), sorted(endpoints_by_id), lambda replica_id: replica_id)[0]
    return endpoints_by_id[first]


def _play(way: str, send: Callable[[dict[str, Any]], float]) -> list[float]:
    """The conversations of one way, turns interleaved; the follow-up turns' times to first token."""
    words = random.Random(way)
    systems = [f"You are assistant {way}-{n}. Remember these words: "
               + " ".join(words.choice(VOCABULARY) for _ in range(SYSTEM_WORDS)) for n in range(CONVERSATIONS)]
    follow_ups = []
    for turn in range(TURNS):
        for conversation, system in enumerate(systems):
            messages = [{"role": "system", "content": system}]
            for earlier in range(turn + 1):
                if earlier:
                    messages.append({"role": "assistant", "content": f"Noted, part {earlier}."})
                messages.append({"role": "user", "content": f"Conversation {conversation}, question {earlier}."})
            first_token = send({"model": "", "messages": messages, "max_tokens": 4, "temperature": 0})
            if turn:
                follow_ups.append(first_token)
    return follow_ups


def _rows(samples: dict[str, list[float]]) -> list[Row]:
    rows = []
    for share, label in ((0.5, "p50"), (0.9, "p90")):
        ideal = _quantile(samples["ideal"], share)
        for way, name in (("affinity", "prefix affinity"), ("rotation", "rotation (before)")):
            value = _quantile(samples[way], share)
            rows.append((f"routing: follow-up turn TTFT {label}, {name}", f"{ideal * 1000:.1f} ms (ideal: direct "
                         "to the key's replica)", f"{value * 1000:.1f} ms", f"{value / ideal:.2f}x the ideal"))
    return rows


def _quantile(samples: list[float], share: float) -> float:
    if share == 0.5:
        return statistics.median(samples)
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
