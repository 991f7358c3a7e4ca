"""vLLM-shaped replies to `POST /v1/embeddings`, computed without a model: for MOCK_LLM mode, the local mock
replica and the tests. Standard library only.

Each input gets a deterministic unit vector of DEFAULT_DIMENSIONS numbers (or `dimensions`), the same for
the same text (a prompt of token ids reads as the words `t<id>`). `encoding_format: "base64"` gives the
base64 of the little-endian float32 array, as OpenAI and vLLM send it (the official SDKs ask for it by
default and decode it). Usage counts the inputs' tokens (chalicelib.chat.mock.replies.tokenize), with
`completion_tokens` 0 as vLLM reports it.

The mock model has a size: at most MAX_DIMENSIONS numbers per vector and MAX_NUMBERS per answer, so that a
request cannot make the mock (a 128 MB Lambda in MOCK_LLM mode) build more than a few megabytes.
"""

from __future__ import annotations

import base64
import math
import struct
import time
import uuid
import zlib
from typing import Any

from chalicelib.chat.mock import completions

DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 1024
MAX_NUMBERS = 262_144  # 2048 inputs (OpenAI's limit) of 128 numbers


def request_problem(request: dict[str, Any]) -> tuple[str, str] | None:
    """(param, message) for a request this mock model refuses with a 400 (as vLLM would), or None."""
    if not completions.is_prompt(request.get("input")) or request.get("input") in ("", []):
        return "input", "input: a non-empty string, list of strings, of token ids or of lists of token ids."
    dimensions = request.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)
                                   or not 1 <= dimensions <= MAX_DIMENSIONS):
        return "dimensions", f"dimensions: this model gives 1 to {MAX_DIMENSIONS} dimensions."
    if request.get("encoding_format") not in (None, "float", "base64"):
        return "encoding_format", "encoding_format: one of float, base64."
    if len(_inputs(request)) * _dimensions(request) > MAX_NUMBERS:
        return "input", f"input: this model embeds at most {MAX_NUMBERS} numbers per request."
    return None


def embeddings(request: dict[str, Any], *, model: str) -> dict[str, Any]:
    """vLLM's embeddings answer (an OpenAI `list` of `embedding` objects) for a request without a problem."""
    dimensions = _dimensions(request)
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for index, (text, _) in enumerate(_inputs(request)):
        vector = _vector(text, dimensions)
        encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"index": index, "object": "embedding", "embedding": encoded})
    tokens = sum(count for _, count in _inputs(request))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0, "prompt_tokens_details": None}
    return {"id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": data, "usage": usage}


def _inputs(request: dict[str, Any]) -> list[tuple[str, int]]:
    return completions.prompts({"prompt": request.get("input")})


def _dimensions(request: dict[str, Any]) -> int:
    return request.get("dimensions") or DEFAULT_DIMENSIONS


def _vector(text: str, dimensions: int) -> list[float]:
    # crc32, not hash(): str hashes change from one process to the next.
    seed = zlib.crc32(text.encode())
    raw = [math.sin(seed + 1.7 * (i + 1)) for i in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    # Rounded to float32, so that the float and base64 forms of one vector are the same numbers.
    return [struct.unpack("<f", struct.pack("<f", value / norm))[0] for value in raw]
