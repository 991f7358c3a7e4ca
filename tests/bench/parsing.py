"""`make bench`'s parsing rows: the CPU a hostile body costs before any key is checked, per MiB, against
`json.loads` of an ordinary chat body of the same size, measured in the same run.

Each body fills the chat body cap (MAX_CHAT_BODY_BYTES, 4 MiB); each figure is the best of a few runs of
`chalicelib.core.bounded_json.loads` (which refuses most of these), so a busy machine shows less noise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from chalicelib.core import bounded_json

CAP = 4 * 1024 * 1024
MIB = 1024 * 1024
RUNS = 5
HEAD = '{"model":"m","messages":'


def _fill(unit: str, head: str = HEAD, tail: str = "") -> bytes:
    return (head + unit * ((CAP - len(head) - len(tail)) // len(unit)) + tail).encode()


def hostile_bodies() -> dict[str, bytes]:
    """Shapes that each cost some parser the most: escapes, unterminated strings, depth, many small values."""
    return {
        "escaped quotes, then commas": _fill(",", HEAD + '"' + '\\"' * 100_000),
        "an unterminated string of escaped quotes": _fill('\\"', HEAD + '"'),
        "quotes and commas (many tiny strings)": _fill('",', HEAD + "["),
        "two-character strings": _fill('"ab",', HEAD + "["),
        "escaped backslashes": _fill("\\\\", HEAD + '"', '"}'),
        "nesting to the cap": _fill("[", HEAD),
        "empty objects": _fill("{},", HEAD + "["),
        "commas": _fill(",", HEAD + "["),
    }


def ordinary_body() -> bytes:
    message = {"role": "user", "content": "Summarise this paragraph about GPU replicas, please. " * 4}
    body = {"model": "m", "messages": [message] * (CAP // len(json.dumps(message)))}
    return json.dumps(body).encode()[:CAP]


def _cpu_ms_per_mib(work: Callable[[], object], size: int) -> float:
    best = float("inf")
    for _ in range(RUNS):
        started = time.process_time()
        try:
            work()
        except bounded_json.InvalidJson:
            pass
        best = min(best, time.process_time() - started)
    return best * 1000 / (size / MIB)


def parsing_rows() -> list[tuple[str, str, str, str]]:
    ordinary = ordinary_body()
    valid = ordinary[:ordinary.rindex(b"}, {")] + b"}]}"
    baseline = _cpu_ms_per_mib(lambda: json.loads(valid), len(valid))
    rows, worst = [], ("", 0.0)
    for name, body in hostile_bodies().items():
        cost = _cpu_ms_per_mib(lambda body=body: bounded_json.loads(body), len(body))
        worst = max(worst, (name, cost), key=lambda pair: pair[1])
        rows.append((f"parsing, {name}", f"{baseline:.2f} ms/MiB (json.loads, ordinary)", f"{cost:.2f} ms/MiB",
                     f"{cost / baseline:.2f}x"))
    rows.append(("parsing, the worst shape at the 4 MiB cap", f"{baseline:.2f} ms/MiB (json.loads, ordinary)",
                 f"{worst[1]:.2f} ms/MiB ({worst[0]})", f"{worst[1] / baseline:.2f}x; target <= 3x"))
    return rows


if __name__ == "__main__":
    for row in parsing_rows():
        print("  ".join(row))
