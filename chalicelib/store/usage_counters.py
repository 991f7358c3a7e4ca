"""Usage counters: requests, tokens and errors per (UTC hour, API key, model), kept as requests are metered.

One UpdateItem with ADD per usage row, after the row is written: DynamoDB applies ADD atomically, so
concurrent requests never lose a count. A summary reads one partition (a day) per day of its window.
`count_once` is replay's: a transaction that adds a row's counts only if a guard item says it never did.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from pynamodb.exceptions import TransactWriteError

from chalicelib.store.tables import Bookkeeping, Metric, UsageCount
from chalicelib.store.transactions import failed_conditions, transaction


def bucket_of(row: Metric) -> UsageCount:
    moment = datetime.fromtimestamp(int(row.created), tz=UTC)
    return UsageCount(f"{moment:%Y-%m-%d}", f"{moment:%H}#{row.api_key_id}#{row.model}")


def count(row: Metric) -> None:
    """Add `row` to its hour's counters (creating them on first use)."""
    bucket_of(row).update(actions=_additions(row))


def count_once(row: Metric) -> bool:
    """Add `row` to its counters unless it was added by a replay before; False if it was."""
    guard = Bookkeeping(f"counted#{row.id}")
    try:
        with transaction() as write:
            write.save(guard, condition=Bookkeeping.pk.does_not_exist())
            write.update(bucket_of(row), actions=_additions(row))
    except TransactWriteError as error:
        if failed_conditions(error) == [0]:
            return False
        raise
    return True


def hours(day: str, first_hour: int, last_hour: int) -> Iterator[UsageCount]:
    """The counters of `day` ("YYYY-MM-DD") from `first_hour` to `last_hour`, both included: one Query."""
    # '#' sorts just before '$': "13$" follows every "13#..." and precedes "14#...".
    return UsageCount.query(day, UsageCount.bucket.between(f"{first_hour:02d}#", f"{last_hour:02d}$"))


def _additions(row: Metric) -> list:
    errors = 1 if (row.status or 0) >= 400 else 0
    return [
        UsageCount.requests.add(1),
        UsageCount.prompt_tokens.add(int(row.prompt_tokens or 0)),
        UsageCount.completion_tokens.add(int(row.completion_tokens or 0)),
        UsageCount.total_tokens.add(int(row.total_tokens or 0)),
        UsageCount.errors.add(errors),
        UsageCount.api_key_id.set(int(row.api_key_id)),
        UsageCount.model.set(row.model),
        *([UsageCount.user_id.set(row.user_id)] if row.user_id else []),
    ]
