"""A model whose replicas all hibernate is woken by its first request, which is answered 503 `model_waking`.

Exactly one wake starts however many requests race: each asks with a conditional write on one replica
(chalicelib/store/wake_requests.py), and only the one whose write lands starts the wake workflow, under a
name derived from its ask (a second start of that name is a no-op). The requests get `Retry-After` from
how long the replica's last wake took (what is left of it, while one runs), or DEFAULT_WAKE_SECONDS for
a replica never woken yet. A caller that would rather wait says so (`X-Wait-For-Model`, see service.py).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.core import replica_statuses as statuses
from chalicelib.core import step_functions
from chalicelib.core.errors import BadRequest, ServiceUnavailable
from chalicelib.core.observability import logger
from chalicelib.core.settings import get_chat_settings
from chalicelib.store.wake_requests import request_wake

WAITING_HEADER = "x-wait-for-model"
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,3})?")


@dataclass(frozen=True)
class Dormant:
    """A replica of the model that hibernates (or is on its way to or from it), as routing last read it."""

    replica_id: int
    status: str
    wake_seconds: int | None
    wake_started_at: int | None
    wake_requested: bool


class ModelWaking(ServiceUnavailable):
    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"The model `{model}` is waking up from hibernation; retry in about {retry_after} s "
                         f"(or send `X-Wait-For-Model: <seconds>` to wait for it).",
                         code="model_waking", headers={"retry-after": str(retry_after)})
        self.retry_after = retry_after


def wake(model: str, dormant: list[Dormant], now: float) -> ModelWaking:
    """Make sure one of the model's replicas is waking; the 503 to answer meanwhile."""
    replica = _the_one_to_wake(dormant)
    if replica.status != statuses.WAKING and not replica.wake_requested:
        _ask(replica, now)
    return ModelWaking(model, _retry_after(replica, now))


def _the_one_to_wake(dormant: list[Dormant]) -> Dormant:
    """One already waking if any; else the quickest to wake last time (an unknown time counts as slow)."""
    waking = [replica for replica in dormant if replica.status == statuses.WAKING or replica.wake_requested]
    if waking:
        return waking[0]
    return min(dormant, key=lambda replica: (replica.wake_seconds is None, replica.wake_seconds or 0))


def _ask(replica: Dormant, now: float) -> None:
    asked_at = request_wake(replica.replica_id, int(now * 1000))
    if asked_at is None:
        return  # another request asked first: its wake is the one
    try:
        # Under `chalice deploy` the ARN is derived from the workflow's name: STS is asked the account once.
        arn = step_functions.state_machine_arn(get_chat_settings().wake_state_machine_arn, "wake")
        if not arn:
            logger.warning("wake asked but no wake workflow is configured", extra={"replica_id": replica.replica_id})
            return
        step_functions.start_once(arn, step_functions.wake_execution_name(replica.replica_id, asked_at),
                                  {"action": "waking", "replica_id": replica.replica_id})
    except Exception:  # noqa: BLE001 - the caller is answered model_waking regardless
        # The ask is recorded: the idle check starts its wake (under the same name) within a minute or so.
        logger.exception("wake asked but its workflow did not start", extra={"replica_id": replica.replica_id})
        return
    logger.info("model wake started", extra={"replica_id": replica.replica_id})


def _retry_after(replica: Dormant, now: float) -> int:
    expected = replica.wake_seconds or get_chat_settings().default_wake_seconds
    if replica.status == statuses.WAKING and replica.wake_started_at is not None:
        expected -= now - replica.wake_started_at
    return max(1, math.ceil(expected))


def wait_seconds(headers: Mapping[str, str], deadline: float) -> float:
    """How long the caller asked to wait for a waking model (0: not at all), capped by the request's time."""
    raw = headers.get(WAITING_HEADER, "").strip()
    if not raw:
        return 0.0
    if not _SECONDS.fullmatch(raw):
        raise BadRequest(f"`X-Wait-For-Model` must be a number of seconds, not {raw[:40]!r}.",
                         code="invalid_wait_for_model", param=WAITING_HEADER)
    return max(0.0, min(float(raw), deadline - time.time()))
