"""`make bench` rows over a real model: llama.cpp serving SmolLM2-135M-Instruct on this machine's CPU, called
through the proxy and directly, interleaved so that both see the same load."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from infra.local import llama_replica

Row = tuple[str, str, str, str]
ROUNDS = 8
# Greedy and long enough for a steady decode rate; ignore_eos so every round yields the same number of tokens.
BODY = {"model": llama_replica.SMOLLM2_MODEL, "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": 64, "temperature": 0, "seed": 1, "ignore_eos": True}


def real_model_rows(stack: Any, key: str, client: Callable[..., Any]) -> list[Row]:
    """`client(base_url, key)` makes the bench's keep-alive client; `stack` is the running local stack."""
    if not llama_replica.available():
        return [("real model (llama.cpp, SmolLM2-135M)", "-", "skipped",
                 f"wheels not installed: {llama_replica.INSTALL_HINT}")]
    with llama_replica.LlamaReplica() as replica:
        stack.register_model(llama_replica.SMOLLM2_MODEL, replica.base_url)
        urls = {"direct": (replica.base_url, "unused"), "proxied": (stack.url("/v1"), key)}
        for url, api_key in urls.values():
            client(url, api_key).stream(BODY)  # warm up: prompt cache, replica list, connections
        samples: dict[str, list[tuple[float, float]]] = {"direct": [], "proxied": []}
        for _ in range(ROUNDS):
            for path, (url, api_key) in urls.items():
                # A connection per stream: llama.cpp's server closes a connection after a streamed reply.
                samples[path].append(_measure(client(url, api_key)))
    return _rows(samples)


def _measure(client: Any) -> tuple[float, float]:
    """Time to the first token, and tokens per second after it."""
    first_token, arrivals = client.stream(BODY)
    tokens = [moment for moment in arrivals if moment >= first_token]
    # The events after the last token (finish reason, usage, [DONE]) are not tokens.
    content = tokens[: BODY["max_tokens"]]
    rate = (len(content) - 1) / (content[-1] - content[0]) if len(content) > 1 else 0.0
    return first_token, rate


def _rows(samples: dict[str, list[tuple[float, float]]]) -> list[Row]:
    ttft = {path: statistics.median(sample[0] for sample in runs) for path, runs in samples.items()}
    rate = {path: statistics.median(sample[1] for sample in runs) for path, runs in samples.items()}
    added = ttft["proxied"] - ttft["direct"]
    return [
        ("real model: time to first token p50", _ms(ttft["direct"]), _ms(ttft["proxied"]),
         f"+{_ms(added)} ({ttft['proxied'] / ttft['direct']:.2f}x)"),
        ("real model: tokens per second p50", f"{rate['direct']:.1f}/s", f"{rate['proxied']:.1f}/s",
         f"{(rate['proxied'] / rate['direct'] - 1) * 100:+.1f}%"),
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
