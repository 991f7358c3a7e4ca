"""The DynamoDB tables, as PynamoDB models.

Every table carries a `listing` index (a constant partition per table, sorted by `id`) so that
`/v1/tables/{name}` pages newest-first with a key-condition query and so that rows can be
found by their integer id. The CloudFormation in `infra/` declares the same keys and indexes;
`tests/infra` fails if the two drift apart.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from chalicelib.core.settings import get_settings

_settings = get_settings()


def _meta(logical_name: str) -> type:
    class Meta:
        table_name = _settings.table_name(logical_name)
        region = _settings.aws_region
        host = _settings.dynamodb_endpoint
        billing_mode = "PAY_PER_REQUEST"

    return Meta


class Table(Model):
    """A table whose connection shares the process's one DynamoDB client.

    PynamoDB gives every model a botocore session and client of its own, and each loads the
    DynamoDB service model and endpoint data again: about 9 MB and tens of milliseconds per table.
    The chat path touches five tables; on a 128 MB function that is 35 MB. Every table here has
    the same region, endpoint and settings, so they can share one client (botocore clients are
    thread-safe). `tests/unit/admin/test_tables.py` fails if a PynamoDB upgrade breaks this.
    """

    @classmethod
    def _get_connection(cls) -> TableConnection:
        table_connection = super()._get_connection()
        connection = table_connection.connection
        if connection._client is None:  # noqa: SLF001 - see the class docstring
            if _shared.client is None:
                _shared.client = connection.client
            connection._client = _shared.client  # noqa: SLF001
        return table_connection


class _SharedClient:
    client = None


_shared = _SharedClient()


class ListingIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "listing"
        projection = AllProjection()

    listing = UnicodeAttribute(hash_key=True)
    id = NumberAttribute(range_key=True)


# What the chat function reads of a model's replicas to route a request (chalicelib/chat/routing.py), and all
# the by_model index holds besides its keys: an admin's view of the replicas reads the table or the listing.
ROUTING_ATTRIBUTES = ["vm_status", "endpoint", "rate_limit", "api_key", "tls_fingerprint", "hibernate_after_seconds",
                      "last_used_minute", "wake_seconds", "wake_started_at", "wake_requested_at"]


class ByModelIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_model"
        projection = IncludeProjection(ROUTING_ATTRIBUTES)

    model_id = NumberAttribute(hash_key=True)
    id = NumberAttribute(range_key=True)


class ByApiKeyIndex(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_api_key"
        projection = AllProjection()

    api_key_id = NumberAttribute(hash_key=True)
    created = NumberAttribute(range_key=True)


class ApiKey(Table):
    """Keyed by the SHA-256 of the secret, so authenticating a request is one GetItem."""

    Meta = _meta("api_key")
    key_hash = UnicodeAttribute(hash_key=True)
    listing = UnicodeAttribute(default="api_key")
    listing_index = ListingIndex()
    id = NumberAttribute()
    user_id = UnicodeAttribute()
    key_prefix = UnicodeAttribute()
    last4 = UnicodeAttribute()
    allowed_rpm = NumberAttribute()
    enabled = BooleanAttribute(default=True)
    models = ListAttribute(of=UnicodeAttribute, null=True)
    expires_at = NumberAttribute(null=True)
    created_at = NumberAttribute()
    # The current rate-limit window (Unix minute) and the requests admitted in it.
    rl_window = NumberAttribute(null=True)
    rl_count = NumberAttribute(null=True)
    # Total tokens per calendar month (UTC), none if absent; the tokens spent in `month` (YYYYMM), added
    # after each request (store.month_spend) and read by the admitting write's condition (chat.access).
    token_budget = NumberAttribute(null=True)
    month = NumberAttribute(null=True)
    month_tokens = NumberAttribute(null=True)


class Metric(Table):
    """One row per relayed request (chat, completion, embeddings), with the original toolkit's columns first."""

    Meta = _meta("metric")
    id = NumberAttribute(hash_key=True)
    listing = UnicodeAttribute(default="metric")
    listing_index = ListingIndex()
    by_api_key = ByApiKeyIndex()
    api_key_id = NumberAttribute()
    input = UnicodeAttribute(null=True)
    created = NumberAttribute()
    model = UnicodeAttribute()
    choices = UnicodeAttribute(null=True)
    prompt_tokens = NumberAttribute(null=True)
    total_tokens = NumberAttribute(null=True)
    completion_tokens = NumberAttribute(null=True)
    duration = NumberAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    replica_id = NumberAttribute(null=True)
    time_to_first_token = NumberAttribute(null=True)
    status = NumberAttribute(null=True)
    streamed = BooleanAttribute(null=True)
    content_truncated = BooleanAttribute(null=True)  # input/choices cut to fit DynamoDB's item limit
    usage_estimated = BooleanAttribute(null=True)  # tokens counted by the proxy: the replica reported none
    # "chat.completions", "completions" or "embeddings" (chalicelib.chat.operations); older rows have none: chat
    operation = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)


