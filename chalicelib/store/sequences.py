"""Integer ids, as the original toolkit had them, allocated atomically.

One UpdateItem with `ADD` per id: DynamoDB serialises writes to an item, so two concurrent
callers can never get the same number (a scan for the maximum could).
"""

from __future__ import annotations

from chalicelib.store.tables import Bookkeeping


def next_id(logical_table: str) -> int:
    counter = Bookkeeping(f"seq#{logical_table}")
    counter.update(actions=[Bookkeeping.value.add(1)])
    return int(counter.value)
