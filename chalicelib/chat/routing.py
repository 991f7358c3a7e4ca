"""Which replica serves a request.

The model's serving replicas are cached in the function for a few seconds (a deliberate cache:
replica changes show up within REPLICA_CACHE_SECONDS). A request with a routing key (its prompt's prefix,
chalicelib.chat.affinity) tries the replicas in the key's rendezvous order, so that a conversation keeps to
the replica holding its KV cache, and spills over to at most affinity.spill_limit of them; others are spread
by rotating the starting replica. Replicas that failed recently go to the back of the line. A replica with a
`rate_limit` (requests per minute it accepts) is reserved with a conditional write on its item,
as exact as the per-key limit; replicas without one cost no write.

A model whose replicas all hibernate has none to serve: the request wakes one (chalicelib.chat.waking)
and is answered 503 `model_waking`. A replica that fails a request makes its model's replicas be read
again (it may be draining for hibernation, see chalicelib/provisioning/power.py), and a request that
every cached replica refused tries those it did not (or learns that the model now wakes).

An autoscaled model's demand is counted once each request has been answered (count_demand), or as soon as it
starts waiting for its model to wake: a request a replica can take never waits for the count.

A replica that may hibernate has its minute of use recorded as soon as it answers, again each new minute
while a stream runs and at the end (UseMarks), at most once a minute per function instance, and not at
all when the cached row already shows this minute (another instance wrote it): the idle check reads it,
so a request in flight keeps its replica from hibernating. The writes run beside the answer, never
before it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib.chat import affinity, waking
from chalicelib.chat.waking import Dormant
from chalicelib.core.errors import NotFound, ServiceUnavailable
from chalicelib.core.idle_rule import used_minute
from chalicelib.core.observability import logger
from chalicelib.core.replica_statuses import DORMANT, takes_requests
from chalicelib.core.settings import get_chat_settings
from chalicelib.store import model_load
from chalicelib.store.minute_counter import count_request
from chalicelib.store.replica_use import mark_used
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
    tls_fingerprint: str | None = None  # a provisioned replica's certificate pin (chalicelib.core.pinned_tls)
    hibernate_after_seconds: int | None = None  # set: its use is recorded for the idle check
    last_used_minute: int | None = None  # as last read

    def url(self, path: str) -> str:
        """The replica's URL for an operation's path under its endpoint (`/chat/completions`, `/embeddings`)."""
        return self.endpoint + path


@dataclass(frozen=True)
class _CachedModel:
    fetched_at: float
    exists: bool
    targets: tuple[Target, ...]
    dormant: tuple[Dormant, ...] = ()
    scaled_id: int | None = None  # the model's id when it has autoscaling: its demand is counted


WAKING_REREAD_SECONDS = 1.0
_cache: dict[str, _CachedModel] = {}
_failed_at: dict[int, float] = {}
_used_minute: dict[int, int] = {}  # replica id -> the minute this instance last recorded
_rotation = itertools.count()
_lock = threading.Lock()


def model_exists(model: str) -> bool:
    return _lookup(model).exists


def targets_for(model: str, fresh: bool = False, key: str | None = None) -> list[Target]:
    """The model's serving replicas, in the order to try them (`fresh`: read now, not from the cache; `key`:
    the request's routing key, whose order and spill limit apply).

    None serving but some hibernating: one is woken, and ModelWaking (a 503) is raised.
    """
    entry = _lookup(model, fresh)
    if not entry.targets and entry.dormant and time.monotonic() - entry.fetched_at > WAKING_REREAD_SECONDS:
        # About to answer "waking, retry in N s" from rows read a while ago: the wake may be over. Read again
        # (at most once a WAKING_REREAD_SECONDS per instance and model), so a caller is served, or told the truth.
        entry = _lookup(model, fresh=True)
    if not entry.exists:
        raise NotFound(f"The model `{model}` does not exist.", code="model_not_found", param="model")
    if not entry.targets and entry.dormant:
        raise _wake(model, entry)
    if not entry.targets:
        raise ServiceUnavailable(f"The model `{model}` has no replica ready to serve.", code="no_replica_ready")
    if key is not None and len(entry.targets) > 1:
        ordered = affinity.rendezvous(key, entry.targets, lambda target: target.replica_id)
        ordered = ordered[:affinity.spill_limit(len(ordered))]
    else:
        start = next(_rotation) % len(entry.targets)
        ordered = list(entry.targets[start:] + entry.targets[:start])
    now = time.monotonic()
    return sorted(ordered, key=lambda target: now - _failed_at.get(target.replica_id, -1e9) < FAILURE_COOLDOWN_SECONDS)


def mark_failed(target: Target) -> None:
    """The replica failed a request: tried last for a while, and its model's replicas read again by the next
    request (it may have been marked for hibernation, or deleted, since they were cached)."""
    _failed_at[target.replica_id] = time.monotonic()
    with _lock:
        for model, entry in list(_cache.items()):
            if any(cached.replica_id == target.replica_id for cached in entry.targets):
                del _cache[model]


def untried(model: str, tried: list[Target], key: str | None = None) -> list[Target]:
    """After every replica in `tried` refused: the model's serving replicas read afresh, less those tried.
    A model whose replicas now all hibernate is woken and ModelWaking raised (its Retry-After tells the truth)."""
    tried_ids = {target.replica_id for target in tried}
    return [target for target in targets_for(model, fresh=True, key=key) if target.replica_id not in tried_ids]


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


def note_use(target: Target, now: float, write: Callable[[int, int], object] | None = None) -> None:
    """Record the replica's minute of use if it may hibernate, unless this instance recorded it already: the
    minute is claimed here (one write per minute however many requests), then `write` (mark_used) makes it."""
    minute = used_minute(now)
    if target.hibernate_after_seconds is None:
        return
    with _lock:
        if minute in (target.last_used_minute, _used_minute.get(target.replica_id)):
            return
        _used_minute[target.replica_id] = minute
    (write or mark_used)(target.replica_id, minute)


class UseMarks:
    """The minutes of use one request records on the replicas it used: when the replica answers, each new
    minute while it streams, and at the end. So an idle check (chalicelib/provisioning/idle_check.py) never
    finds a replica idle while a request runs on it. Each write runs in a thread of its own, so the answer
    never waits for it; `finish()` waits for them (the invocation must not end with one in flight)."""

    def __init__(self) -> None:
        self.targets: list[Target] = []
        self._writes: list[threading.Thread] = []

    def started(self, target: Target) -> None:
        self.targets.append(target)
        self.tick(target)

    def tick(self, target: Target) -> None:
        """A chunk relayed from `target`: a new minute of use is recorded (a dict lookup otherwise)."""
        note_use(target, time.time(), self._write_beside)

    def finish(self, timeout: float = 5.0) -> None:
        """At the end of the request: its last minute too, and every write done."""
        for target in self.targets:
            self.tick(target)
        for write in self._writes:
            write.join(timeout)

    def _write_beside(self, replica_id: int, minute: int) -> None:
        write = threading.Thread(target=_mark_logged, args=(replica_id, minute), name="use-mark", daemon=True)
        write.start()
        self._writes.append(write)


def scaled_model_id(model: str) -> int | None:
    """The model's id if it has autoscaling, as this instance last read it (None: no autoscaling, or not read)."""
    entry = _cache.get(model)
    return entry.scaled_id if entry is not None else None


