"""Integer ids, as the original toolkit had them, allocated atomically.

One UpdateItem with `ADD` per id: DynamoDB serialises writes to an item, so two concurrent
callers can never get the same number (a scan for the maximum could). Busy writers (usage
rows) reserve a block of ids in one such update and hand them out from memory.
"""

from __future__ import annotations

import threading

from chalicelib.store.tables import Bookkeeping


def next_id(logical_table: str) -> int:
    return _reserve(logical_table, 1)


def _reserve(logical_table: str, count: int) -> int:
    """Reserve `count` ids; returns the highest of them."""
    counter = Bookkeeping(f"seq#{logical_table}")
    counter.update(actions=[Bookkeeping.value.add(count)])
    return int(counter.value)


class IdBlocks:
    """Ids from blocks reserved `size` at a time; ids stay unique, gaps appear on restarts."""

    def __init__(self, logical_table: str, size: int) -> None:
        self._table = logical_table
        self._size = max(1, size)
        self._lock = threading.Lock()
        self._next = 1
        self._last = 0

    def next_id(self) -> int:
        with self._lock:
            if self._next > self._last:
                self._last = _reserve(self._table, self._size)
                self._next = self._last - self._size + 1
            allocated = self._next
            self._next += 1
            return allocated
