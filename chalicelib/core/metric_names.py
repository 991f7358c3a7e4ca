"""The CloudWatch metrics the functions emit (embedded metric format, namespace METRICS_NAMESPACE), and the
dimensions they carry: a contract shared by the code that emits them and infra/template.json's dashboard
and alarms. Dimensions are kept to a handful of low-cardinality values, never a key or a user id.

Every metric carries `Stage`. Besides:
- CHAT_REQUESTS (Count): `Outcome` (the status class: 2xx, 4xx, 5xx, or 499 for a client that went away);
  the alarms read it. CHAT_REQUESTS_BY_MODEL (Count): `Model` and `Outcome`, for the dashboard.
- CHAT_REFUSALS (Count): `Reason`, the error code of a 4xx or 5xx the proxy answered itself
  (rate_limit_exceeded, insufficient_quota, no_replica_ready, model_waking, replicas_at_capacity, ...).
- TIME_TO_FIRST_TOKEN, CHAT_DURATION (Milliseconds); PROMPT_TOKENS, COMPLETION_TOKENS (Count): `Model`.
- REPLICA_FAILURES (Count): a replica skipped for failing or timing out; FAILOVERS (Count): a request answered
  by a replica other than the first it tried.
- USAGE_ROWS_LOST (Count): a usage row that could not be written (logged whole for usage_replay).
- WORKFLOW_OUTCOMES (Count): `Workflow` (create, delete, hibernate, wake) and `Outcome` (succeeded, failed);
  WORKFLOW_FAILURES (Count): the failed ones of every workflow, for the alarm.
- VMS_DELETED_BY_BACKSTOP (Count): VMs the reconciler deleted (no replica owned them).
- REPLICAS_DESIRED, REPLICAS_SERVING (Count, each scaler run): `Model`, an autoscaled model's desired and serving
  replicas; SCALE_OUTS, SCALE_INS (Count): `Model`, replicas the scaler woke or made, hibernated or deleted.
- MODELS_AT_MAX_REPLICAS (Count, each scaler run): an autoscaled model whose demand wants more than its
  max_replicas carry (requests refused or queued); the alarm reads it.
"""

from __future__ import annotations

STAGE = "Stage"
MODEL = "Model"
OUTCOME = "Outcome"
REASON = "Reason"
WORKFLOW = "Workflow"

CHAT_REQUESTS = "ChatRequests"
CHAT_REQUESTS_BY_MODEL = "ChatRequestsByModel"
CHAT_REFUSALS = "ChatRefusals"
TIME_TO_FIRST_TOKEN = "TimeToFirstToken"
CHAT_DURATION = "ChatDuration"
PROMPT_TOKENS = "PromptTokens"
COMPLETION_TOKENS = "CompletionTokens"
REPLICA_FAILURES = "ReplicaFailures"
FAILOVERS = "Failovers"
USAGE_ROWS_LOST = "UsageRowsLost"
WORKFLOW_OUTCOMES = "WorkflowOutcomes"
WORKFLOW_FAILURES = "WorkflowFailures"
VMS_DELETED_BY_BACKSTOP = "VmsDeletedByBackstop"
REPLICAS_DESIRED = "ReplicasDesired"
REPLICAS_SERVING = "ReplicasServing"
SCALE_OUTS = "ScaleOuts"
SCALE_INS = "ScaleIns"
MODELS_AT_MAX_REPLICAS = "ModelsAtMaxReplicas"

# Outcome values of CHAT_REQUESTS
OK, CLIENT_ERROR, SERVER_ERROR, CLIENT_CLOSED = "2xx", "4xx", "5xx", "499"
# Outcome values of WORKFLOW_OUTCOMES
SUCCEEDED, FAILED = "succeeded", "failed"
