"""A per-minute request counter kept on an item, exact however many callers race.

The item holds the current window (the Unix minute, `rl_window`) and the requests counted in it
(`rl_count`); its limit is another of its attributes (a key's `allowed_rpm`, a replica's
`rate_limit`). The common case is one conditional UpdateItem: same window and under the limit,
count. DynamoDB applies it atomically, so with a limit of L exactly L requests are counted in a
minute. A refused update is followed by a consistent read that tells why, and the request is
refused only if the window it read is full: when another request opened the window between our
update and our read, the count is tried again rather than refused.
"""

from __future__ import annotations

from collections.abc import Callable

from pynamodb.attributes import NumberAttribute
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model

from chalicelib.store.conditional import update_if

WINDOW_SECONDS = 60
# Each round either counts, refuses on a full window, or has seen the window move on (which
# happens once a minute, or once more for a caller whose clock runs behind another's).
_ROUNDS = 4


def window_of(now: float) -> int:
    return int(now // WINDOW_SECONDS)


def reset_seconds(now: float) -> int:
    """Seconds until the current window ends (at least 1, so that a Retry-After is never 0)."""
    return max(1, WINDOW_SECONDS - int(now) % WINDOW_SECONDS)


def count_request(
    table: type[Model],
    key: str | int,
    limit: NumberAttribute,
    now: float,
    *,
    precondition: Condition,
    explain: Callable[[Model], None] | None = None,
) -> tuple[bool, Model]:
    """Count one request against the item's limit in the minute of `now`.

    Returns (counted, item): the item as updated when counted, as read when refused. `precondition`
    is part of every update and must fail on a missing item (an update would create it).
    `explain(item)` is called on every read after a refused update, to raise the reason when it is
    not the limit. Raises `table.DoesNotExist` if there is no such item.
    """
    item = table(key)
    window = window_of(now)
    current = item
    for _ in range(_ROUNDS):
        same_window = (table.rl_window == window) & (table.rl_count < limit)
        if update_if(item, [table.rl_count.add(1)], precondition & same_window):
            return True, item
        current = table.get(key, consistent_read=True)
        if explain is not None:
            explain(current)
        limit_value = getattr(current, limit.attr_name)
        if limit_value is None:
            return True, current  # the limit was lifted: nothing to count against
        if current.rl_window is not None and current.rl_window > window:
            window = int(current.rl_window)  # another caller's clock is ahead: count in its minute
            continue
        if current.rl_window == window:
            if (current.rl_count or 0) >= limit_value:
                return False, current
            continue  # another request opened this window after our update: count again
        new_window = table.rl_window.does_not_exist() | (table.rl_window < window)
        if update_if(item, [table.rl_window.set(window), table.rl_count.set(1)], precondition & new_window):
            return True, item
    return False, current
