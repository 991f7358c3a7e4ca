"""`GET /v1/usage`: requests, tokens and errors per model, user or key, over a window, from the hourly counters.

Never a scan of the `metric` table: the counters (`store.usage_counters`) are kept as requests are
metered, one item per (hour, key, model), and a summary reads one day's partition per day of the
window. Grouping and rolling hours up into days or into one row per group is done here. The window's
bounds are whole UTC hours (the counters' grain), so a summary sums exactly the rows whose `created`
falls in [start, end).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.core.clock import iso
from chalicelib.core.validation import field_error
from chalicelib.store.tables import UsageCount
from chalicelib.store.usage_counters import hours

GROUP_BY = ("model", "user_id", "api_key_id")
GRANULARITIES = ("day", "hour")
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors")
MAX_DAYS = 366  # one Query per day of the window
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def summary(query: Mapping[str, str]) -> dict[str, Any]:
    start, end = _window(query.get("start"), query.get("end"))
    group_by = _choice(query, "group_by", GROUP_BY) or "model"
    granularity = _choice(query, "granularity", GRANULARITIES)
    totals: dict[tuple[str, Any], dict[str, int]] = {}
    for count in _counters(start, end):
        key = (_period(count, granularity), getattr(count, group_by))
        row = totals.setdefault(key, dict.fromkeys(COUNTS, 0))
        for name in COUNTS:
            row[name] += int(getattr(count, name) or 0)
    data = [{"group": group, **({"period": period} if granularity else {}), **row}
            for (period, group), row in sorted(totals.items(), key=lambda item: (item[0][0], str(item[0][1])))]
    return {"data": data, "start": _iso(start), "end": _iso(end)}


def _counters(start: datetime, end: datetime) -> Iterator[UsageCount]:
    """Every counter of the hours from `start` to `end` (excluded): one Query per day."""
    day = start.replace(hour=0)
    last_hour = end - _HOUR
    while day <= last_hour:
        first = start.hour if day == start.replace(hour=0) else 0
        last = last_hour.hour if day == last_hour.replace(hour=0) else 23
        yield from hours(f"{day:%Y-%m-%d}", first, last)
        day += _DAY


def _period(count: UsageCount, granularity: str | None) -> str:
    if granularity is None:
        return ""
    hour = count.bucket.split("#", 1)[0] if granularity == "hour" else "00"
    return f"{count.day}T{hour}:00:00Z"


def _window(raw_start: str | None, raw_end: str | None) -> tuple[datetime, datetime]:
    """[start, end) as given, each defaulting to the current month's bound (UTC)."""
    month = datetime.fromtimestamp(time.time(), tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + timedelta(days=32)).replace(day=1)
    start = _moment("start", raw_start) or month
    end = _moment("end", raw_end) or next_month
    if end <= start:
        raise field_error("end", "Must be later than start.")
    if end - start > MAX_DAYS * _DAY:
        raise field_error("end", f"The window may span at most {MAX_DAYS} days.")
    return start, end


def _moment(name: str, raw: str | None) -> datetime | None:
    """A date (its midnight) or a date-time on a whole hour; UTC unless it says otherwise."""
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise field_error(name, "Not a valid date or datetime (ISO 8601, e.g. 2025-05-01 or "
                                "2025-05-01T13:00:00Z).") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise field_error(name, "Not a valid date or datetime.") from None
    if (parsed.minute, parsed.second, parsed.microsecond) != (0, 0, 0):
        raise field_error(name, "Must be a whole hour (usage is counted per UTC hour).")
    if not 1970 <= parsed.year <= 9998:
        raise field_error(name, "Must be between the years 1970 and 9998.")
    return parsed


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in allowed:
        raise field_error(name, f"Must be one of: {', '.join(allowed)}.")
    return value


def _iso(moment: datetime) -> str:
    return iso(int(moment.timestamp()))
