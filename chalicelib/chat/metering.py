"""Usage rows: one `metric` row per admitted chat request, written when its response ends.

Written also when the client goes away early or the replica fails, with what is known then.
Prompts and answers are users' data: stored only when an operator opts in
(METRICS_STORE_CONTENT=true).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.chat.access import Caller
from chalicelib.chat.request import ChatRequest
from chalicelib.observability import logger
from chalicelib.settings import get_chat_settings, get_settings
from chalicelib.store.sequences import IdBlocks
from chalicelib.store.tables import Metric

CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer ended"
_ids = IdBlocks("metric", get_chat_settings().metric_id_block)


class Meter:
    def __init__(self, caller: Caller, request: ChatRequest, started_at: float) -> None:
        self.caller = caller
        self.request = request
        self.started_at = started_at
        self._clock_start = time.perf_counter()
        self.replica_id: int | None = None
        self.status = 200
        self.usage: dict[str, Any] | None = None
        self.time_to_first_token: float | None = None
        self.store_content = get_chat_settings().store_content
        self.answer: list[str] = []

    def first_token(self) -> None:
        if self.time_to_first_token is None:
            self.time_to_first_token = round(time.perf_counter() - self._clock_start, 4)

    def observe_answer(self, payload: dict[str, Any]) -> None:
        self.usage = payload.get("usage") or None
        if self.store_content:
            self.answer.append(json.dumps(payload.get("choices")))

    def write(self) -> None:
        """Never raises: the answer has been delivered, losing the row must not turn it into an error."""
        try:
            self._row().save()
        except Exception:  # noqa: BLE001 - logged, and the client's response is unaffected
            logger.exception("usage row not written", extra={"api_key_id": self.caller.key_id})

    def _row(self) -> Metric:
        usage = self.usage or {}
        created = int(self.started_at)
        return Metric(
            _ids.next_id(),
            api_key_id=self.caller.key_id,
            created=created,
            model=self.request.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
            duration=round(time.perf_counter() - self._clock_start, 4),
            user_id=self.caller.user_id,
            replica_id=self.replica_id,
            time_to_first_token=self.time_to_first_token,
            status=self.status,
            streamed=self.request.stream,
            input=json.dumps(self.request.body.get("messages")) if self.store_content else None,
            choices="".join(self.answer) if self.store_content and self.answer else None,
            expires_at=datetime.fromtimestamp(created, tz=UTC)
            + timedelta(days=get_settings().metric_ttl_days),
        )
