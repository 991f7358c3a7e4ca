"""A burst need not wait for the scaler's next minute: a request refused for want of capacity nudges it.

When a request for an autoscaled model is answered 503 because no replica was ready or every replica was at
its limit (`no_replica_ready`, `replicas_at_capacity`), the chat path, after the answer, marks the model
nudged with one conditional write (at most once per NUDGE_SECONDS per model, however many requests and
instances are refused at once) and the one whose write lands invokes the scaler asynchronously for that model
(Lambda's Event invocation: nothing waits for it). A nudge that fails is logged; the scheduled run comes anyway.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from chalicelib.core.observability import logger
from chalicelib.core.settings import get_chat_settings, get_settings
from chalicelib.store.conditional import update_if
from chalicelib.store.tables import LlmModel

NUDGE_SECONDS = 10
CAPACITY_REFUSALS = frozenset({"no_replica_ready", "replicas_at_capacity"})
SOURCE = "hyperstack-llm-proxy.chat"


def nudge(model_id: int, model_name: str, now: float) -> bool:
    """Ask the scaler to look at the model now, unless someone did within NUDGE_SECONDS; True if asked."""
    function = get_chat_settings().scale_function_name
    if function is None:
        return False
    try:
        due = LlmModel.scale_nudged_at.does_not_exist() | (LlmModel.scale_nudged_at < int(now) - NUDGE_SECONDS)
        if not update_if(LlmModel(model_name), [LlmModel.scale_nudged_at.set(int(now))],
                         (LlmModel.id == model_id) & due):
            return False
        _lambda().invoke(FunctionName=function, InvocationType="Event",
                         Payload=json.dumps(scale_event(model_id, now)).encode())
    except Exception:  # noqa: BLE001 - a nudge lost only waits for the scheduled run; never the caller's error
        logger.warning("scaler not nudged", exc_info=True, extra={"model": model_name})
        return False
    return True


def scale_event(model_id: int, now: float) -> dict[str, Any]:
    """The nudge as the scaler's handler reads it: shaped like the EventBridge event of its schedule."""
    return {"version": "0", "id": f"nudge-{model_id}-{int(now)}", "detail-type": "Scale nudge", "source": SOURCE,
            "account": "", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "region": get_settings().aws_region, "resources": [], "detail": {"model_id": model_id}}


@lru_cache(maxsize=1)
def _lambda() -> Any:
    import boto3  # here: only a nudging instance pays for the client

    return boto3.client("lambda", region_name=get_settings().aws_region)
