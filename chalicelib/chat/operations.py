"""The OpenAI operations the data plane relays, and what sets each apart; all else is one pipeline.

Authentication, the per-key and per-replica limits, replica choice and failover, deadlines, the streaming
relay, errors and the usage row are the same for the three (chalicelib.chat.service). An operation says
only: its path (the client's under /v1, the replica's under its endpoint), its body's schema and rules,
whether it can stream, which field is its prompt (stored with METRICS_STORE_CONTENT), and whether it
generates text (embeddings do not: no completion tokens, and their vectors are never stored).

Its `name` is the usage row's `operation`: the official SDKs' name for it (`client.chat.completions`,
`client.completions`, `client.embeddings`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.chat import rules
from chalicelib.chat.schema import CHAT_COMPLETION, COMPLETION, EMBEDDING

API_PREFIX = "/v1"


@dataclass(frozen=True, eq=False)  # the three below are the only ones: compared and hashed by identity
class Operation:
    name: str
    path: str  # the client's, as the proxy serves it
    schema: dict[str, Any] = field(repr=False)
    rules: Callable[[dict[str, Any]], None] = field(repr=False)
    prompt_field: str
    can_stream: bool
    generates: bool

    @property
    def replica_path(self) -> str:
        """The path under a replica's endpoint (the OpenAI base URL, `http://host:8000/v1`)."""
        return self.path.removeprefix(API_PREFIX)


CHAT = Operation("chat.completions", "/v1/chat/completions", CHAT_COMPLETION, rules.chat_rules,
                 prompt_field="messages", can_stream=True, generates=True)
COMPLETIONS = Operation("completions", "/v1/completions", COMPLETION, rules.completion_rules,
                        prompt_field="prompt", can_stream=True, generates=True)
EMBEDDINGS = Operation("embeddings", "/v1/embeddings", EMBEDDING, rules.embedding_rules,
                       prompt_field="input", can_stream=False, generates=False)
OPERATIONS = (CHAT, COMPLETIONS, EMBEDDINGS)
OPERATIONS_BY_PATH = {operation.path: operation for operation in OPERATIONS}


def for_path(path: str) -> Operation | None:
    """The operation a request path names: `/v1/...`, or with a stage or prefix before it (`/api/v1/...`)."""
    path = path.split("?", 1)[0].rstrip("/")
    # "/v1/completions" is no suffix of "/v1/chat/completions": a suffix match cannot confuse the two.
    return next((operation for operation in OPERATIONS if path.endswith(operation.path)), None)