class UsageCount(Table):
    """Requests and tokens per (UTC hour, API key, model), added to after each usage row (store.usage_counters).

    Partitioned by day so that a summary reads one partition per day of its window; sorted by
    `<hour>#<api_key_id>#<model>` so that a part of a day is one key range. Not in `/v1/tables`.
    """

    Meta = _meta("usage")
    day = UnicodeAttribute(hash_key=True)  # "2025-05-01"
    bucket = UnicodeAttribute(range_key=True)  # "13#42#meta-llama/Llama-3.1-8B-Instruct"
    api_key_id = NumberAttribute(null=True)
    model = UnicodeAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    requests = NumberAttribute(null=True)
    prompt_tokens = NumberAttribute(null=True)
    completion_tokens = NumberAttribute(null=True)
    total_tokens = NumberAttribute(null=True)
    errors = NumberAttribute(null=True)


class LlmModel(Table):
    """Keyed by name: names are unique by construction and the chat path finds them in one read."""

    Meta = _meta("llm_models")
    name = UnicodeAttribute(hash_key=True)
    listing = UnicodeAttribute(default="llm_models")
    listing_index = ListingIndex()
    id = NumberAttribute()
    created_at = NumberAttribute()
    # Set by DELETE /v1/models/{id} before it looks for the model's replicas: a replica insert
    # checks it is absent in its transaction, so none can be added that the delete does not see.
    deleting = BooleanAttribute(null=True)
    # Autoscaling (chalicelib/admin/autoscaling.py): the admin's settings, the replicas' template among them
    # (its secrets apart, in store.template_secrets); the scaler's last decision and its memory between runs
    # (chalicelib/admin/scaler.py); and the scaler's lease, so that runs of one model take turns.
    autoscaling = MapAttribute(null=True)
    scaling_state = MapAttribute(null=True)
    scaler_lease_until = NumberAttribute(null=True)
    # When a request refused for want of capacity last nudged the scaler (chalicelib/chat/nudge.py).
    scale_nudged_at = NumberAttribute(null=True)


