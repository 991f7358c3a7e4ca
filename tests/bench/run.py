"""`make bench`: what the proxy adds over calling the replica directly, measured in one run.

Everything runs on loopback: an AWS emulator that counts the DynamoDB calls it serves, a mock
vLLM replica, the local stack (started as `make run` starts it) and, when its wheels are installed, a real
model served by llama.cpp (tests/bench/real_model.py). Each figure is printed with
the baseline it is compared to, measured in the same run on the same machine. A second table
(tests/bench/idle_marking.py) compares a replica that may hibernate with one that may not.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.local.emulator import start_emulator  # noqa: E402
from infra.local.mock_vllm import MockVllm  # noqa: E402
from tests.bench.body_probe import bodies, event_bytes  # noqa: E402
from tests.bench.idle_marking import HEADER as IDLE_HEADER  # noqa: E402
from tests.bench.idle_marking import idle_marking_rows  # noqa: E402
from tests.bench.parsing import parsing_rows  # noqa: E402
from tests.bench.real_model import real_model_rows  # noqa: E402
from tests.bench.routing import routing_rows  # noqa: E402
from tests.integration.conftest import start_local_stack  # noqa: E402

MODEL = "bench/model"
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "300"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "40"))
# A client's pause between requests: longer than the writes after an answer (the usage row, its counter,
# the key's month) take on the local emulator, which serialises DynamoDB calls.
THINK_SECONDS = 0.05
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Measure me"}], "max_tokens": 8}


class Client:
    """One keep-alive connection, so both paths pay the same client-side costs."""

    def __init__(self, base_url: str, key: str = "unused") -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}

    def complete(self, body: dict) -> float:
        started = time.perf_counter()
        self.connection.request("POST", self.path, json.dumps(body), self.headers)
        response = response_ok(self.connection.getresponse())
        response.read()
        return time.perf_counter() - started

    def stream(self, body: dict) -> tuple[float, list[float]]:
        """Time to the first token, and the arrival time of every event."""
        started = time.perf_counter()
        self.connection.request("POST", self.path, json.dumps({**body, "stream": True}), self.headers)
        response = response_ok(self.connection.getresponse())
        arrivals, first_token = [], None
        while line := response.readline():
            if line.startswith(b"data: "):
                arrivals.append(time.perf_counter() - started)
                if first_token is None and b'"content":"' in line and b'"content":""' not in line:
                    first_token = arrivals[-1]
        return first_token or arrivals[0], arrivals


def response_ok(response: http.client.HTTPResponse) -> http.client.HTTPResponse:
    if response.status != 200:
        raise SystemExit(f"bench request failed: {response.status} {response.read()[:300]!r}")
    return response


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    emulator_url, emulator = start_emulator()
    stack = start_local_stack({"AWS_ENDPOINT_URL": emulator_url, "MOCK_REPLICA": "0"})
    rows: list[tuple[str, str, str, str]] = []
    idle_rows: list[tuple[str, str, str, str]] = []
    try:
        with MockVllm(model=MODEL) as fast, MockVllm(model=MODEL, pace_seconds=0.02, port=0) as paced:
            stack.register_model(MODEL, fast.base_url)
            key = stack.new_key(allowed_rpm=1_000_000)["api_key"]
            latency, added_p50 = latency_rows(fast, stack, key, emulator.app.operations)
            rows += latency + streaming_rows(fast, paced, stack, key)
            idle_rows = idle_marking_rows(stack, emulator, emulator_url, Client)
            rows += handler_rows(emulator_url, key, added_p50)
            rows += body_rows(emulator_url, key)
            rows += real_model_rows(stack, key, Client)
            rows += _routing(stack, key, emulator_url)
    finally:
        stack.stop()
    rows += cold_start_rows() + parsing_rows()
    print_table(rows)
    print()
    print_table(idle_rows, IDLE_HEADER)


def _routing(stack, key: str, emulator_url: str) -> list[tuple[str, str, str, str]]:
    """The routing rows: `stack` routes by prefix affinity; a second stack on the same tables rotates."""
    rotating = start_local_stack({"AWS_ENDPOINT_URL": emulator_url, "MOCK_REPLICA": "0", "PREFIX_AFFINITY": "off"})
    try:
        return routing_rows(stack, key, rotating, rotating.new_key(allowed_rpm=1_000_000)["api_key"], Client)
    finally:
        rotating.stop()


def latency_rows(replica: MockVllm, stack, key: str, operations) -> tuple[list[tuple[str, str, str, str]], float]:
    direct, proxied = Client(replica.base_url), Client(stack.url("/v1"), key)
    for _ in range(20):  # warm connections, caches and the replica list
        direct.complete(BODY)
        proxied.complete(BODY)
    time.sleep(0.5)  # let the warm-up's usage rows land before counting
    direct_times, proxy_times = [], []
    before = operations.copy()
    for _ in range(REQUESTS):  # interleaved, so both see the same machine load
        direct_times.append(direct.complete(BODY))
        proxy_times.append(proxied.complete(BODY))
        # A client's pause: the usage row is written after each answer, and the local emulator
        # serialises DynamoDB calls, so back-to-back requests would wait on the previous row's
        # write, which DynamoDB itself would not make them do.
        time.sleep(THINK_SECONDS)
    time.sleep(0.5)
    calls = operations - before
    per_request = sum(calls.values()) / REQUESTS
    breakdown = ", ".join(f"{name} {count / REQUESTS:.2f}" for name, count in sorted(calls.items()))
    rows = []
    for label, share in (("p50", 0.5), ("p99", 0.99)):
        base, through = percentile(direct_times, share), percentile(proxy_times, share)
        rows.append((f"non-streamed latency {label}", ms(base), ms(through),
                     f"+{ms(through - base)} ({through / base:.2f}x)"))
    rows.append(("DynamoDB calls per request", "0", f"{per_request:.2f}", breakdown))
    return rows, percentile(proxy_times, 0.5) - percentile(direct_times, 0.5)


def streaming_rows(fast: MockVllm, paced: MockVllm, stack, key: str) -> list[tuple[str, str, str, str]]:
    direct, proxied = Client(fast.base_url), Client(stack.url("/v1"), key)
    direct_ttft, proxy_ttft = [], []
    for _ in range(STREAMS):
        direct_ttft.append(direct.stream(BODY)[0])
        proxy_ttft.append(proxied.stream(BODY)[0])
        time.sleep(THINK_SECONDS)  # as in latency_rows: the previous answer's writes are not this request's wait
    base, through = statistics.median(direct_ttft), statistics.median(proxy_ttft)
    rows = [("streamed time to first token p50", ms(base), ms(through),
             f"+{ms(through - base)} ({through / base:.2f}x)")]
    stack.register_model("bench/paced", paced.base_url)
    body = {**BODY, "model": "bench/paced", "max_tokens": 20}
    paced.model = "bench/paced"
    direct_gaps, proxy_gaps = gaps(Client(paced.base_url), body), gaps(Client(stack.url("/v1"), key), body)
    drift = statistics.mean(abs(a - b) for a, b in zip(direct_gaps, proxy_gaps, strict=False))
    rows.append(("chunk gap, mean (paced 20 ms)", ms(statistics.mean(direct_gaps)), ms(statistics.mean(proxy_gaps)),
                 f"{ms(drift)} mean |difference| per gap"))
    return rows


def gaps(client: Client, body: dict) -> list[float]:
    collected: list[float] = []
    for _ in range(5):
        arrivals = client.stream(body)[1]
        collected += [later - earlier for earlier, later in zip(arrivals[1:-3], arrivals[2:-2], strict=True)]
    return collected


def cold_start_rows() -> list[tuple[str, str, str, str]]:
    probe = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"

    def median_import(module: str) -> float:
        runs = [float(subprocess.run([sys.executable, "-c", probe.format(module)], cwd=ROOT, check=True,
                                     capture_output=True, text=True).stdout) for _ in range(5)]
        return statistics.median(runs)

    baseline, handler = median_import("json"), median_import("chalicelib.chat.service")
    boto3 = median_import("boto3")
    return [("cold import of the chat handler", f"{ms(baseline)} (json)", ms(handler),
             f"{handler / boto3:.2f}x `import boto3` ({ms(boto3)})")]


def handler_rows(emulator_url: str, key: str, added_p50: float) -> list[tuple[str, str, str, str]]:
    """Peak memory of a streamed request, and the added latency net of the one DynamoDB round trip."""
    # The same tables as the stack's: its environment less TABLE_PREFIX (see start_local_stack).
    env = {name: value for name, value in os.environ.items() if not name.startswith("TABLE_")}
    env.update(AWS_ENDPOINT_URL=emulator_url, BENCH_MODEL=MODEL, BENCH_KEY=key)
    bare = "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))"
    baseline = int(subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True).stdout)
    probe = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "handler_probe.py")], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return [("chat handler probe", "-", "failed", probe.stderr.strip()[-200:])]
    measured = json.loads(probe.stdout.splitlines()[-1])
    round_trip, peak = measured["admit_seconds"], measured["peak_kib"]
    return [
        ("added p50 beyond the DynamoDB round trip", f"{ms(round_trip)} (the round trip)",
         ms(added_p50 - round_trip), "the proxy's own work before and after the replica"),
        ("peak memory, streamed request", f"{baseline / 1024:.1f} MB (bare python)", f"{peak / 1024:.1f} MB",
         f"{peak / baseline:.2f}x bare python; Lambda size 128 MB"),
    ]


def body_rows(emulator_url: str, key: str) -> list[tuple[str, str, str, str]]:
    """Peak memory of the chat function for the worst bodies within the cap, with a key and without."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TABLE_")}
    env.update(AWS_ENDPOINT_URL=emulator_url)
    probe = str(ROOT / "tests" / "bench" / "body_probe.py")
    measured: dict[tuple[str, str], tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, body in bodies(MODEL).items():
            for key_mode, api_key in (("key", key), ("no key", "hsk_made_up")):
                event = Path(scratch) / "event.json"
                event.write_bytes(event_bytes(body, api_key))
                run = subprocess.run([sys.executable, probe, str(event)], cwd=ROOT, env=env,
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    return [(f"peak memory, {name}", "-", "probe failed", run.stderr.strip()[-200:])]
                result = json.loads(run.stdout.splitlines()[-1])
                measured[(name, key_mode)] = (result["status"], result["peak_kib"])
    baseline = measured[("ordinary", "key")][1]
    rows = []
    for (name, key_mode), (status, peak) in measured.items():
        rows.append((f"peak memory, {name} ({key_mode})", f"{baseline / 1024:.1f} MB (ordinary request)",
                     f"{peak / 1024:.1f} MB ({status})", f"{peak / baseline:.2f}x; target <= 100 MB of 128 MB"))
    return rows


def print_table(rows: list[tuple[str, str, str, str]],
                header: tuple[str, str, str, str] = ("measure", "baseline", "through the proxy", "difference")) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
