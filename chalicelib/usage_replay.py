"""Writing back the usage rows that the chat function logged because it could not write them.

    python -m chalicelib.usage_replay < chat-function-logs.jsonl

Reads log lines (the chat function's JSON lines, as CloudWatch Logs or `chalice logs` give them;
other lines are skipped) and writes each logged `usage_row` to the metric table. A row that has an
id is written only if that id is free, so replaying the same logs twice writes nothing twice; a row
logged without an id (its id could not be reserved either) gets a new one. Each row is then added to
the usage counters (`/v1/usage`) unless a replay added it before (a guard item per row id), so
the counters keep summing the rows; rows logged as written but not counted are counted the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

from pynamodb.exceptions import PutError

from chalicelib.chat.metering import LOST_ROW_MESSAGE, UNCOUNTED_ROW_MESSAGE
from chalicelib.store.conditional import condition_failed
from chalicelib.store.sequences import next_id
from chalicelib.store.tables import Metric
from chalicelib.store.usage_counters import count_once


def replay(lines: Iterable[str]) -> tuple[int, int]:
    """Write the lost rows found in `lines`; returns (written, already there)."""
    written = present = 0
    for message, row in _logged_rows(lines):
        metric = Metric()
        metric.from_simple_dict(row)
        if message == LOST_ROW_MESSAGE:
            if metric.id is None:
                metric.id = next_id("metric")
            try:
                metric.save(condition=Metric.id.does_not_exist())
                written += 1
            except PutError as error:
                if not condition_failed(error):
                    raise
                present += 1
        count_once(metric)
    return written, present


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
    done, skipped = replay(sys.stdin)
    print(f"{done} usage rows written, {skipped} already present")
