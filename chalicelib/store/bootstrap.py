"""Creating the tables where CloudFormation does not: the local stack and the tests."""

from __future__ import annotations

from chalicelib.store.tables import ALL_TABLES


def ensure_tables() -> None:
    """Create every table that is missing, with its indexes and TTL; safe to call again."""
    for table in ALL_TABLES:
        if not table.exists():
            table.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
