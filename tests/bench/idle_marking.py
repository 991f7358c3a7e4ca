"""`make bench` rows for issue #12: what recording a replica's minute of use (for the idle check) costs.

Two models on two mock replicas, alike but for one replica row's `hibernate_after_seconds`, set on the row
directly: the admin API allows it on provisioned replicas only, and the chat path reads nothing else of
hibernation. Requests to both, and to a replica directly, are interleaved through the running local stack,
and each request's DynamoDB calls (by operation and table) are split at the moment its replica receives
it: before (what the client waits for) and after the answer. The stack runs on the machine's clock, so
those requests fall within one minute; the pattern across minutes is measured in a process of its own
whose clock the bench moves a minute at a time (tests/bench/minute_probe.py): waiting out real minutes
would cost minutes.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3

from infra.local.mock_vllm import MockVllm

Row = tuple[str, str, str, str]
HEADER: Row = ("idle marking (issue #12)", "replica without hibernate_after_seconds",
               "with hibernate_after_seconds", "difference")
ROUNDS = int(os.environ.get("BENCH_IDLE_ROUNDS", "60"))
HIBERNATE_AFTER_SECONDS = 300
# The emulator has served no call for this long: the previous answer's writes have all landed.
SETTLE_SECONDS = 0.025
SECONDS_PER_ROUND = 0.15  # a generous estimate (0.12 s here), to start the rounds early enough in a minute
MARK = "UpdateItem replicas"  # the one write of a replica's minute of use (chalicelib/store/replica_use.py)
PROBE = Path(__file__).with_name("minute_probe.py")
ROOT = Path(__file__).resolve().parents[2]


class TableCalls:
    """WSGI middleware in front of the emulator: counts DynamoDB calls as `<operation> <table>`.

    The emulator counts operations only; the table tells a replica's minute of use (`UpdateItem replicas`)
    from the usage rows' id block (`UpdateItem bookkeeping`, one per 50 rows) and the key's count.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if operation:
            raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(raw)
            table = str(json.loads(raw or b"{}").get("TableName", "")).rpartition("-")[2]
            with self._lock:
                self.calls[f"{operation} {table}".strip()] += 1
        return self.app(environ, start_response)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return self.calls.copy()


class ContactedReplica(MockVllm):
    """A mock replica that notes the DynamoDB calls counted so far when a request reaches it."""

    def __init__(self, model: str, counted: TableCalls) -> None:
        super().__init__(model=model)
        self.counted = counted
        self.at_contact: Counter[str] = Counter()

    def _record(self, request: dict[str, Any] | None) -> None:  # called as a request arrives, before the answer
        self.at_contact = self.counted.snapshot()
        super()._record(request)


def idle_marking_rows(stack: Any, emulator: Any, emulator_url: str, client: Callable[..., Any]) -> list[Row]:
    """`emulator`: the emulator's WSGI server; `client(base_url, key)` makes the bench's keep-alive client."""
    counted = TableCalls(emulator.app)
    emulator.app = counted
    try:
        with ContactedReplica("bench/always-on", counted) as plain, \
                ContactedReplica("bench/may-hibernate", counted) as sleepy:
            stack.register_model(plain.model, plain.base_url)
            model_id = stack.register_model(sleepy.model, sleepy.base_url)
            replica_id = stack.admin.get(stack.url(f"/v1/models/{model_id}/replicas")).json()[0]["id"]
            _may_hibernate(emulator_url, replica_id)
            # A key for each: a key's first request of a minute opens its window (a read and a second write
            # before the replica), which one shared key would charge to whichever model came first.
            keys = [stack.new_key(allowed_rpm=1_000_000)["api_key"] for _ in range(2)]
            rows = _stack_rows(stack, keys, counted, client, plain, sleepy)
            return rows + _minute_rows(emulator_url, keys[0], plain.model, sleepy.model)
    finally:
        emulator.app = counted.app


