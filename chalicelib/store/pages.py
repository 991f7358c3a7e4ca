"""One shape of pagination from the data layer up: `(items, next_token)`.

A page is a key-condition query on a table's `listing` index, newest (highest id) first. The
`next_token` names only the last id returned, so it can be checked strictly (a tampered token
is a 400, not a 500) and never carries a key of the table (an API key's hash, for one).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pynamodb.models import Model

from chalicelib.core import bounded_json
from chalicelib.core.errors import BadRequest

_MAX_ID = 2**63 - 1


def newest_first(
    table: type[Model], partition: str, limit: int, next_token: str | None
) -> tuple[list[Any], str | None]:
    condition = table.id < _decode(next_token, partition) if next_token else None
    items = list(table.listing_index.query(partition, condition, scan_index_forward=False, limit=limit))
    return items, (_encode(partition, items[-1].id) if len(items) == limit else None)


def _encode(partition: str, last_id: int) -> str:
    token = json.dumps({"table": partition, "before": int(last_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _decode(token: str, partition: str) -> int:
    """The id to continue below; the token must be one this table's pages gave out."""
    try:
        decoded = bounded_json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), max_depth=2)
    except (binascii.Error, ValueError, bounded_json.InvalidJson):
        raise BadRequest("Invalid next_token.") from None
    if not isinstance(decoded, dict) or decoded.keys() != {"table", "before"} or decoded["table"] != partition:
        raise BadRequest("Invalid next_token.")
    before = decoded["before"]
    if isinstance(before, bool) or not isinstance(before, int) or not 1 <= before <= _MAX_ID:
        raise BadRequest("Invalid next_token.")
    return before
