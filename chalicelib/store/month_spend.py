"""A key's tokens this calendar month (UTC): what its `token_budget` is checked against when it is admitted.

Kept on the key's item (`month`: YYYYMM, `month_tokens`) so that the one conditional write that admits
a request (chat.access) can read it. Added to after each request; the first request of a new month
starts the count afresh, conditionally, so that two such requests racing never lose each other's tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.store.conditional import update_if
from chalicelib.store.tables import ApiKey


def month_of(moment: float) -> int:
    when = datetime.fromtimestamp(moment, tz=UTC)
    return when.year * 100 + when.month


def add_tokens(key_hash: str, moment: float, tokens: int) -> bool:
    """Add `tokens` spent by a request started at `moment`; False if they count no more (a past month)
    or the key is gone."""
    month = month_of(moment)
    item = ApiKey(key_hash)
    exists = ApiKey.key_hash.exists()  # an update would create a key deleted meanwhile
    add = [ApiKey.month_tokens.add(tokens)]
    if update_if(item, add, exists & (ApiKey.month == month)):
        return True
    opens = ApiKey.month.does_not_exist() | (ApiKey.month < month)
    if update_if(item, [ApiKey.month.set(month), ApiKey.month_tokens.set(tokens)], exists & opens):
        return True
    # Neither: another request opened our month between the two writes (add now), or the key is gone,
    # or its month is later than ours (a request of last month that ended late: it counts no more).
    return update_if(item, add, exists & (ApiKey.month == month))


def tokens_this_month(key: ApiKey, now: float) -> int:
    return int(key.month_tokens or 0) if key.month == month_of(now) else 0
