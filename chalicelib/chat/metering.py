"""Usage rows: one `metric` row per admitted request, written when its response ends.

Written also when the client goes away early or the replica fails, with what is known then. The row's
`operation` says which (chalicelib.chat.operations: "chat.completions", "completions", "embeddings";
rows written before it existed have none and were all chat). Embeddings generate nothing: their rows
count prompt tokens only (completion_tokens 0).

Prompts and answers are users' data: stored only when an operator opts in
(METRICS_STORE_CONTENT=true): the messages, prompt or embedding input as `input`, the generated choices
as `choices`. An embedding's vectors are never stored: they are large, and derived from the input.

A row is never lost silently, or metering could be dodged: the write is retried with backoff in
the time the invocation has left; stored content is cut to fit DynamoDB's 400 KB item limit (and
the row marked `content_truncated`); a row that still cannot be written is logged, as one JSON line
`chalicelib.admin.usage_replay` writes back later, and counted in the `UsageRowsLost` metric. Logged without its
prompt and answer: logs never hold them, whatever METRICS_STORE_CONTENT says.

After its row, the request is added to its hour's usage counters (`store.usage_counters`, what
`/v1/usage` reads) and its tokens to its key's month (`store.month_spend`, what the budget is checked
against). The counters are added to only once the row is written, so that they sum the rows: a row
logged for replay is counted by the replay, as is a row whose counters could not be added (logged too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.chat.access import Caller
from chalicelib.chat.request import ChatRequest
from chalicelib.core.errors import ApiError
from chalicelib.core.metric_names import USAGE_ROWS_LOST
from chalicelib.core.observability import COUNT, emit_metrics, logger
from chalicelib.core.settings import get_chat_settings, get_settings
from chalicelib.store import month_spend, usage_counters
from chalicelib.store.conditional import save_if
from chalicelib.store.sequences import IdBlocks
from chalicelib.store.tables import Metric

CLIENT_CLOSED = 499  # nginx's convention for "the client went away before the answer ended"
# DynamoDB refuses items over 400 KB (names and values); what the row holds besides content is small.
MAX_CONTENT_BYTES = 350_000
RETRY_DELAYS = (0.1, 0.4, 1.6)  # seconds before each retry; botocore has already retried each attempt
LOST_ROW_MESSAGE = "usage row not written"
UNCOUNTED_ROW_MESSAGE = "usage row not counted"  # written, but not added to the usage counters
_ids = IdBlocks("metric", get_chat_settings().metric_id_block)


class Meter:
    def __init__(self, caller: Caller, request: ChatRequest, started_at: float, deadline: float | None = None) -> None:
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
        self.deadline = deadline  # time.time() after which the row's retries must not hold the function up
        self.error: ApiError | None = None  # the error answered, if any (its code is the refusal's reason)
        self.replica_failures = 0  # replicas skipped for failing or timing out (chalicelib.chat.upstream)
        self.failed_over = False  # answered by a replica other than the first one tried
        self.relayed_pieces = 0  # generated pieces relayed (one per choice per event): at least a token each
        self.demand_counted = False  # an autoscaled model's demand counted already (chalicelib.chat.routing)

    def fail(self, error: ApiError) -> None:
        """The answer is `error`: before the first byte, or as a stream's last event."""
        self.status = error.status
        self.error = error

    def relayed(self, pieces: list[str]) -> None:
        """A streamed event relayed these generated pieces ("" for a tool call's)."""
        self.first_token()
        self.relayed_pieces += len(pieces)
        if self.store_content:
            self.answer.extend(pieces)

    def first_token(self) -> None:
        if self.time_to_first_token is None:
            self.time_to_first_token = round(time.perf_counter() - self._clock_start, 4)

    def observe_answer(self, payload: dict[str, Any]) -> None:
        self.usage = payload.get("usage") or None
        if self.store_content and self.request.operation.generates:
            self.answer.append(json.dumps(payload.get("choices")))

    def write(self) -> Metric:
        """The row, written; never raises: the answer has been delivered, losing the row must not turn it into
        an error."""
        row = self._row()
        failure = self._retried(lambda: self._save(row))
        if failure is not None:
            _log_lost_row(row, failure)
        else:
            failure = self._retried(lambda: usage_counters.count(row))
            if failure is not None:
                logger.error(UNCOUNTED_ROW_MESSAGE, extra={"usage_row": _loggable(row), "reason": repr(failure)})
        if row.total_tokens:
            self._spend(int(row.total_tokens))
        return row

    @staticmethod
    def _save(row: Metric) -> None:
        if row.id is None:
            row.id = _ids.next_id()
        # A retry after a failure that had written the row finds its id taken: written, once.
        save_if(row, Metric.id.does_not_exist())

    def _retried(self, write: Callable[[], None]) -> Exception | None:
        """None once `write` succeeds; its last failure if it fails every retry the deadline leaves room for."""
        for delay in (*RETRY_DELAYS, None):
            try:
                write()
                return None
            except Exception as error:  # noqa: BLE001 - retried, then logged whole; never the client's problem
                failure = error
            if delay is None or (self.deadline is not None and time.time() + delay > self.deadline):
                break
            time.sleep(delay)
        return failure

    def _spend(self, tokens: int) -> None:
        try:
            month_spend.add_tokens(self.caller.key_hash, self.started_at, tokens)
        except Exception as error:  # noqa: BLE001 - the budget is then lenient by these tokens; the row is kept
            logger.warning("tokens not added to the key's month", extra={"api_key_id": self.caller.key_id,
                                                                          "tokens": tokens, "reason": repr(error)})

    def _row(self) -> Metric:
        usage, estimated = self._usage()
        created = int(self.started_at)
        content_input, choices, truncated = self._content()
        return Metric(
            api_key_id=self.caller.key_id,
            created=created,
            model=self.request.model,
            operation=self.request.operation.name,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
            duration=round(time.perf_counter() - self._clock_start, 4),
            user_id=self.caller.user_id,
            replica_id=self.replica_id,
            time_to_first_token=self.time_to_first_token,
            status=self.status,
            streamed=self.request.stream,
            input=content_input,
            choices=choices,
            content_truncated=truncated or None,
            usage_estimated=estimated or None,
            expires_at=datetime.fromtimestamp(created, tz=UTC)
            + timedelta(days=get_settings().metric_ttl_days),
        )

    def _usage(self) -> tuple[dict[str, Any], bool]:
        """The tokens to meter, and whether they are estimated. The replica's figures (a stream's last running
        usage when it was cut) unless a stream relayed more pieces than they count: a replica that reports no
        usage, or a stream cut before its usage came. Then each relayed piece counts one completion token, and
        a prompt the replica did not count, a quarter of its UTF-8 bytes (about what a token is in English)."""
        usage = _metered_usage(self.usage or {}, self.request.operation.generates)
        completion = usage.get("completion_tokens")
        if not self.relayed_pieces or (isinstance(completion, int) and completion >= self.relayed_pieces):
            return usage, False
        prompt = usage.get("prompt_tokens")
        if not isinstance(prompt, int):
            prompt_bytes = len(json.dumps(self.request.body.get(self.request.operation.prompt_field)).encode())
            prompt = max(1, -(-prompt_bytes // 4))
        return {"prompt_tokens": prompt, "completion_tokens": self.relayed_pieces,
                "total_tokens": prompt + self.relayed_pieces}, True

    def _content(self) -> tuple[str | None, str | None, bool]:
        """The prompt and the answer as stored, cut to fit one item between them: (input, choices, cut)."""
        if not self.store_content:
            return None, None, False
        prompt = json.dumps(self.request.body.get(self.request.operation.prompt_field))
        answer = "".join(self.answer) or None
        prompt_bytes, answer_bytes = len(prompt.encode()), len((answer or "").encode())
        if prompt_bytes + answer_bytes <= MAX_CONTENT_BYTES:
            return prompt, answer, False
        # The answer keeps up to half the room, more if the prompt leaves it; the prompt gets the rest.
        answer_room = max(MAX_CONTENT_BYTES - prompt_bytes, MAX_CONTENT_BYTES // 2)
        answer = _cut(answer, answer_room) if answer else None
        return _cut(prompt, MAX_CONTENT_BYTES - len((answer or "").encode())), answer, True


def _metered_usage(usage: dict[str, Any], generates: bool) -> dict[str, Any]:
    """The usage as the replica reported it; for an operation that generates nothing, its prompt tokens only
    (OpenAI's embeddings usage has no completion_tokens, vLLM's says 0: the row says 0 for both)."""
    if generates or not usage:
        return usage
    prompt = usage.get("prompt_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": usage.get("total_tokens", prompt)}


def _cut(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` of UTF-8, never splitting a character."""
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def _loggable(row: Metric) -> dict[str, Any]:
    """The row for a log line, without the prompt and the answer whatever METRICS_STORE_CONTENT says: logs are
    read by more people, kept longer and copied further than the table. Replayed, such a row says its content
    was cut (`content_truncated`)."""
    logged = row.to_simple_dict()
    had_content = [logged.pop(name, None) for name in ("input", "choices")] != [None, None]
    if had_content:
        logged["content_truncated"] = True
    return logged


def _log_lost_row(row: Metric, error: BaseException) -> None:
    """The row, whole, on one JSON line (`chalicelib.admin.usage_replay` writes it back), and counted."""
    logger.error(LOST_ROW_MESSAGE, extra={"usage_row": _loggable(row), "reason": repr(error)})
    emit_metrics({}, [(USAGE_ROWS_LOST, COUNT, 1)])