def _may_hibernate(emulator_url: str, replica_id: int) -> None:
    dynamodb = boto3.client("dynamodb", endpoint_url=emulator_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    table = next(name for name in dynamodb.list_tables()["TableNames"] if name.endswith("-replicas"))
    dynamodb.update_item(TableName=table, Key={"id": {"N": str(replica_id)}},
                         UpdateExpression="SET hibernate_after_seconds = :after",
                         ExpressionAttributeValues={":after": {"N": str(HIBERNATE_AFTER_SECONDS)}})


def _stack_rows(stack: Any, keys: list[str], counted: TableCalls, client: Callable[..., Any],
                plain: ContactedReplica, sleepy: ContactedReplica) -> list[Row]:
    direct = client(plain.base_url)
    proxied = {plain.model: client(stack.url("/v1"), keys[0]), sleepy.model: client(stack.url("/v1"), keys[1])}
    left_in_minute = 60 - time.time() % 60
    if left_in_minute < ROUNDS * SECONDS_PER_ROUND:
        time.sleep(left_in_minute + 0.1)  # so that every request falls in one minute
    _settle(counted)
    first_minute = int(time.time() // 60)
    samples: dict[str, list[tuple[float, Counter[str], Counter[str]]]] = {plain.model: [], sleepy.model: []}
    direct_times = []
    for number in range(ROUNDS):  # interleaved, so all three see the same machine load
        direct_times.append(direct.complete(_body(plain.model)))
        # Each first in turn: the usage rows' id block (a write every 50 rows) falls on either side.
        for replica in (plain, sleepy) if number % 2 else (sleepy, plain):
            before = counted.snapshot()  # settled: after the previous request, or before the first
            seconds = proxied[replica.model].complete(_body(replica.model))
            _settle(counted)
            after = counted.snapshot() - replica.at_contact
            samples[replica.model].append((seconds, replica.at_contact - before, after))
    minutes = int(time.time() // 60) - first_minute + 1
    cases = (samples[plain.model], samples[sleepy.model])
    direct_p50 = statistics.median(direct_times)
    added = [statistics.median(seconds for seconds, _, _ in case) - direct_p50 for case in cases]
    before = [sum((calls for _, calls, _ in case), Counter()) for case in cases]
    after = [sum((calls for _, _, calls in case), Counter()) for case in cases]
    return [
        (f"DynamoDB calls before the replica, per request ({ROUNDS} requests, {minutes} minute(s))",
         *(_per_request(calls, ROUNDS) for calls in before), "equal" if before[0] == before[1] else "differ"),
        (f"DynamoDB calls after the answer, all {ROUNDS} requests", *(_total(calls) for calls in after),
         _marks(after, cases[1])),
        ("added latency p50 (beyond the direct call)", f"+{_ms(added[0])}", f"+{_ms(added[1])}",
         f"{added[1] / added[0]:.2f}x"),
    ]


def _minute_rows(emulator_url: str, key: str, plain_model: str, sleepy_model: str) -> list[Row]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TABLE_")}
    env.update(AWS_ENDPOINT_URL=emulator_url, BENCH_KEY=key, BENCH_MODELS=f"{plain_model},{sleepy_model}")
    probe = subprocess.run([sys.executable, str(PROBE)], cwd=ROOT, env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        return [("minute probe", "-", "failed", probe.stderr.strip()[-200:])]
    measured = json.loads(probe.stdout.splitlines()[-1])
    cases = [[(0.0, Counter(request["before"]), Counter(request["after"])) for request in measured["models"][model]]
             for model in (plain_model, sleepy_model)]
    before = [[calls for _, calls, _ in case] for case in cases]
    after = [sum((calls for _, _, calls in case), Counter()) for case in cases]
    return [(f"after the answer, {measured['minutes']} minutes x {measured['requests_per_minute']} requests "
             "(clock moved 60 s)", *(_total(calls) for calls in after),
             f"{_marks(after, cases[1])}; calls before the replica {'equal' if before[0] == before[1] else 'differ'}")]


def _marks(after: list[Counter[str]], case: list[tuple[float, Counter[str], Counter[str]]]) -> str:
    """The minute-of-use writes (UpdateItem on the replicas table) the hibernating replica added, and after which
    of its requests (numbered from 1)."""
    added = after[1][MARK] - after[0][MARK]
    at = ", ".join(str(number) for number, (_, _, calls) in enumerate(case, 1) if calls[MARK]) or "none"
    return f"+{added} {MARK}, after request {at}"


def _body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Measure me"}], "max_tokens": 8}


def _settle(counted: TableCalls) -> None:
    last = -1
    while (total := sum(counted.snapshot().values())) != last:
        last = total
        time.sleep(SETTLE_SECONDS)


def _per_request(calls: Counter[str], requests: int) -> str:
    breakdown = ", ".join(f"{name} {count / requests:.2f}" for name, count in sorted(calls.items()))
    return f"{sum(calls.values()) / requests:.2f} ({breakdown})"


def _total(calls: Counter[str]) -> str:
    return f"{sum(calls.values())} ({', '.join(f'{name} {count}' for name, count in sorted(calls.items()))})"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
