"""Prefix affinity: a conversation's requests go to the replica that holds its prompt's KV cache (issue #24).

vLLM and llama.cpp reuse the cache of a prompt prefix they have seen, which skips most of the prefill of a
follow-up turn; that pays only if the turn reaches the same replica. With no state shared between Lambda
instances, every instance must pick that replica alone: the request's routing key orders the model's
replicas by rendezvous (highest random weight) hashing, the same order everywhere, and a replica that joins
or leaves moves only the keys it ranks first.

The key is the caller's `prompt_cache_key` (OpenAI's name for it; relayed untouched) when it sends one, else
a hash of what every turn of a conversation starts with: the system messages and the first user message of a
chat, the leading characters of a completion's prompt. At most PREFIX_CHARACTERS are hashed, so a long
prompt costs no more than a short one. Embeddings keep rotating: there is no prefix cache to find again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, TypeVar

from chalicelib.chat.operations import CHAT, COMPLETIONS, Operation

PREFIX_CHARACTERS = 4096  # of the leading content hashed: enough to tell system prompts apart, bounded
T = TypeVar("T")


def routing_key(body: dict[str, Any], operation: Operation) -> str | None:
    """The request's routing key; None where affinity does not apply (embeddings, or nothing to key on)."""
    if operation not in (CHAT, COMPLETIONS):
        return None
    explicit = body.get("prompt_cache_key")
    if isinstance(explicit, str) and explicit:
        return "key:" + explicit
    leading = _leading_chat(body.get("messages")) if operation is CHAT else _leading_prompt(body.get("prompt"))
    if not leading:
        return None
    return "prefix:" + hashlib.blake2b(leading[:PREFIX_CHARACTERS].encode("utf-8", "surrogatepass"),
                                       digest_size=16).hexdigest()


def _leading_chat(messages: Any) -> str:
    """The system messages and the first user message: what every turn of a conversation repeats."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            break
        role = message.get("role")
        if role in ("system", "developer"):
            parts.append(f"{role}\x00{_text(message.get('content'))}")
        elif role == "user":
            parts.append(f"user\x00{_text(message.get('content'))}")
            break
        else:
            break
        if sum(len(part) for part in parts) >= PREFIX_CHARACTERS:
            break
    return "\x01".join(parts)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content[:PREFIX_CHARACTERS]
    if isinstance(content, list):  # content parts: their text, other parts by their kind
        return "".join(part.get("text", "") if isinstance(part, dict) and isinstance(part.get("text"), str)
                       else json.dumps(part, sort_keys=True)[:256] for part in content[:16])[:PREFIX_CHARACTERS]
    return ""


def _leading_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt[:PREFIX_CHARACTERS]
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, str):
            return first[:PREFIX_CHARACTERS]
        if isinstance(first, int):  # token ids
            return ",".join(str(token) for token in prompt[:PREFIX_CHARACTERS // 4])
        if isinstance(first, list):
            return ",".join(str(token) for token in first[:PREFIX_CHARACTERS // 4])
    return ""


def rendezvous(key: str, items: Sequence[T], identity: Any) -> list[T]:
    """`items` in the key's order: highest weight first, the weight a hash of the key and the item's identity."""
    def weight(item: T) -> int:
        digest = hashlib.blake2b(f"{key}\x00{identity(item)}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return sorted(items, key=weight, reverse=True)


def spill_limit(replicas: int) -> int:
    """How many of its replicas one key may use: the first in its order, and those after it when the ones before
    refuse (at their rate_limit, failing, busy). Half of them, at least two: a hot key spills over, but never
    takes every replica from the keys that rank the others first."""
    return min(replicas, max(2, math.ceil(replicas / 2)))
