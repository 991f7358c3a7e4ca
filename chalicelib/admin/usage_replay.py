"""Writing back the usage rows that the chat function logged because it could not write them.

    python -m chalicelib.admin.usage_replay < chat-function-logs.jsonl

Reads log lines (the chat function's JSON lines, as CloudWatch Logs or `chalice logs` give them;
other lines are skipped) and writes each logged `usage_row` to the metric table. A row that has an
id is written only if that id is free, so replaying the same logs twice writes nothing twice; a row
logged without an id (its id could not be reserved either) gets a new one. Each row is then added to
the usage counters (`/v1/usage`) unless a replay added it before (a guard item per row id), so
the counters keep summing the rows; rows logged as written but not counted are counted the same way.

A row that cannot be written or counted (a model name past DynamoDB's key limits, from a version that did not
bound it, or a line cut short) is skipped and reported on standard error, and the replay goes on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable

from pynamodb.exceptions import PutError, PynamoDBException

from chalicelib.chat.metering import LOST_ROW_MESSAGE, UNCOUNTED_ROW_MESSAGE
from chalicelib.store.conditional import condition_failed
from chalicelib.store.sequences import next_id
from chalicelib.store.tables import Metric
from chalicelib.store.usage_counters import count_once


def replay(lines: Iterable[str], on_skip: Callable[[dict, str], None] | None = None) -> tuple[int, int]:
    """Write the lost rows found in `lines`; returns (written, already there). A row that cannot be replayed
    goes to `on_skip(row, reason)` (by default, a line on standard error) and the replay goes on."""
    written = present = 0
    for message, row in _logged_rows(lines):
        try:
            outcome = _replay_row(message, row)
        except (PynamoDBException, ValueError, TypeError, KeyError, AttributeError) as error:
            (on_skip or _report_skip)(row, f"{type(error).__name__}: {error}")
            continue
        written += outcome == "written"
        present += outcome == "present"
    return written, present


def _replay_row(message: str, row: dict) -> str:
    """Writes (a lost row) and counts one row: "written", "present" (written before) or "counted"."""
    metric = Metric()
    metric.from_simple_dict(row)
    outcome = "counted"
    if message == LOST_ROW_MESSAGE:
        if metric.id is None:
            metric.id = next_id("metric")
        try:
            metric.save(condition=Metric.id.does_not_exist())
            outcome = "written"
        except PutError as error:
            if not condition_failed(error):
                raise
            outcome = "present"
    count_once(metric)
    return outcome


def _report_skip(row: dict, reason: str) -> None:
    print(f"usage row {row.get('id')} of api key {row.get('api_key_id')} skipped: {reason}", file=sys.stderr)


def _logged_rows(lines: Iterable[str]) -> Iterable[tuple[str, dict]]:
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        message = record.get("message") if isinstance(record, dict) else None
        if message in (LOST_ROW_MESSAGE, UNCOUNTED_ROW_MESSAGE) and "usage_row" in record:
            yield message, record["usage_row"]


if __name__ == "__main__":
    skipped: list[str] = []

    def _skip(row: dict, reason: str) -> None:
        skipped.append(reason)
        _report_skip(row, reason)

    done, present = replay(sys.stdin, _skip)
    print(f"{done} usage rows written, {present} already present, {len(skipped)} skipped")