class Replica(Table):
    Meta = _meta("replicas")
    id = NumberAttribute(hash_key=True)
    listing = UnicodeAttribute(default="replicas")
    listing_index = ListingIndex()
    by_model = ByModelIndex()
    model_id = NumberAttribute()
    endpoint = UnicodeAttribute(null=True)
    rate_limit = NumberAttribute(null=True)
    vm_status = UnicodeAttribute()
    vm_id = NumberAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    name = UnicodeAttribute(null=True)
    environment_name = UnicodeAttribute(null=True)
    image_name = UnicodeAttribute(null=True)
    flavor_name = UnicodeAttribute(null=True)
    key_name = UnicodeAttribute(null=True)
    port = NumberAttribute(null=True)
    run_command = UnicodeAttribute(null=True)
    assign_floating_ip = BooleanAttribute(null=True)
    execution_arn = UnicodeAttribute(null=True)
    # The workflow execution whose step made the last status move: a step delivered twice knows its own write.
    moved_by = UnicodeAttribute(null=True)
    teardown_started_at = NumberAttribute(null=True)  # when its latest teardown was started (seconds)
    # A FAILED replica provisioned again (chalicelib/admin/replica_retry.py): how often, and when last (seconds).
    retries = NumberAttribute(null=True)
    retried_at = NumberAttribute(null=True)
    created_at = NumberAttribute()
    # Write-only secrets: the bearer sent upstream, the run command's environment. No route shows them.
    api_key = UnicodeAttribute(null=True)
    secrets = MapAttribute(null=True)  # only on rows made before the secrets moved to store.replica_secrets
    secret_names = ListAttribute(of=UnicodeAttribute, null=True)
    # A provisioned replica's certificate: its SHA-256 fingerprint, the one TLS peer the proxy accepts.
    tls_fingerprint = UnicodeAttribute(null=True)
    # Hibernation (chalicelib/core/idle_rule.py): after how long idle, since when it serves, its last used minute
    # (written by chat at most once a minute), a wake asked for (when: names the wake's execution), and
    # how long the last wake took (the Retry-After of requests that find it dormant).
    hibernate_after_seconds = NumberAttribute(null=True)
    serving_since = NumberAttribute(null=True)
    last_used_minute = NumberAttribute(null=True)
    wake_requested_at = NumberAttribute(null=True)
    # Set while HIBERNATING or HIBERNATED: what a wake ask's condition reads, so the chat function, which
    # asks, needs no access to vm_status.
    hibernated_at = NumberAttribute(null=True)
    wake_started_at = NumberAttribute(null=True)
    wake_seconds = NumberAttribute(null=True)
    rl_window = NumberAttribute(null=True)
    rl_count = NumberAttribute(null=True)
    # Made by the scaler: the model's scaling slot it holds (store.scaling_slots), none if made by hand.
    scale_slot = NumberAttribute(null=True)


class ReplicaSecurityRule(Table):
    Meta = _meta("replica_security_rules")
    replica_id = NumberAttribute(hash_key=True)
    id = NumberAttribute(range_key=True)
    listing = UnicodeAttribute(default="replica_security_rules")
    listing_index = ListingIndex()
    direction = UnicodeAttribute()
    protocol = UnicodeAttribute()
    ethertype = UnicodeAttribute()
    remote_ip_prefix = UnicodeAttribute()
    port_range_min = NumberAttribute()
    port_range_max = NumberAttribute()


class Bookkeeping(Table):
    """What DynamoDB lacks natively: id sequences (`seq#<table>`) and uniqueness guards; and a
    provisioned replica's credentials and secrets until its VM is recorded (`store.replica_credentials`,
    `store.replica_secrets`)."""

    Meta = _meta("bookkeeping")
    pk = UnicodeAttribute(hash_key=True)
    value = NumberAttribute(null=True)
    secret = UnicodeAttribute(null=True)
    certificate = UnicodeAttribute(null=True)
    private_key = UnicodeAttribute(null=True)
    secrets = MapAttribute(null=True)  # a replica's run-command secrets until its VM is made (store.replica_secrets)
    # A model's demand per minute (store.model_load): requests counted in minute `rl_window`, and in the one before.
    rl_window = NumberAttribute(null=True)
    rl_count = NumberAttribute(null=True)
    rl_previous = NumberAttribute(null=True)


TABLES_BY_LOGICAL_NAME: dict[str, type[Model]] = {
    "api_key": ApiKey,
    "metric": Metric,
    "llm_models": LlmModel,
    "replicas": Replica,
    "replica_security_rules": ReplicaSecurityRule,
}
ALL_TABLES: tuple[type[Model], ...] = (*TABLES_BY_LOGICAL_NAME.values(), UsageCount, Bookkeeping)

