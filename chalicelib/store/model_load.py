"""A model's demand per minute, for the scaler: requests counted on one bookkeeping item per scaled model.

`load#<model id>` holds the current minute (`rl_window`), the requests counted in it (`rl_count`) and in the
minute before (`rl_previous`); a "minute" is LOAD_WINDOW_SECONDS, 60 but in tests. The chat path adds each
request once its answer has ended, never before the replica; refused ones count too (no replica ready, every
replica full): they are demand the replicas did not take. The common case is one conditional UpdateItem (same
minute: add); the first request of a minute moves the count to `rl_previous` with one more. No read on the chat
path, no scan anywhere: the scaler reads the item.
"""

from __future__ import annotations

from chalicelib.core.settings import get_settings
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import Bookkeeping

PREFIX = "load#"


def key(model_id: int) -> str:
    return f"{PREFIX}{int(model_id)}"


def count(model_id: int, now: float, requests: int = 1) -> None:
    """Add `requests` to the model's minute of `now`."""
    item = Bookkeeping(key(model_id))
    minute = _window_of(now)
    count_ = Bookkeeping.rl_count
    if update_if(item, [count_.add(requests)], Bookkeeping.rl_window == minute):
        return
    # A new minute: the one just ended becomes the previous minute's count; an older one counts as nothing.
    opened = [Bookkeeping.rl_window.set(minute), count_.set(requests)]
    if update_if(item, [*opened, Bookkeeping.rl_previous.set(count_)], Bookkeeping.rl_window == minute - 1):
        return
    stale = Bookkeeping.rl_window.does_not_exist() | (Bookkeeping.rl_window < minute - 1)
    if update_if(item, [*opened, Bookkeeping.rl_previous.set(0)], stale):
        return
    # Another request opened the minute meanwhile, or a clock ahead of ours opened the next one: count there.
    update_if(item, [count_.add(requests)], Bookkeeping.rl_window >= minute)


def per_minute(model_id: int, now: float) -> float:
    """The model's demand in requests per minute: the last whole minute's, or this one's so far if higher (a
    burst shows before its minute ends)."""
    try:
        item = Bookkeeping.get(key(model_id), consistent_read=True)
    except Bookkeeping.DoesNotExist:
        return 0.0
    minute = _window_of(now)
    window, current = int(item.rl_window or 0), int(item.rl_count or 0)
    if window >= minute:
        counted = max(current, int(item.rl_previous or 0))
    elif window == minute - 1:
        counted = current
    else:
        counted = 0
    return counted * 60 / get_settings().load_window_seconds


def _window_of(now: float) -> int:
    return int(now // get_settings().load_window_seconds)


def forget(model_id: int) -> None:
    Bookkeeping(key(model_id)).delete()
