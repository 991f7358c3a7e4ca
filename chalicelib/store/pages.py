"""One shape of pagination from the data layer up: `(items, next_token)`.

A `next_token` is DynamoDB's LastEvaluatedKey, serialised and base64url-encoded; it is checked
against the index's key attributes before it is used, so a tampered token is a 400, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from pynamodb.models import Model

from chalicelib.errors import BadRequest

_NUMBER = re.compile(r"^-?\d{1,38}$")


def newest_first(
    table: type[Model], partition: str, limit: int, next_token: str | None
) -> tuple[list[Any], str | None]:
    start = _decode(next_token, _key_attributes(table)) if next_token else None
    results = table.listing_index.query(partition, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    items = list(results)
    last = results.last_evaluated_key
    return items, (_encode(last) if last and len(items) == limit else None)


def _key_attributes(table: type[Model]) -> dict[str, str]:
    """Attribute name -> DynamoDB type letter, for the table's keys plus the listing index's."""
    attributes = table.get_attributes()
    names = {"listing", "id", table._hash_keyname}
    if table._range_keyname:
        names.add(table._range_keyname)
    return {name: attributes[name].attr_type for name in names}


def _encode(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str, expected: dict[str, str]) -> dict[str, Any]:
    invalid = BadRequest("Invalid next_token.")
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(key, dict) or key.keys() != expected.keys():
        raise invalid
    for name, attr_type in expected.items():
        value = key[name]
        if not isinstance(value, dict) or list(value) != [attr_type] or not isinstance(value[attr_type], str):
            raise invalid
        if attr_type == "N" and not _NUMBER.match(value[attr_type]):
            raise invalid
        if attr_type == "S" and not 0 < len(value[attr_type]) <= 2048:
            raise invalid
    return key
