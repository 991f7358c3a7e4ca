"""Configuration, read once from the environment.

In AWS the secrets are not in the environment: their SSM parameter names are, and the
values are fetched (and cached) through Powertools' parameters utility on first use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

LOGICAL_TABLES = ("api_key", "metric", "llm_models", "replicas", "replica_security_rules")


@dataclass(frozen=True)
class Settings:
    stage: str
    table_prefix: str
    aws_region: str
    dynamodb_endpoint: str | None
    aws_endpoint: str | None
    admin_api_key: str | None
    admin_api_key_parameter: str | None
    replica_ingress_cidr: str
    max_admin_body_bytes: int
    metric_ttl_days: int
    secret_cache_seconds: int
    workflow_name_prefix: str | None
    load_window_seconds: int

    def table_name(self, logical_name: str) -> str:
        return f"{self.table_prefix}-{logical_name}"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    stage = os.environ.get("STAGE", "local")
    return Settings(
        stage=stage,
        table_prefix=os.environ.get("TABLE_PREFIX", f"llm-proxy-{stage}"),
        aws_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # botocore honours AWS_ENDPOINT_URL by itself; the DynamoDB-specific one wins.
        dynamodb_endpoint=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL"),
        aws_endpoint=os.environ.get("AWS_ENDPOINT_URL") or None,
        admin_api_key=os.environ.get("ADMIN_API_KEY") or None,
        admin_api_key_parameter=os.environ.get("ADMIN_API_KEY_PARAMETER") or None,
        # Who may reach a provisioned replica's port: anyone by default, since a Lambda has no fixed
        # source address and the port answers only TLS with the replica's pinned certificate and bearer.
        replica_ingress_cidr=os.environ.get("REPLICA_INGRESS_CIDR", "0.0.0.0/0"),
        max_admin_body_bytes=_int("MAX_ADMIN_BODY_BYTES", 64 * 1024),
        metric_ttl_days=_int("METRIC_TTL_DAYS", 400),
        secret_cache_seconds=_int("SECRET_CACHE_SECONDS", 300),
        # An autoscaled model's demand is counted per window of this many seconds (store.model_load); a minute
        # but in tests, which would otherwise wait minutes for a load to fade.
        load_window_seconds=max(1, _int("LOAD_WINDOW_SECONDS", 60)),
        # Under `chalice deploy` no state machine ARN can be given: the machines are named
        # <prefix>-provisioning, -hibernate and -wake (the companion stack), and their ARNs derived.
        workflow_name_prefix=os.environ.get("WORKFLOW_NAME_PREFIX") or None,
    )


def admin_api_key() -> str | None:
    """The admin key: from the environment locally, from SSM (decrypted, cached) in AWS."""
    settings = get_settings()
    if settings.admin_api_key:
        return settings.admin_api_key
    if settings.admin_api_key_parameter:
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_parameter(
            settings.admin_api_key_parameter, decrypt=True, max_age=settings.secret_cache_seconds
        )
    return None


@dataclass(frozen=True)
class ChatSettings:
    """What the chat data plane needs; kept apart so its cold start reads nothing more."""

    mock_llm: bool
    store_content: bool
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    deadline_seconds: float
    max_answer_bytes: int
    replica_cache_seconds: float
    max_body_bytes: int
    metric_id_block: int
    wake_state_machine_arn: str | None
    default_wake_seconds: int
    buffered_answer_seconds: float
    prefix_affinity: bool
    scale_function_name: str | None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


@lru_cache(maxsize=1)
def get_chat_settings() -> ChatSettings:
    return ChatSettings(
        mock_llm=_flag("MOCK_LLM"),
        store_content=_flag("METRICS_STORE_CONTENT"),
        connect_timeout=_float("UPSTREAM_CONNECT_TIMEOUT_SECONDS", 3.0),
        # A replica may queue a request before it starts answering; a stream may pause.
        first_byte_timeout=_float("UPSTREAM_TIMEOUT_SECONDS", 120.0),
        idle_timeout=_float("UPSTREAM_IDLE_TIMEOUT_SECONDS", 60.0),
        # A request's whole time when no Lambda deadline says otherwise (locally): Lambda's own maximum.
        deadline_seconds=_float("CHAT_DEADLINE_SECONDS", 900.0),
        # A non-streamed answer is held whole in memory (and parsed for usage): far above any real answer
        # (128k tokens of text is ~0.5 MB; logprobs multiply it), far below the function's memory.
        max_answer_bytes=_int("MAX_UPSTREAM_ANSWER_BYTES", 8 * 1024 * 1024),
        replica_cache_seconds=_float("REPLICA_CACHE_SECONDS", 5.0),
        max_body_bytes=_int("MAX_CHAT_BODY_BYTES", 4 * 1024 * 1024),
        # Metric ids are reserved in blocks: one counter write per block, not per request.
        metric_id_block=_int("METRIC_ID_BLOCK", 50),
        # A request for a model whose replicas all hibernate starts a wake (chalicelib/chat/waking.py).
        wake_state_machine_arn=os.environ.get("WAKE_STATE_MACHINE_ARN") or None,
        # The Retry-After of a model that has never been woken yet: a GPU VM's restore and model load.
        default_wake_seconds=max(1, _int("DEFAULT_WAKE_SECONDS", 180)),
        # A buffered chat route (`chalice deploy`'s) answers behind API Gateway, which gives up at 29 s.
        buffered_answer_seconds=_float("BUFFERED_ANSWER_SECONDS", 29.0),
        # A conversation's requests go to the replica holding its prompt's cache (chalicelib/chat/affinity.py);
        # off: every request rotates over the replicas, as before.
        prefix_affinity=os.environ.get("PREFIX_AFFINITY", "on").strip().lower() not in ("0", "false", "no", "off"),
        # The scaler a request refused for want of capacity nudges (chalicelib/chat/nudge.py): the packaged stack
        # names it; under `chalice deploy` it is `<WORKFLOW_NAME_PREFIX>-scale`, Chalice's name for it.
        scale_function_name=os.environ.get("SCALE_FUNCTION_NAME") or (
            f"{os.environ['WORKFLOW_NAME_PREFIX']}-scale" if os.environ.get("WORKFLOW_NAME_PREFIX") else None),
    )


@dataclass(frozen=True)
class ProvisionSettings:
    """What the provisioning workflow needs. Production waits are minutes; locally seconds."""

    state_machine_arn: str | None
    hibernate_state_machine_arn: str | None
    wake_state_machine_arn: str | None
    hyperstack_api_url: str | None
    hyperstack_api_key: str | None
    hyperstack_api_key_parameter: str | None
    hyperstack_timeout_seconds: float
    poll_seconds: int
    vm_timeout_seconds: int
    model_timeout_seconds: int
    reconcile_interval_seconds: int
    reconcile_grace_seconds: int
    idle_check_seconds: int
    scale_check_seconds: int
    drain_poll_seconds: int
    drain_timeout_seconds: int
    teardown_retry_seconds: int
    teardown_stall_seconds: int


@lru_cache(maxsize=1)
def get_provision_settings() -> ProvisionSettings:
    return ProvisionSettings(
        state_machine_arn=os.environ.get("PROVISION_STATE_MACHINE_ARN") or None,
        hibernate_state_machine_arn=os.environ.get("HIBERNATE_STATE_MACHINE_ARN") or None,
        wake_state_machine_arn=os.environ.get("WAKE_STATE_MACHINE_ARN") or None,
        hyperstack_api_url=os.environ.get("HYPERSTACK_API_URL") or None,
        hyperstack_api_key=os.environ.get("HYPERSTACK_API_KEY") or None,
        hyperstack_api_key_parameter=os.environ.get("HYPERSTACK_API_KEY_PARAMETER") or None,
        hyperstack_timeout_seconds=_float("HYPERSTACK_TIMEOUT_SECONDS", 30.0),
        poll_seconds=max(1, _int("PROVISION_POLL_SECONDS", 60)),
        # A GPU VM is usually ACTIVE within minutes; a large model may take much longer to load.
        vm_timeout_seconds=_int("PROVISION_TIMEOUT_SECONDS", 30 * 60),
        model_timeout_seconds=_int("MODEL_READY_TIMEOUT_SECONDS", 60 * 60),
        reconcile_interval_seconds=max(1, _int("RECONCILE_INTERVAL_SECONDS", 15 * 60)),
        # Longer than a create call and its retries (Hyperstack timeouts of 30 s, retried with backoff for
        # minutes): a VM younger than this may still be about to be recorded by its workflow.
        reconcile_grace_seconds=max(0, _int("RECONCILE_GRACE_SECONDS", 30 * 60)),
        # How often idle replicas are looked for (EventBridge's finest rate in AWS is a minute).
        idle_check_seconds=max(1, _int("IDLE_CHECK_SECONDS", 60)),
        # How often autoscaled models are scaled (chalicelib/admin/scaler.py); a minute in AWS too.
        scale_check_seconds=max(1, _int("SCALE_CHECK_SECONDS", 60)),
        # A replica marked HIBERNATING is drained before its VM goes: the first wait outlasts every chat
        # instance's replica cache (so none routes there any more), and requests in flight may run on for
        # as long as the streaming chat function may (its 900 s timeout).
        drain_poll_seconds=max(1, _int("DRAIN_POLL_SECONDS", math.ceil(_float("REPLICA_CACHE_SECONDS", 5.0)) + 5)),
        drain_timeout_seconds=max(0, _int("DRAIN_TIMEOUT_SECONDS", 900)),
        # A teardown that failed (DELETE_FAILED: it had retried Hyperstack for ~12 minutes) is tried again
        # this long after it started, and so on until one succeeds: no replica waits on an admin's second DELETE.
        teardown_retry_seconds=max(1, _int("TEARDOWN_RETRY_SECONDS", 10 * 60)),
        # A replica DELETING for longer than any teardown lasts (the wait for its create, 20 min, then the
        # deletes' retries) lost its teardown (an execution stopped by hand, or failed before it could mark
        # the replica DELETE_FAILED): it gets another.
        teardown_stall_seconds=max(1, _int("TEARDOWN_STALL_SECONDS", 60 * 60)),
    )


def hyperstack_api_key() -> str | None:
    settings = get_provision_settings()
    if settings.hyperstack_api_key:
        return settings.hyperstack_api_key
    if settings.hyperstack_api_key_parameter:
        from aws_lambda_powertools.utilities import parameters

        return parameters.get_parameter(
            settings.hyperstack_api_key_parameter, decrypt=True, max_age=get_settings().secret_cache_seconds
        )
    return None