def count_demand(model: str, started_at: float) -> None:
    """One request of demand for an autoscaled model (store.model_load), answered or refused for want of a
    replica: after the answer, or as soon as the request waits for its model to wake (the scaler must see it
    before it ends). Known from the cached model row, so a model without autoscaling costs nothing."""
    scaled_id = scaled_model_id(model)
    if scaled_id is None:
        return
    try:
        model_load.count(scaled_id, started_at)
    except Exception:  # noqa: BLE001 - a lost count only delays a scale-out; never the caller's error
        logger.warning("demand not counted", exc_info=True, extra={"model": model})


def _mark_logged(replica_id: int, minute: int) -> None:
    try:
        mark_used(replica_id, minute)
    except Exception:  # noqa: BLE001 - a lost mark only risks an early hibernation; never the caller's error
        logger.warning("replica use not recorded", exc_info=True, extra={"replica_id": replica_id})


def _wake(model: str, entry: _CachedModel) -> waking.ModelWaking:
    answer = waking.wake(model, list(entry.dormant), time.time())
    # The cached rows now know a wake is on its way: the next requests of this instance ask for none.
    asked = tuple(Dormant(d.replica_id, d.status, d.wake_seconds, d.wake_started_at, True) for d in entry.dormant)
    with _lock:
        if _cache.get(model) is entry:
            _cache[model] = _CachedModel(entry.fetched_at, entry.exists, entry.targets, asked, entry.scaled_id)
    return answer


def _lookup(model: str, fresh: bool = False) -> _CachedModel:
    entry = _cache.get(model)
    if fresh or entry is None or time.monotonic() - entry.fetched_at > get_chat_settings().replica_cache_seconds:
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
    replicas = list(Replica.by_model.query(found.id))
    serving = tuple(_target(replica) for replica in replicas if takes_requests(replica.vm_status, replica.endpoint))
    dormant = tuple(
        Dormant(int(replica.id), replica.vm_status, _int(replica.wake_seconds), _int(replica.wake_started_at),
                replica.wake_requested_at is not None)
        for replica in replicas if replica.vm_status in DORMANT
    )
    return _CachedModel(fetched_at, True, serving, dormant, int(found.id) if found.autoscaling is not None else None)


def _target(replica: Replica) -> Target:
    return Target(int(replica.id), replica.endpoint, _int(replica.rate_limit) or None, replica.api_key,
                  replica.tls_fingerprint, _int(replica.hibernate_after_seconds) or None,
                  _int(replica.last_used_minute))


def _int(value: float | None) -> int | None:
    return int(value) if value is not None else None
