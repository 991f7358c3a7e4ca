"""`/v1/tables`: the original toolkit's raw table view, one page at a time, newest first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.admin import api_keys, llm_models, replicas
from chalicelib.core.errors import BadRequest, NotFound
from chalicelib.core.settings import LOGICAL_TABLES
from chalicelib.store.pages import newest_first
from chalicelib.store.tables import TABLES_BY_LOGICAL_NAME

MAX_PAGE = 100

# Columns in the original's order first, then ours. API keys show the masked form only, secrets their names.
_ROWS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "api_key": api_keys.describe,
    "metric": lambda row: _columns(row, (
        "id", "api_key_id", "input", "created", "model", "choices", "prompt_tokens", "total_tokens",
        "completion_tokens", "duration", "user_id", "replica_id", "time_to_first_token", "status", "streamed",
        "content_truncated", "operation", "usage_estimated",
    )),
    "llm_models": llm_models.describe,
    "replicas": replicas.describe_row,
    "replica_security_rules": lambda row: _columns(row, (
        "id", "replica_id", "direction", "protocol", "ethertype", "remote_ip_prefix",
        "port_range_min", "port_range_max",
    )),
}


def table_names() -> list[str]:
    return list(LOGICAL_TABLES)


def page(table_name: str, limit: str | None, next_token: str | None) -> dict[str, Any]:
    if table_name not in _ROWS:
        raise NotFound(f'No table "{table_name}": the tables are {", ".join(sorted(_ROWS))}')
    items, token = newest_first(
        TABLES_BY_LOGICAL_NAME[table_name], table_name, _page_size(limit), next_token or None
    )
    return {"data": [_ROWS[table_name](item) for item in items], "next_token": token}


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return MAX_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}.")
    return int(raw)


def _columns(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}
