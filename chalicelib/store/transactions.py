"""All-or-nothing writes: a request that fails leaves nothing half-written behind."""

from __future__ import annotations

from functools import lru_cache

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.core.settings import get_settings

MAX_ITEMS = 100  # DynamoDB's limit on actions in one TransactWriteItems


@lru_cache(maxsize=1)
def _connection() -> Connection:
    """One connection (a botocore client) per process: building one costs more than the write."""
    settings = get_settings()
    return Connection(region=settings.aws_region, host=settings.dynamodb_endpoint)


def transaction() -> TransactWrite:
    return TransactWrite(connection=_connection())


def failed_conditions(error: TransactWriteError) -> list[int]:
    """Positions of the actions whose condition failed, in the order they were added."""
    reasons = error.cancellation_reasons or []
    return [index for index, reason in enumerate(reasons) if reason and reason.code == "ConditionalCheckFailed"]
