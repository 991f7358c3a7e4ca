"""Which replica serves a request.

The model's serving replicas are cached in the function for a few seconds (a deliberate cache:
replica changes show up within REPLICA_CACHE_SECONDS). Requests are spread by rotating the
starting replica; replicas that failed recently go to the back of the line. A replica with a
`rate_limit` (requests per minute it accepts) is reserved with a conditional write on its item,
as exact as the per-key limit; replicas without one cost no write.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from chalicelib.errors import NotFound, ServiceUnavailable
from chalicelib.replica_statuses import SUCCESS
from chalicelib.settings import get_chat_settings
from chalicelib.store.minute_counter import count_request
from chalicelib.store.tables import LlmModel, Replica

FAILURE_COOLDOWN_SECONDS = 10.0
# Model names come from callers: unknown ones are cached too (one read each), so the cache is
# bounded, oldest fetch out first, or a flood of made-up names would grow the function's memory.
MAX_CACHED_MODELS = 256


@dataclass(frozen=True)
class Target:
    replica_id: int
    endpoint: str
    rate_limit: int | None
    api_key: str | None = field(default=None, repr=False)  # the replica's bearer: kept out of reprs and logs
    tls_fingerprint: str | None = None  # a provisioned replica's certificate pin (chalicelib.pinned_tls)

    def url(self, path: str) -> str:
        """The replica's URL for an operation's path under its endpoint (`/chat/completions`, `/embeddings`)."""
        return self.endpoint + path


@dataclass(frozen=True)
class _CachedModel:
    fetched_at: float
    exists: bool
    targets: tuple[Target, ...]


_cache: dict[str, _CachedModel] = {}
_failed_at: dict[int, float] = {}
_rotation = itertools.count()
_lock = threading.Lock()


def model_exists(model: str) -> bool:
    return _lookup(model).exists


def targets_for(model: str) -> list[Target]:
    """The model's serving replicas, in the order to try them."""
    entry = _lookup(model)
    if not entry.exists:
        raise NotFound(f"The model `{model}` does not exist.", code="model_not_found", param="model")
    if not entry.targets:
        raise ServiceUnavailable(f"The model `{model}` has no replica ready to serve.", code="no_replica_ready")
    start = next(_rotation) % len(entry.targets)
    rotated = entry.targets[start:] + entry.targets[:start]
    now = time.monotonic()
    return sorted(rotated, key=lambda target: now - _failed_at.get(target.replica_id, -1e9) < FAILURE_COOLDOWN_SECONDS)


def mark_failed(target: Target) -> None:
    _failed_at[target.replica_id] = time.monotonic()


def reserve(target: Target, now: float) -> bool:
    """Count a request against the replica's own limit; False when it is full this minute."""
    if not target.rate_limit:
        return True
    try:
        counted, _ = count_request(Replica, target.replica_id, Replica.rate_limit, now,
                                   precondition=Replica.id.exists())
    except Replica.DoesNotExist:
        return False  # deleted since the replica list was cached
    return counted


def _lookup(model: str) -> _CachedModel:
    entry = _cache.get(model)
    if entry is None or time.monotonic() - entry.fetched_at > get_chat_settings().replica_cache_seconds:
        entry = _fetch(model)
        with _lock:
            _cache.pop(model, None)
            _cache[model] = entry
            while len(_cache) > MAX_CACHED_MODELS:
                del _cache[next(iter(_cache))]
    return entry


def _fetch(model: str) -> _CachedModel:
    fetched_at = time.monotonic()
    try:
        found = LlmModel.get(model)
    except LlmModel.DoesNotExist:
        return _CachedModel(fetched_at, False, ())
    serving = tuple(
        Target(int(replica.id), replica.endpoint, int(replica.rate_limit) if replica.rate_limit else None,
               replica.api_key, replica.tls_fingerprint)
        for replica in Replica.by_model.query(found.id)
        if replica.vm_status == SUCCESS and replica.endpoint
    )
    return _CachedModel(fetched_at, True, serving)
