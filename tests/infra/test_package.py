"""The packaged CloudFormation: what `chalice package --merge-template infra/template.json` produces,
with the state machine definitions inlined by infra/package.py (as `make package` does).

The package is built once per session (tests/infra/conftest.py: `package_dir`, `template`) and every
test reads the resulting `sam.json`. The PynamoDB models are introspected in a subprocess so that
importing them (which reads and caches settings from the environment) cannot leak into other tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import MERGE_TEMPLATE, REPO_ROOT, STAGE, offline_aws_env, tool

STAGE_PARAMETER = "Stage"
# app.py's `@app.lambda_function(name="chat")`: the streaming chat function and its role, as Chalice names them.
CHAT = "Chat"
CHAT_ROLE = "ChatRole"
CHAT_PATH = "/v1/chat/completions"
# The routes the Chat function serves (chalicelib/chat/operations.py): the REST API streams each to it.
OPERATION_PATHS = (CHAT_PATH, "/v1/completions", "/v1/embeddings")
EXEC_WRAPPER = "/var/task/chalicelib/chat/bootstrap"
# app.py's `@app.lambda_function(name="provision")`: the one function every Task of the provisioning workflow invokes.
PROVISION = "Provision"
PROVISION_ROLE = "ProvisionRole"
# app.py's `@app.schedule(..., name="reconcile")`: the reconciler, on an EventBridge schedule.
RECONCILE = "Reconcile"
RECONCILE_ROLE = "ReconcileRole"
RECONCILE_SCHEDULE = "rate(15 minutes)"  # RECONCILE_INTERVAL_SECONDS' default, 900 s
# The reconciler's whole allow-list: replica rows read (one, and the listing), a serving replica failed, the
# deployment id read or made, the Hyperstack key; Lambda's own log writes come on top.
RECONCILE_GRANTS = {
    ("dynamodb:GetItem", "replicas"),
    ("dynamodb:UpdateItem", "replicas"),
    ("dynamodb:Query", "replicas/index/listing"),
    ("dynamodb:GetItem", "bookkeeping"),
    ("dynamodb:PutItem", "bookkeeping"),
}
# app.py's `@app.schedule(..., name="idle_check")`: hibernates idle replicas, starts wakes asked for and never started.
IDLE_CHECK = "IdleCheck"
IDLE_CHECK_ROLE = "IdleCheckRole"
IDLE_CHECK_SCHEDULE = "rate(1 minute)"  # IDLE_CHECK_SECONDS' default, 60 s: EventBridge's finest rate
# The idle check's whole allow-list: the replicas' listing read, and hibernate and wake executions started (the
# workflows' steps make every write); Lambda's own log writes come on top.
IDLE_CHECK_GRANTS = {
    ("dynamodb:Query", "replicas/index/listing"),
    ("dynamodb:Query", "llm_models/index/listing"),  # autoscaled models' min_replicas: no idle one below it
    ("states:StartExecution", "HibernateStateMachine"),
    ("states:StartExecution", "WakeStateMachine"),
    ("states:StartExecution", "ProvisioningStateMachine"),
    # To tell a failed execution, whose purpose it then starts again, or one that ended undone, whose replica a
    # new execution takes over (issue #20).
    ("states:DescribeExecution", "executions of HibernateStateMachine"),
    ("states:DescribeExecution", "executions of WakeStateMachine"),
    ("states:DescribeExecution", "executions of ProvisioningStateMachine"),
}
# app.py's `@app.schedule(..., name="scale")`: the autoscaler (chalicelib/admin/scaler.py).
SCALE = "Scale"
SCALE_ROLE = "ScaleRole"
SCALE_SCHEDULE = "rate(1 minute)"  # SCALE_CHECK_SECONDS' default, 60 s: EventBridge's finest rate
# The scaler's whole allow-list: the replicas and models read (their listings), a model's lease and state, its
# demand and its template's secrets read; replicas inserted as create_vm inserts them (ids, row, security rules,
# scaling slot, secrets in waiting; taken back when the workflow does not start), woken (an ask) or marked for
# teardown; the workflows started, and a wake's execution described. Lambda's log writes come on top.
SCALE_GRANTS = {
    ("dynamodb:Query", "replicas/index/listing"),
    ("dynamodb:Query", "llm_models/index/listing"),
    ("dynamodb:UpdateItem", "llm_models"),
    ("dynamodb:ConditionCheckItem", "llm_models"),
    ("dynamodb:GetItem", "replicas"),
    ("dynamodb:PutItem", "replicas"),
    ("dynamodb:UpdateItem", "replicas"),
    ("dynamodb:DeleteItem", "replicas"),
    ("dynamodb:PutItem", "replica_security_rules"),
    ("dynamodb:Query", "replica_security_rules"),
    ("dynamodb:DeleteItem", "replica_security_rules"),
    ("dynamodb:UpdateItem", "bookkeeping"),
    ("dynamodb:PutItem", "bookkeeping"),
    ("dynamodb:DeleteItem", "bookkeeping"),
    ("dynamodb:GetItem", "bookkeeping"),
    ("states:StartExecution", "ProvisioningStateMachine"),
    ("states:StartExecution", "HibernateStateMachine"),
    ("states:StartExecution", "WakeStateMachine"),
    ("states:DescribeExecution", "executions of WakeStateMachine"),
}
API_HANDLER = "APIHandler"
API_HANDLER_ROLE = "ApiHandlerRole"
STATE_MACHINE = "ProvisioningStateMachine"
STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
STATE_MACHINE_ROLE = "ProvisioningStateMachineRole"
STATE_MACHINE_NAME = "hyperstack-llm-proxy-${Stage}-provisioning"
ASL_DEFINITION = "infra/provisioning.asl.json"
HIBERNATE_STATE_MACHINE = "HibernateStateMachine"
WAKE_STATE_MACHINE = "WakeStateMachine"
# Every workflow of the stack: its name (from Stage) and the definition it inlines. All run on Provision.
WORKFLOWS = {
    STATE_MACHINE: (STATE_MACHINE_NAME, ASL_DEFINITION),
    HIBERNATE_STATE_MACHINE: ("hyperstack-llm-proxy-${Stage}-hibernate", "infra/hibernate.asl.json"),
    WAKE_STATE_MACHINE: ("hyperstack-llm-proxy-${Stage}-wake", "infra/wake.asl.json"),
}
FUNCTION_ARN_SUBSTITUTION = "ProvisionFunctionArn"
# What the provision task code does: replica rows, their security rules and endpoint guards; models are only read.
PROVISION_WRITE_TABLES = {"replicas", "replica_security_rules", "bookkeeping"}
PROVISION_READ_ACTIONS = {"dynamodb:GetItem", "dynamodb:Query"}
PROVISION_EXECUTION_ACTIONS = {"states:DescribeExecution", "states:StopExecution"}
# The chat role's whole allow-list, (action, table or index): the per-minute counts of keys and replicas
# (an update, and the consistent read that explains a refused one), the model and its serving replicas,
# a replica's minute of use and a hibernating one's wake ask (updates too), the usage row and the block of
# ids it takes its id from. Lambda's own log writes, and starting a wake (EXECUTION_STARTERS), come on top.
CHAT_GRANTS = {
    ("dynamodb:UpdateItem", "api_key"),
    ("dynamodb:GetItem", "api_key"),
    ("dynamodb:GetItem", "llm_models"),
    ("dynamodb:UpdateItem", "llm_models"),  # a capacity refusal nudges an autoscaled model's scaler
    ("dynamodb:Query", "replicas/index/by_model"),
    ("dynamodb:UpdateItem", "replicas"),
    ("dynamodb:GetItem", "replicas"),
    ("dynamodb:PutItem", "metric"),
    ("dynamodb:UpdateItem", "usage"),
    ("dynamodb:UpdateItem", "bookkeeping"),
}
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
# The attributes each of the chat role's UpdateItem statements lets a request name, (table, attributes): the
# item's key, what it writes and what its condition reads (IAM's dynamodb:Attributes holds condition attributes
# as well as updated ones). A replica has two: its per-minute count, and (chalicelib/store/replica_use.py,
# wake_requests.py) its minute of use and a wake's ask, whose condition reads hibernated_at, never vm_status.
CHAT_UPDATE_ATTRIBUTES = {
    ("api_key", frozenset({"key_hash", "rl_window", "rl_count", "enabled", "expires_at", "models", "allowed_rpm",
                           "token_budget", "month", "month_tokens"})),
    ("usage", frozenset({"day", "bucket", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors",
                         "api_key_id", "model", "user_id"})),
    ("replicas", frozenset({"id", "rl_window", "rl_count", "rate_limit"})),
    ("replicas", frozenset({"id", "last_used_minute", "wake_requested_at", "hibernated_at"})),
    ("bookkeeping", frozenset({"pk", "value"})),
    ("bookkeeping", frozenset({"pk", "rl_window", "rl_count", "rl_previous"})),  # an autoscaled model's demand
    ("llm_models", frozenset({"name", "id", "scale_nudged_at"})),  # a nudge's mark, once per model per 10 s
}
UNUSED_ACTIONS = {"dynamodb:BatchWriteItem", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"}
# The one scan: deleting a model reads its replicas with a consistent scan of the replicas table (the
# by_model index is eventually consistent and could miss a replica just added; see replicas.delete_all).
SCAN_GRANTS = {("ApiHandlerRole", "Replicas"), ("policy-dev.json", "Replicas"), ("policy-prod.json", "Replicas")}
# Each variable a function is given, and the code that acts on it there (chalicelib/core/settings.py loads
# several at once into Settings; what counts is the code that uses the value).
VARIABLE_READERS = {
    "STAGE": "chalicelib/core/settings.py: the stage, which names the tables when TABLE_PREFIX is absent",
    "TABLE_PREFIX": "chalicelib/store/tables.py: every table's name",
    "LOG_LEVEL": "chalicelib/core/observability.py: the Powertools logger's level (read by aws_lambda_powertools)",
    "ADMIN_API_KEY_PARAMETER": "chalicelib/api/http_edge.py: is_admin, through settings.admin_api_key",
    "PROVISION_STATE_MACHINE_ARN": ("chalicelib/provisioning/workflow.py: start, for create_vm and teardowns (the "
                                    "admin, the scaler); take_over_if_ended (the idle check), for a create that "
                                    "ended undone"),
    "HIBERNATE_STATE_MACHINE_ARN": ("chalicelib/provisioning/workflow.py: start_hibernate (the idle check, the "
                                    "admin), start_scale_in (the scaler)"),
    "WAKE_STATE_MACHINE_ARN": ("chalicelib/provisioning/workflow.py: start_wake (the idle check, the admin, "
                               "mark_hibernated); chalicelib/chat/waking.py: a request's wake, via "
                               "settings.get_chat_settings"),
    "MOCK_LLM": "chalicelib/chat/service.py: through settings.get_chat_settings",
    "SCALE_FUNCTION_NAME": "chalicelib/chat/nudge.py: the scaler a capacity refusal invokes, via get_chat_settings",
    "AWS_LAMBDA_EXEC_WRAPPER": "chalicelib/chat/bootstrap: read by Lambda itself, which starts the wrapper",
    "HYPERSTACK_API_KEY_PARAMETER": ("chalicelib/provisioning/step_helpers.py: configured_hyperstack, "
                                     "via settings.hyperstack_api_key"),
    "WORKFLOW_NAME_PREFIX": ("chalicelib/core/step_functions.py: state_machine_arn, the workflows' ARNs by name "
                             "where no ARN is given (chalice deploy; the packaged stack gives both)"),
}
READ_OUTSIDE_SETTINGS = {"LOG_LEVEL", "AWS_LAMBDA_EXEC_WRAPPER"}
# The observability logger is imported by all three (provision's teardown through chalicelib/admin/replicas.py).
EVERY_FUNCTION_VARIABLES = {"STAGE", "TABLE_PREFIX", "LOG_LEVEL"}
FUNCTION_VARIABLES = {
    API_HANDLER: EVERY_FUNCTION_VARIABLES | {"ADMIN_API_KEY_PARAMETER", "PROVISION_STATE_MACHINE_ARN",
                                             "HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN",
                                             "WORKFLOW_NAME_PREFIX"},
    CHAT: EVERY_FUNCTION_VARIABLES | {"MOCK_LLM", "AWS_LAMBDA_EXEC_WRAPPER", "WAKE_STATE_MACHINE_ARN",
                                      "WORKFLOW_NAME_PREFIX", "SCALE_FUNCTION_NAME"},
    PROVISION: EVERY_FUNCTION_VARIABLES | {"HYPERSTACK_API_KEY_PARAMETER", "WAKE_STATE_MACHINE_ARN",
                                           "WORKFLOW_NAME_PREFIX"},
    RECONCILE: EVERY_FUNCTION_VARIABLES | {"HYPERSTACK_API_KEY_PARAMETER"},
    IDLE_CHECK: EVERY_FUNCTION_VARIABLES | {"HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN",
                                            "PROVISION_STATE_MACHINE_ARN", "WORKFLOW_NAME_PREFIX"},
    SCALE: EVERY_FUNCTION_VARIABLES | {"HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN",
                                       "PROVISION_STATE_MACHINE_ARN", "WORKFLOW_NAME_PREFIX"},
}
# Only the packaged stack can give the state machines' ARNs; under `chalice deploy` the functions derive them
# from WORKFLOW_NAME_PREFIX (the companion stack names its state machines so).
PACKAGE_ONLY_VARIABLES = {"PROVISION_STATE_MACHINE_ARN", "HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN",
                          "SCALE_FUNCTION_NAME"}
FUNCTION_ROLES = {API_HANDLER: API_HANDLER_ROLE, CHAT: CHAT_ROLE, PROVISION: PROVISION_ROLE, RECONCILE: RECONCILE_ROLE,
                  IDLE_CHECK: IDLE_CHECK_ROLE, SCALE: SCALE_ROLE}
# Each function's name in .chalice/config.json's lambda_functions (the REST API's is Chalice's own).
CHALICE_FUNCTIONS = {API_HANDLER: "api_handler", CHAT: "chat", PROVISION: "provision", RECONCILE: "reconcile",
                     IDLE_CHECK: "idle_check", SCALE: "scale"}
# Which workflows each role may start (states:StartExecution), and nothing else may: the admin all three,
# chat the wake of a model whose replicas all hibernate, provision the wake a request asked for
# mid-hibernation, the idle check hibernations and stalled wakes.
EXECUTION_STARTERS = {
    API_HANDLER_ROLE: {STATE_MACHINE, HIBERNATE_STATE_MACHINE, WAKE_STATE_MACHINE},
    CHAT_ROLE: {WAKE_STATE_MACHINE},
    PROVISION_ROLE: {WAKE_STATE_MACHINE},
    IDLE_CHECK_ROLE: {HIBERNATE_STATE_MACHINE, WAKE_STATE_MACHINE, STATE_MACHINE},  # a create taken over
    SCALE_ROLE: {STATE_MACHINE, HIBERNATE_STATE_MACHINE, WAKE_STATE_MACHINE},  # creates, scale-ins, wakes
}
# Whose calls each function makes under `chalice deploy`: there the REST API's POST /v1/chat/completions is
# app.py's buffered route on the API handler, running the chat plane's code (chalicelib/chat/buffered.py);
# only the packaged stack sends it to the Chat function instead.
CHALICE_DEPLOY_CALLS = {API_HANDLER: (API_HANDLER, CHAT), CHAT: (CHAT,), PROVISION: (PROVISION,),
                        RECONCILE: (RECONCILE,), IDLE_CHECK: (IDLE_CHECK,), SCALE: (SCALE,)}
# What the recorder (tests/infra/recorded_calls.py) stands for: moto's account, its region, this stage.
RECORDED_ACCOUNT = "123456789012"
RECORDED_REGION = "us-east-1"
PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws", "AWS::Region": RECORDED_REGION, "AWS::AccountId": RECORDED_ACCOUNT,
    "AWS::StackName": f"hyperstack-llm-proxy-{STAGE}", STAGE_PARAMETER: STAGE,
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def chalice_config() -> dict[str, Any]:
    return json.loads((REPO_ROOT / ".chalice" / "config.json").read_text())


@pytest.fixture(scope="module")
def model_schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Keys, indexes and TTL of every PynamoDB model, by logical table name."""
    script = textwrap.dedent(
        """
        import json
        from pynamodb.attributes import TTLAttribute
        from chalicelib.store.tables import ALL_TABLES

        out = {}
        for model in ALL_TABLES:
            ttl = [a.attr_name for a in model.get_attributes().values() if isinstance(a, TTLAttribute)]
            out[model.Meta.table_name.rsplit("-", 1)[1]] = {
                "table_name": model.Meta.table_name,
                "schema": model._get_schema(),
                "ttl": ttl[0] if ttl else None,
            }
        print(json.dumps(out))
        """
    )
    env = offline_aws_env(tmp_path_factory.mktemp("models"))
    env.update(STAGE=STAGE, TABLE_PREFIX=f"hyperstack-llm-proxy-{STAGE}")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    raw = json.loads(result.stdout)
    return {
        logical: {
            "table_name": info["table_name"],
            "ttl": info["ttl"],
            **_normalise(
                key_schema=info["schema"]["key_schema"],
                attribute_definitions=info["schema"]["attribute_definitions"],
                indexes=[
                    (i["index_name"], i["key_schema"], i["projection"]["ProjectionType"],
                     i["projection"].get("NonKeyAttributes"))
                    for i in info["schema"]["global_secondary_indexes"]
                ],
                local_indexes=[i["index_name"] for i in info["schema"]["local_secondary_indexes"]],
            ),
        }
        for logical, info in raw.items()
    }


@pytest.fixture(scope="module")
def recorded_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every AWS call each function's code makes, by function (see tests/infra/recorded_calls.py)."""
    tmp = tmp_path_factory.mktemp("recorded-calls")
    out = tmp / "calls.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.infra.recorded_calls", str(out)],
        cwd=REPO_ROOT, env=offline_aws_env(tmp), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"recording the functions' calls failed:\n{result.stderr[-6000:]}"
    calls = json.loads(out.read_text())
    assert set(calls) == set(FUNCTION_ROLES), set(calls)
    return calls


# --- helpers -------------------------------------------------------------------------------------


def _normalise(
    key_schema: list[dict[str, str]],
    attribute_definitions: list[dict[str, str]],
    indexes: list[tuple[str, list[dict[str, str]], str, list[str] | None]],
    local_indexes: list[str],
) -> dict[str, Any]:
    """One comparable shape for a table's keys, from either PynamoDB or CloudFormation."""
    types = {a["AttributeName"]: a["AttributeType"] for a in attribute_definitions}

    def keys(schema: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
        return {k["KeyType"]: (k["AttributeName"], types[k["AttributeName"]]) for k in schema}

    return {
        "keys": keys(key_schema),
        "global_indexes": {name: {"keys": keys(ks), "projection": (proj, sorted(attributes or []))}
                           for name, ks, proj, attributes in indexes},
        "local_indexes": sorted(local_indexes),
        "attribute_definitions": types,
    }


def _resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r.get("Type") == type_}


def _tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The DynamoDB tables of the template, by logical table name (the suffix of TableName)."""
    out = {}
    for resource in _resources_of_type(template, "AWS::DynamoDB::Table").values():
        table_name = resource["Properties"]["TableName"]
        assert isinstance(table_name, dict) and set(table_name) == {"Fn::Sub"}, table_name
        out[table_name["Fn::Sub"].rsplit("-", 1)[1]] = resource
    return out


def _resolve(value: Any, parameters: dict[str, str]) -> Any:
    """Resolve the parameter-only intrinsics used for names (Ref / Fn::Sub of parameters)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        for name, resolved in parameters.items():
            text = text.replace(f"${{{name}}}", resolved)
        assert "${" not in text, f"unresolvable {value}"
        return text
    return value


def _policy_statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement anywhere below node (roles, inline/managed policies, SAM policies)."""
    if isinstance(node, dict):
        statements = node.get("Statement")
        if isinstance(statements, list):
            yield from (s for s in statements if isinstance(s, dict))
        elif isinstance(statements, dict):
            yield statements
        for value in node.values():
            yield from _policy_statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _policy_statements(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _assert_no_broad_dynamodb_grant(statement: dict[str, Any], where: str) -> None:
    if statement.get("Effect") != "Allow":
        return
    assert "NotAction" not in statement, f"{where}: Allow + NotAction grants everything else"
    assert "NotResource" not in statement, f"{where}: Allow + NotResource is unbounded"
    actions = [a for a in _as_list(statement.get("Action", [])) if isinstance(a, str)]
    broad = [a for a in actions if a.lower() in {"*", "dynamodb:*"} or a.lower().startswith("dynamodb:*")]
    assert not broad, f"{where}: wildcard action {broad}"
    if _grants_dynamodb(statement):
        assert "*" not in _as_list(statement.get("Resource")), f"{where}: DynamoDB action on Resource '*'"


def _grants_dynamodb(statement: dict[str, Any]) -> bool:
    return any(str(a).lower().startswith("dynamodb:") for a in _as_list(statement.get("Action", [])))


def _chalice_environment(config: dict[str, Any], stage: str, function: str) -> dict[str, str]:
    """A function's variables under `chalice deploy`: the app's, the stage's, then the function's own."""
    settings = config["stages"][stage]
    own = settings.get("lambda_functions", {}).get(CHALICE_FUNCTIONS[function], {})
    return {**config.get("environment_variables", {}), **settings.get("environment_variables", {}),
            **own.get("environment_variables", {})}


def _chalice_policy_statements(config: dict[str, Any], stage: str, function: str) -> list[dict[str, Any]]:
    settings = config["stages"][stage]
    own = settings.get("lambda_functions", {}).get(CHALICE_FUNCTIONS[function], {})
    path = REPO_ROOT / ".chalice" / own.get("iam_policy_file", settings["iam_policy_file"])
    return list(_policy_statements(json.loads(path.read_text())))


def _function_environments(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    functions = {
        **_resources_of_type(template, "AWS::Serverless::Function"),
        **_resources_of_type(template, "AWS::Lambda::Function"),
    }
    assert functions, "the package declares no Lambda function"
    return {
        name: fn["Properties"].get("Environment", {}).get("Variables", {}) for name, fn in functions.items()
    }


# --- tests ---------------------------------------------------------------------------------------


def test_packaged_template_passes_cfn_lint(package_dir: Path) -> None:
    result = subprocess.run(
        [tool("cfn-lint"), str(package_dir / "sam.json")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"cfn-lint:\n{result.stdout}\n{result.stderr}"


def test_every_model_has_a_table_with_pitr_sse_and_on_demand_billing(
    template: dict[str, Any], model_schemas: dict[str, dict[str, Any]]
) -> None:
    tables = _tables(template)
    assert set(tables) == set(model_schemas)
    for logical, table in tables.items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical
        assert props["SSESpecification"]["SSEEnabled"] is True, logical
        assert table.get("DeletionPolicy") == "Retain", logical
        assert table.get("UpdateReplacePolicy") == "Retain", logical


def test_metric_table_expires_rows_through_ttl_on_expires_at(template: dict[str, Any]) -> None:
    ttl = _tables(template)["metric"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def test_ttl_of_every_table_matches_the_models(
    template: dict[str, Any], model_schemas: dict[str, dict[str, Any]]
) -> None:
    for logical, table in _tables(template).items():
        spec = table["Properties"].get("TimeToLiveSpecification")
        declared = spec["AttributeName"] if spec and spec.get("Enabled") else None
        assert declared == model_schemas[logical]["ttl"], logical


def test_key_schema_and_indexes_of_every_table_match_the_pynamodb_models(
    template: dict[str, Any], model_schemas: dict[str, dict[str, Any]]
) -> None:
    for logical, table in _tables(template).items():
        props = table["Properties"]
        declared = _normalise(
            key_schema=props["KeySchema"],
            attribute_definitions=props["AttributeDefinitions"],
            indexes=[
                (i["IndexName"], i["KeySchema"], i["Projection"]["ProjectionType"],
                 i["Projection"].get("NonKeyAttributes"))
                for i in props.get("GlobalSecondaryIndexes", [])
            ],
            local_indexes=[i["IndexName"] for i in props.get("LocalSecondaryIndexes", [])],
        )
        expected = {k: v for k, v in model_schemas[logical].items() if k not in {"table_name", "ttl"}}
        assert declared == expected, logical


def test_table_names_and_function_settings_line_up_with_the_chalice_stage(
    template: dict[str, Any], chalice_config: dict[str, Any], model_schemas: dict[str, dict[str, Any]]
) -> None:
    """With Stage=dev the stack's names are exactly those `chalice deploy --stage dev` uses."""
    stage_env = chalice_config["stages"][STAGE]["environment_variables"]
    parameters = {STAGE_PARAMETER: STAGE}
    assert STAGE in template["Parameters"][STAGE_PARAMETER]["AllowedValues"]
    for logical, table in _tables(template).items():
        table_name = _resolve(table["Properties"]["TableName"], parameters)
        assert table_name == f"{stage_env['TABLE_PREFIX']}-{logical}"
        assert table_name == model_schemas[logical]["table_name"]
    for name, env in _function_environments(template).items():
        configured = _chalice_environment(chalice_config, STAGE, name)
        for var in set(env) & {"STAGE", "TABLE_PREFIX", "ADMIN_API_KEY_PARAMETER"}:
            # Each function takes these from the Stage parameter (via infra/template.json), so the
            # stack cannot point a function at another stage's tables or key.
            assert isinstance(env.get(var), dict), f"{name}: {var} is not overridden in {MERGE_TEMPLATE}"
            assert _resolve(env[var], parameters) == configured[var], f"{name}: {var}"
        assert {"STAGE", "TABLE_PREFIX"} <= set(env), name


def test_no_policy_grants_dynamodb_wildcards_or_dynamodb_on_every_resource(template: dict[str, Any]) -> None:
    statements = list(_policy_statements(template["Resources"]))
    assert any(_grants_dynamodb(s) for s in statements), "no DynamoDB grant found at all"
    for statement in statements:
        _assert_no_broad_dynamodb_grant(statement, "sam.json")
    for managed in _resources_of_type(template, "AWS::IAM::Role").values():
        arns = managed["Properties"].get("ManagedPolicyArns", [])
        assert not [a for a in arns if "AmazonDynamoDB" in str(a)], arns


def test_chalice_deploy_policy_files_name_only_the_stage_tables_and_key(chalice_config: dict[str, Any]) -> None:
    """`chalice deploy` uses .chalice/policy-<stage>.json as is: no wildcard, no other stage's resources."""
    for stage, settings in chalice_config["stages"].items():
        env = settings["environment_variables"]
        path = REPO_ROOT / ".chalice" / settings.get("iam_policy_file", f"policy-{stage}.json")
        statements = list(_policy_statements(json.loads(path.read_text())))
        for statement in statements:
            _assert_no_broad_dynamodb_grant(statement, path.name)
        granted = {r for s in statements if _grants_dynamodb(s) for r in _as_list(s["Resource"])}
        prefix = f"arn:aws:dynamodb:*:*:table/{env['TABLE_PREFIX']}-"
        assert granted and all(r.startswith(prefix) and not r.endswith("*") for r in granted), path.name
        reads_key = [s for s in statements if "ssm:GetParameter" in _as_list(s["Action"])]
        ssm = {r for s in reads_key for r in _as_list(s["Resource"])}
        admin_key = _chalice_environment(chalice_config, stage, API_HANDLER)["ADMIN_API_KEY_PARAMETER"]
        assert ssm == {f"arn:aws:ssm:*:*:parameter{admin_key}"}, path.name


def test_every_role_scopes_dynamodb_to_the_tables_and_indexes_of_this_stack(template: dict[str, Any]) -> None:
    """Chalice's role policy (from .chalice/policy-<stage>.json) is replaced by the merge template's,
    which names each index it queries (never `index/*`)."""
    tables = _resources_of_type(template, "AWS::DynamoDB::Table")
    allowed = [{"Fn::GetAtt": [t, "Arn"]} for t in tables]
    allowed += [{"Fn::Sub": f"${{{t}.Arn}}/index/{index['IndexName']}"}
                for t, table in tables.items() for index in table["Properties"].get("GlobalSecondaryIndexes", [])]
    for role_name, role in _resources_of_type(template, "AWS::IAM::Role").items():
        for statement in _policy_statements(role["Properties"].get("Policies", [])):
            if not _grants_dynamodb(statement):
                continue
            for resource in _as_list(statement["Resource"]):
                assert resource in allowed, (
                    f"{role_name}: {resource} is not a table or index of this stack; "
                    f"override the role's Policies in {MERGE_TEMPLATE}"
                )


def test_lambda_functions_run_on_arm64(template: dict[str, Any]) -> None:
    functions = _resources_of_type(template, "AWS::Serverless::Function")
    assert functions
    for name, fn in functions.items():
        assert fn["Properties"]["Architectures"] == ["arm64"], name


def test_admin_key_reaches_only_the_admin_api_and_only_as_an_ssm_parameter_name(
    template: dict[str, Any], chalice_config: dict[str, Any]
) -> None:
    for name, env in _function_environments(template).items():
        assert "ADMIN_API_KEY" not in env, f"{name} carries the admin key in plain text"
        assert ("ADMIN_API_KEY_PARAMETER" in env) == (name == API_HANDLER), name
    stages = [chalice_config, *chalice_config.get("stages", {}).values()]
    for scope in stages:
        assert "ADMIN_API_KEY" not in scope.get("environment_variables", {})
        for fn in scope.get("lambda_functions", {}).values():
            assert "ADMIN_API_KEY" not in fn.get("environment_variables", {})


# --- least privilege: each role against the calls its function's code makes -----------------------
#
# A small IAM evaluator: Allow statements only (no role has a Deny), actions and resources matched with
# IAM's wildcards, and the two condition operators the roles use. A statement with any other operator
# fails the test rather than being read wrongly.


def _resource_arn(logical_id: str, template: dict[str, Any]) -> str:
    """The ARN of a table or state machine of the stack the recorder stands for (Stage=dev, moto's account)."""
    resource = template["Resources"][logical_id]
    properties = resource["Properties"]
    parameters = {STAGE_PARAMETER: STAGE}
    if resource["Type"] == "AWS::DynamoDB::Table":
        table_name = _resolve(properties["TableName"], parameters)
        return f"arn:aws:dynamodb:{RECORDED_REGION}:{RECORDED_ACCOUNT}:table/{table_name}"
    if resource["Type"] == STATE_MACHINE_TYPE:
        name = _resolve(properties["StateMachineName"], parameters)
        return f"arn:aws:states:{RECORDED_REGION}:{RECORDED_ACCOUNT}:stateMachine:{name}"
    if logical_id == SCALE:  # the recorder's stand-in name (tests/infra/recorded_calls.py SCALE_FUNCTION_NAME)
        return f"arn:aws:lambda:{RECORDED_REGION}:{RECORDED_ACCOUNT}:function:hyperstack-llm-proxy-{STAGE}-scale"
    raise AssertionError(f"{logical_id}: a role names a {resource['Type']}, which this test cannot resolve")


def _template_arn(value: Any, template: dict[str, Any]) -> str:
    """A role statement's resource as the ARN (or ARN pattern) it stands for in the recorded stack."""
    if isinstance(value, str):
        return value
    if set(value) == {"Fn::GetAtt"}:
        logical_id, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn", value
        return _resource_arn(logical_id, template)
    if set(value) == {"Ref"}:
        return _resource_arn(value["Ref"], template)
    assert set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str), value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        logical_id, _, attribute = name.partition(".")
        assert attribute == "Arn", value
        return _resource_arn(logical_id, template)

    return re.sub(r"\$\{([^}]+)\}", substitute, value["Fn::Sub"])


def _condition_holds(operator: str, allowed: list[str], values: list[str] | None) -> bool:
    # ForAllValues: every value of the request's key must match; a request without the key passes.
    if values is None:
        return True
    if operator == "ForAllValues:StringEquals":
        return set(values) <= set(allowed)
    if operator == "ForAllValues:StringLike":
        return all(any(fnmatchcase(value, pattern) for pattern in allowed) for value in values)
    raise AssertionError(f"condition operator {operator}: unknown to this test's evaluator")


def _conditions(statement: dict[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    for operator, keys in statement.get("Condition", {}).items():
        for key, allowed in keys.items():
            yield operator, key, _as_list(allowed)


def _statement_allows(statement: dict[str, Any], call: dict[str, Any], arn: Callable[[Any], str]) -> bool:
    assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement), statement
    return (
        any(fnmatchcase(call["action"].lower(), action.lower()) for action in _actions(statement))
        and any(fnmatchcase(call["resource"], arn(resource)) for resource in _as_list(statement["Resource"]))
        and all(_condition_holds(operator, allowed, call["context"].get(key))
                for operator, key, allowed in _conditions(statement))
    )


def _denied_calls(statements: list[dict[str, Any]], calls: list[dict[str, Any]],
                  arn: Callable[[Any], str]) -> list[dict[str, Any]]:
    return [call for call in calls if not any(_statement_allows(s, call, arn) for s in statements)]


def _unused_grants(statements: list[dict[str, Any]], calls: list[dict[str, Any]],
                   arn: Callable[[Any], str]) -> list[tuple[str, str, str]]:
    """Each action on each resource, and each value a condition allows, that no call of the code needs.
    Log writes are Lambda's own, not the code's."""
    unused = []
    for statement in statements:
        sid = statement.get("Sid", "?")
        for action in _actions(statement) - {"logs:CreateLogGroup"} - LOG_ACTIONS:
            for resource in _as_list(statement["Resource"]):
                narrowed = {**statement, "Action": action, "Resource": resource}
                if not any(_statement_allows(narrowed, call, arn) for call in calls):
                    unused.append((sid, action, arn(resource)))
        allowed_calls = [call for call in calls if _statement_allows(statement, call, arn)]
        for operator, key, allowed in _conditions(statement):
            seen = [value for call in allowed_calls for value in call["context"].get(key, [])]
            unused += [(sid, f"{operator} {key}", value) for value in allowed
                       if not any(_condition_holds(operator, [value], [each]) for each in seen)]
    return unused


def _calls_of_stage(calls: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    """The recorded (dev) calls as the same code would make them in another stage."""
    def rename(resource: str) -> str:
        return resource.replace(f"hyperstack-llm-proxy-{STAGE}", f"hyperstack-llm-proxy-{stage}").replace(
            f"hyperstack-llm-proxy/{STAGE}/", f"hyperstack-llm-proxy/{stage}/")

    return [{**call, "resource": rename(call["resource"])} for call in calls]


def _chat_call(action: str, table: str, *attributes: str, leading_key: str = "k") -> dict[str, Any]:
    context = {"dynamodb:Attributes": list(attributes), "dynamodb:LeadingKeys": [leading_key]} if attributes else {}
    table_arn = f"arn:aws:dynamodb:{RECORDED_REGION}:{RECORDED_ACCOUNT}:table/hyperstack-llm-proxy-{STAGE}-{table}"
    return {"action": action, "resource": table_arn, "context": context}


@pytest.mark.parametrize("function", sorted(FUNCTION_ROLES))
def test_each_role_allows_every_call_its_function_makes(
    template: dict[str, Any], recorded_calls: dict[str, list[dict[str, Any]]], function: str
) -> None:
    statements = _role_statements(template, FUNCTION_ROLES[function])
    denied = _denied_calls(statements, recorded_calls[function], lambda r: _template_arn(r, template))
    assert not denied, f"{FUNCTION_ROLES[function]} would refuse what {function} does: {denied}"


@pytest.mark.parametrize("function", sorted(FUNCTION_ROLES))
def test_each_role_allows_nothing_its_function_does_not_call(
    template: dict[str, Any], recorded_calls: dict[str, list[dict[str, Any]]], function: str
) -> None:
    statements = _role_statements(template, FUNCTION_ROLES[function])
    unused = _unused_grants(statements, recorded_calls[function], lambda r: _template_arn(r, template))
    assert not unused, f"{FUNCTION_ROLES[function]} allows what {function} never does: {unused}"


@pytest.mark.parametrize("function", sorted(FUNCTION_ROLES))
def test_chalice_deploy_policies_allow_exactly_the_calls_of_their_function_in_every_stage(
    chalice_config: dict[str, Any], recorded_calls: dict[str, list[dict[str, Any]]], function: str
) -> None:
    if CHAT in CHALICE_DEPLOY_CALLS[function] and function != CHAT:
        from app import app

        assert "POST" in app.routes.get(CHAT_PATH, {}), "no buffered chat route any more"
    for stage in chalice_config["stages"]:
        statements = _chalice_policy_statements(chalice_config, stage, function)
        calls = _calls_of_stage([c for caller in CHALICE_DEPLOY_CALLS[function] for c in recorded_calls[caller]], stage)
        denied, unused = _denied_calls(statements, calls, str), _unused_grants(statements, calls, str)
        assert not denied, f"{stage}: the policy file of {function} would refuse {denied}"
        assert not unused, f"{stage}: the policy file of {function} allows what it never does: {unused}"


def test_no_role_or_policy_file_allows_batch_writes_table_descriptions_or_every_resource(
    template: dict[str, Any],
) -> None:
    documents = {name: role["Properties"].get("Policies", [])
                 for name, role in _resources_of_type(template, "AWS::IAM::Role").items()}
    documents |= {path.name: json.loads(path.read_text()) for path in (REPO_ROOT / ".chalice").glob("policy-*.json")}
    for where, document in documents.items():
        for statement in _policy_statements(document):
            actions = {a.lower() for a in _actions(statement)}
            assert not actions & {a.lower() for a in UNUSED_ACTIONS}, f"{where}: {statement.get('Sid')}"
            assert not [a for a in actions if "*" in a], f"{where}: {statement.get('Sid')} has a wildcard action"
            assert "*" not in _as_list(statement["Resource"]), f"{where}: {statement.get('Sid')} on every resource"


def test_the_one_scan_is_the_admin_apis_consistent_read_of_the_replicas_table(template: dict[str, Any]) -> None:
    documents = {name: role["Properties"].get("Policies", [])
                 for name, role in _resources_of_type(template, "AWS::IAM::Role").items()}
    documents |= {path.name: json.loads(path.read_text()) for path in (REPO_ROOT / ".chalice").glob("policy-*.json")}
    scans = {(where, statement.get("Sid")) for where, document in documents.items()
             for statement in _policy_statements(document)
             if "dynamodb:scan" in {action.lower() for action in _actions(statement)}}

    assert scans == SCAN_GRANTS


def test_chat_role_allows_exactly_the_item_calls_of_the_chat_plane_and_its_logs(template: dict[str, Any]) -> None:
    assert _chat_function(template)["Properties"]["Role"] == {"Fn::GetAtt": [CHAT_ROLE, "Arn"]}
    statements = _role_statements(template, CHAT_ROLE)
    granted = {(action, _table_or_index(resource, template)) for s in statements if _grants_dynamodb(s)
               for action in _actions(s) for resource in _as_list(s["Resource"])}
    assert granted == CHAT_GRANTS
    others = {action for s in statements if not _grants_dynamodb(s) for action in _actions(s)}
    assert others == LOG_ACTIONS | {"states:StartExecution", "lambda:InvokeFunction"}, \
        "no SSM parameter, no other service; a wake's start, a nudge of the scaler"
    [invoke] = [s for s in statements if "lambda:InvokeFunction" in _actions(s)]
    assert invoke["Resource"] == {"Fn::GetAtt": [SCALE, "Arn"]}, "the scaler, and no other function"


def test_chat_role_updates_keys_and_replicas_only_through_the_attributes_its_writes_name(
    template: dict[str, Any],
) -> None:
    statements = _role_statements(template, CHAT_ROLE)
    updates = [s for s in statements if "dynamodb:UpdateItem" in _actions(s)]
    declared = {(_table_or_index(s["Resource"], template),
                 frozenset(s["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"])) for s in updates}
    assert len(updates) == len(declared) and declared == CHAT_UPDATE_ATTRIBUTES

    def allowed(call: dict[str, Any]) -> bool:
        return not _denied_calls(statements, [call], lambda r: _template_arn(r, template))

    assert allowed(_chat_call("dynamodb:UpdateItem", "api_key", "key_hash", "rl_window", "rl_count"))
    for forged in ("id", "user_id", "listing"):  # what would turn an update into a usable key
        assert not allowed(_chat_call("dynamodb:UpdateItem", "api_key", "key_hash", "enabled", forged)), forged
    assert allowed(_chat_call("dynamodb:UpdateItem", "replicas", "id", "rl_window", "rl_count"))
    assert allowed(_chat_call("dynamodb:UpdateItem", "replicas", "id", "last_used_minute"))
    assert allowed(_chat_call("dynamodb:UpdateItem", "replicas", "id", "wake_requested_at", "hibernated_at"))
    for redirect in ("endpoint", "vm_status", "model_id", "vm_id", "hibernate_after_seconds"):
        for write in (("rl_window", "rl_count"), ("last_used_minute",), ("wake_requested_at", "hibernated_at")):
            call = _chat_call("dynamodb:UpdateItem", "replicas", "id", *write, redirect)
            assert not allowed(call), (write, redirect)
    # Each statement holds its own set: no one request both counts and asks for a wake.
    assert not allowed(_chat_call("dynamodb:UpdateItem", "replicas", "id", "rl_count", "wake_requested_at"))


def test_chat_function_may_start_executions_of_the_wake_workflow_only(template: dict[str, Any]) -> None:
    variables = _chat_function(template)["Properties"]["Environment"]["Variables"]
    assert variables["WAKE_STATE_MACHINE_ARN"] == {"Ref": WAKE_STATE_MACHINE}
    statements = _role_statements(template, CHAT_ROLE)

    def allowed(logical_id: str) -> bool:
        start = {"action": "states:StartExecution", "resource": _resource_arn(logical_id, template), "context": {}}
        return not _denied_calls(statements, [start], lambda r: _template_arn(r, template))

    assert {machine: allowed(machine) for machine in WORKFLOWS} == {
        machine: machine == WAKE_STATE_MACHINE for machine in WORKFLOWS}
    states = {a for s in statements for a in _actions(s) if a.startswith("states:")}
    assert states == {"states:StartExecution"}, "it neither reads, stops nor lists executions"


def test_chat_role_may_only_advance_the_metric_id_counter(template: dict[str, Any]) -> None:
    statements = _role_statements(template, CHAT_ROLE)

    def allowed(call: dict[str, Any]) -> bool:
        return not _denied_calls(statements, [call], lambda r: _template_arn(r, template))

    assert allowed(_chat_call("dynamodb:UpdateItem", "bookkeeping", "pk", "value", leading_key="seq#metric"))
    for other in ("seq#api_key", "seq#replicas", "endpoint#1#http://10.0.0.1:8000/v1"):
        assert not allowed(_chat_call("dynamodb:UpdateItem", "bookkeeping", "pk", "value", leading_key=other)), other


def test_chat_role_cannot_mint_keys_delete_rows_scan_read_a_secret_or_set_a_replicas_status(
    template: dict[str, Any],
) -> None:
    statements = _role_statements(template, CHAT_ROLE)
    admin_key = f"arn:aws:ssm:{RECORDED_REGION}:{RECORDED_ACCOUNT}:parameter/hyperstack-llm-proxy/{STAGE}/admin-api-key"
    forbidden = [
        _chat_call("dynamodb:PutItem", "api_key", "key_hash", "id", "user_id", "allowed_rpm", "enabled"),
        _chat_call("dynamodb:PutItem", "replicas", "id", "model_id", "endpoint", "vm_status"),
        _chat_call("dynamodb:PutItem", "llm_models", "name", "id"),
        # vm_status, named by an update or by its condition: never, not even beside the wake's ask.
        _chat_call("dynamodb:UpdateItem", "replicas", "id", "vm_status"),
        _chat_call("dynamodb:UpdateItem", "replicas", "id", "wake_requested_at", "vm_status"),
        _chat_call("dynamodb:UpdateItem", "replicas", "id", "hibernated_at", "vm_status"),
        *[_chat_call(action, table) for table in ("api_key", "metric", "llm_models", "replicas", "bookkeeping", "usage")
          for action in ("dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:BatchWriteItem")],
        _chat_call("dynamodb:Query", "api_key/index/listing"),
        _chat_call("dynamodb:GetItem", "replica_security_rules"),
        {"action": "ssm:GetParameter", "resource": admin_key, "context": {}},
        *[{"action": "states:StartExecution", "resource": _resource_arn(machine, template), "context": {}}
          for machine in (STATE_MACHINE, HIBERNATE_STATE_MACHINE)],
    ]
    denied = _denied_calls(statements, forbidden, lambda r: _template_arn(r, template))
    assert [call for call in forbidden if call not in denied] == []


@pytest.mark.parametrize("function", sorted(FUNCTION_ROLES))
def test_only_the_provision_role_can_read_a_replicas_private_key(template: dict[str, Any], function: str) -> None:
    statements = _role_statements(template, FUNCTION_ROLES[function])
    read = _chat_call("dynamodb:GetItem", "bookkeeping", "pk", "private_key", leading_key="replica-tls#1")

    allowed = not _denied_calls(statements, [read], lambda r: _template_arn(r, template))

    assert allowed == (function == PROVISION)


def test_each_function_is_given_only_the_variables_its_code_reads(
    template: dict[str, Any], chalice_config: dict[str, Any]
) -> None:
    environments = _function_environments(template)
    assert set(environments) == set(FUNCTION_VARIABLES), "a new function must say which variables it reads"
    for name, env in environments.items():
        assert set(env) == FUNCTION_VARIABLES[name], name
    for stage in chalice_config["stages"]:
        for name, variables in FUNCTION_VARIABLES.items():
            assert set(_chalice_environment(chalice_config, stage, name)) == variables - PACKAGE_ONLY_VARIABLES, (
                f"{stage} {name}: a stage-wide variable reaches every function; set it on the function that reads it"
            )


def test_every_variable_given_to_a_function_is_read_where_the_test_says() -> None:
    from aws_lambda_powertools.shared import constants

    assert set().union(*FUNCTION_VARIABLES.values()) == set(VARIABLE_READERS)
    settings = (REPO_ROOT / "chalicelib" / "core" / "settings.py").read_text()
    for variable, reader in VARIABLE_READERS.items():
        assert (REPO_ROOT / reader.split(":")[0]).exists(), reader
        if variable not in READ_OUTSIDE_SETTINGS:
            assert f'"{variable}"' in settings, f"chalicelib/core/settings.py no longer reads {variable}"
    assert constants.POWERTOOLS_LOG_LEVEL_LEGACY_ENV == "LOG_LEVEL"


# --- the streaming chat function ------------------------------------------------------------------


def _chat_function(template: dict[str, Any]) -> dict[str, Any]:
    assert CHAT in template["Resources"], "no Chat function: app.py must declare @app.lambda_function(name='chat')"
    return template["Resources"][CHAT]


def _chat_permissions(template: dict[str, Any], principal: str) -> list[dict[str, Any]]:
    permissions = _resources_of_type(template, "AWS::Lambda::Permission").values()
    return [p["Properties"] for p in permissions
            if p["Properties"]["FunctionName"] == {"Ref": CHAT} and p["Properties"]["Principal"] == principal]


def _logical_table(table_ref: Any, template: dict[str, Any]) -> str:
    """The logical table name (api_key, ...) behind a GetAtt Arn or a Sub of `${X.Arn}/index/*`."""
    if isinstance(table_ref, dict) and "Fn::GetAtt" in table_ref:
        resource = table_ref["Fn::GetAtt"][0]
    else:
        resource = table_ref["Fn::Sub"].split("}")[0].removeprefix("${").removesuffix(".Arn")
    return template["Resources"][resource]["Properties"]["TableName"]["Fn::Sub"].rsplit("-", 1)[1]


def _table_or_index(table_ref: Any, template: dict[str, Any]) -> str:
    """`api_key`, or `replicas/index/by_model`: the table or index a statement's resource names."""
    if isinstance(table_ref, dict) and "Fn::Sub" in table_ref:
        index = table_ref["Fn::Sub"].partition("}")[2]
        return _logical_table(table_ref, template) + index
    return _logical_table(table_ref, template)


def test_chat_function_runs_the_streaming_runtime_through_the_exec_wrapper(
    template: dict[str, Any], package_dir: Path
) -> None:
    props = _chat_function(template)["Properties"]
    variables = props["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == EXEC_WRAPPER
    assert variables["MOCK_LLM"] == "false"
    assert props["Timeout"] == 900
    assert props["MemorySize"] == 128
    assert props["Architectures"] == ["arm64"]
    # Lambda runs the wrapper itself: the zip must keep its run bit.
    with zipfile.ZipFile(package_dir / "deployment.zip") as archive:
        wrapper = archive.getinfo(EXEC_WRAPPER.removeprefix("/var/task/"))
    assert (wrapper.external_attr >> 16) & 0o111 == 0o111, oct(wrapper.external_attr >> 16)


# The local stack's modules (infra/local/): test doubles and dev servers that must never ship.
LOCAL_STACK_MODULES = {"mock_vllm", "fake_hyperstack", "emulator", "gateway", "sse_faults", "llama_replica"}


def test_deployment_zip_holds_the_service_and_no_local_stack_module(package_dir: Path) -> None:
    with zipfile.ZipFile(package_dir / "deployment.zip") as archive:
        names = archive.namelist()
    # Our own code is app.py and chalicelib/; everything else at the top is a vendored distribution.
    ours = [name for name in names if name == "app.py" or name.startswith("chalicelib/")]
    shipped_local = [
        name for name in ours
        if "local" in name.split("/")[:-1] or Path(name).stem in LOCAL_STACK_MODULES
    ]
    assert "chalicelib/chat/service.py" in names
    assert [name for name in names if name.split("/")[0] in ("infra", "local", "tests")] == []
    assert shipped_local == []


def test_chat_function_url_is_public_and_streams(template: dict[str, Any]) -> None:
    urls = _resources_of_type(template, "AWS::Lambda::Url")
    chat_urls = [u for u in urls.values() if u["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [CHAT, "Arn"]}]
    assert len(chat_urls) == 1, urls
    assert chat_urls[0]["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    # No IAM auth: callers present their API key, which the function checks.
    assert chat_urls[0]["Properties"]["AuthType"] == "NONE"
    grants = _chat_permissions(template, "*")
    # Function URLs created since October 2025 need both actions granted.
    assert {g["Action"] for g in grants} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    for grant in grants:
        if grant["Action"] == "lambda:InvokeFunctionUrl":
            assert grant["FunctionUrlAuthType"] == "NONE"
        else:
            assert grant["InvokedViaFunctionUrl"] is True, "the public may invoke Chat only through its URL"
    url_name = next(name for name, u in urls.items() if u in chat_urls)
    assert {"Fn::GetAtt": [url_name, "FunctionUrl"]} in [o["Value"] for o in template["Outputs"].values()]


@pytest.mark.parametrize("path", OPERATION_PATHS)
def test_rest_api_sends_each_openai_operation_to_the_chat_function_in_streaming_mode(
    template: dict[str, Any], path: str
) -> None:
    api = template["Resources"]["RestAPI"]["Properties"]
    integration = api["DefinitionBody"]["paths"][path]["post"]["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    assert integration["httpMethod"] == "POST"
    assert integration["uri"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:apigateway:${{AWS::Region}}:lambda:path/2021-11-15/functions/"
        f"${{{CHAT}.Arn}}/response-streaming-invocations"
    }
    assert integration["responseTransferMode"] == "STREAM"
    assert integration["timeoutInMillis"] == 900_000  # streaming integrations may run 15 minutes
    # Edge-optimized APIs cut a stream idle for 30 s; a regional one allows 5 minutes (time to a first token).
    assert api["EndpointConfiguration"] == "REGIONAL"


def test_api_gateway_may_invoke_the_chat_function_for_the_openai_operations_only(template: dict[str, Any]) -> None:
    grants = _chat_permissions(template, "apigateway.amazonaws.com")

    assert {g["Action"] for g in grants} == {"lambda:InvokeFunction"}
    assert sorted(g["SourceArn"]["Fn::Sub"].rsplit(":", 1)[1] for g in grants) == sorted(
        f"${{RestAPI}}/*/POST{path}" for path in OPERATION_PATHS)


def test_every_openai_operation_route_is_sent_to_the_chat_function() -> None:
    from app import PUBLIC_ROUTES, app

    assert {path for path in app.routes if path in PUBLIC_ROUTES and "POST" in app.routes[path]} == set(
        OPERATION_PATHS)


def test_chalice_deploy_gives_the_chat_function_its_own_policy_and_runtime(chalice_config: dict[str, Any]) -> None:
    for settings in chalice_config["stages"].values():
        chat = settings["lambda_functions"]["chat"]
        assert chat["environment_variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == EXEC_WRAPPER
        assert chat["iam_policy_file"] != settings["iam_policy_file"]


# --- the provisioning workflow --------------------------------------------------------------------


def _state_machine(template: dict[str, Any], logical_id: str = STATE_MACHINE) -> dict[str, Any]:
    assert logical_id in template["Resources"], f"no {logical_id}: see {MERGE_TEMPLATE}"
    return template["Resources"][logical_id]["Properties"]


def _role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    properties = template["Resources"][role]["Properties"]
    assert not properties.get("ManagedPolicyArns"), f"{role} needs no managed policy"
    return list(_policy_statements(properties["Policies"]))


def _actions(statement: dict[str, Any]) -> set[str]:
    return set(_as_list(statement["Action"]))


def test_the_stack_deploys_exactly_the_three_workflows(template: dict[str, Any]) -> None:
    assert set(_resources_of_type(template, STATE_MACHINE_TYPE)) == set(WORKFLOWS)


@pytest.mark.parametrize("logical_id", sorted(WORKFLOWS))
def test_state_machine_definition_is_the_asl_file_with_the_provision_function_substituted(
    template: dict[str, Any], logical_id: str
) -> None:
    name, definition_file = WORKFLOWS[logical_id]
    properties = _state_machine(template, logical_id)
    assert properties["StateMachineType"] == "STANDARD"  # it waits minutes; an Express execution lasts 5 at most
    # Named from Stage: a role can then name the machine, or its executions, without a dependency cycle.
    assert properties["StateMachineName"] == {"Fn::Sub": name}
    assert properties["RoleArn"] == {"Fn::GetAtt": [STATE_MACHINE_ROLE, "Arn"]}
    assert properties["DefinitionSubstitutions"] == {FUNCTION_ARN_SUBSTITUTION: {"Fn::GetAtt": [PROVISION, "Arn"]}}
    assert not {"DefinitionString", "DefinitionS3Location"} & set(properties)
    assert template["Resources"][logical_id]["Metadata"]["DefinitionFile"] == definition_file
    arn = "arn:aws:lambda:us-east-1:123456789012:function:hyperstack-llm-proxy-dev-provision"
    placeholder = "${" + FUNCTION_ARN_SUBSTITUTION + "}"
    deployed = json.dumps(properties["Definition"]).replace(placeholder, arn)
    source = (REPO_ROOT / definition_file).read_text().replace(placeholder, arn)
    assert json.loads(deployed) == json.loads(source)
    assert "${" not in deployed, "a ${...} in the definition that DefinitionSubstitutions does not resolve"


def test_state_machine_role_may_only_invoke_the_provision_function(template: dict[str, Any]) -> None:
    role = template["Resources"][STATE_MACHINE_ROLE]["Properties"]
    assert [s["Principal"] for s in role["AssumeRolePolicyDocument"]["Statement"]] == [
        {"Service": "states.amazonaws.com"}
    ]
    statements = _role_statements(template, STATE_MACHINE_ROLE)
    grants = [(s["Effect"], _actions(s), _as_list(s["Resource"])) for s in statements]
    assert grants == [("Allow", {"lambda:InvokeFunction"}, [{"Fn::GetAtt": [PROVISION, "Arn"]}])]
    for name in _resources_of_type(template, "AWS::IAM::Role"):
        if name not in (STATE_MACHINE_ROLE, CHAT_ROLE):  # chat's one invoke, the scaler's, is pinned above
            statements = _policy_statements(template["Resources"][name]["Properties"].get("Policies", []))
            assert not [s for s in statements if any(a.startswith("lambda:") for a in _actions(s))], name


def test_provision_function_runs_with_its_role_and_the_hyperstack_key_parameter_name(
    template: dict[str, Any], chalice_config: dict[str, Any]
) -> None:
    assert PROVISION in template["Resources"], "app.py must declare @app.lambda_function(name='provision')"
    properties = template["Resources"][PROVISION]["Properties"]
    assert properties["Role"] == {"Fn::GetAtt": [PROVISION_ROLE, "Arn"]}
    variables = properties["Environment"]["Variables"]
    assert "HYPERSTACK_API_KEY" not in variables, "the Hyperstack key reaches the function only through SSM"
    configured = chalice_config["stages"][STAGE]["lambda_functions"]["provision"]["environment_variables"]
    parameter = _resolve(variables["HYPERSTACK_API_KEY_PARAMETER"], {STAGE_PARAMETER: STAGE})
    assert parameter == configured["HYPERSTACK_API_KEY_PARAMETER"]
    assert parameter == f"/hyperstack-llm-proxy/{STAGE}/hyperstack-api-key"


def test_provision_role_is_limited_to_replica_rows_the_hyperstack_key_and_its_own_executions(
    template: dict[str, Any],
) -> None:
    statements = _role_statements(template, PROVISION_ROLE)
    written, read = set(), set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        if _grants_dynamodb(statement):
            tables = {_logical_table(r, template) for r in _as_list(statement["Resource"])}
            (read if _actions(statement) <= PROVISION_READ_ACTIONS else written).update(tables)
    assert written == PROVISION_WRITE_TABLES
    assert read - written == {"llm_models"}, "models are read, never written, by the workflow"
    ssm = [s for s in statements if any(a.startswith("ssm:") for a in _actions(s))]
    assert [(_actions(s), s["Resource"]["Fn::Sub"].split(":parameter")[1]) for s in ssm] == [
        ({"ssm:GetParameter"}, "/hyperstack-llm-proxy/${Stage}/hyperstack-api-key")
    ]
    states = [s for s in statements if any(a.startswith("states:") for a in _actions(s))]
    # Its provisioning executions: a teardown waits for, and may stop, its replica's create execution. It may
    # start the wake a request asked for while its replica hibernated (named from Stage: the machine needs
    # Provision, so Provision cannot Ref it); the hibernate and wake executions it reads (to take over a
    # replica one left behind, issue #20), never stops.
    assert [(_actions(s), [r["Fn::Sub"].split(":states:")[1] for r in _as_list(s["Resource"])])
            for s in states] == [
        (PROVISION_EXECUTION_ACTIONS, [f"${{AWS::Region}}:${{AWS::AccountId}}:execution:{STATE_MACHINE_NAME}:*"]),
        ({"states:StartExecution"},
         [f"${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{WORKFLOWS[WAKE_STATE_MACHINE][0]}"]),
        ({"states:DescribeExecution"},
         [f"${{AWS::Region}}:${{AWS::AccountId}}:execution:{WORKFLOWS[machine][0]}:*"
          for machine in (HIBERNATE_STATE_MACHINE, WAKE_STATE_MACHINE)]),
    ]
    wake_arn = template["Resources"][PROVISION]["Properties"]["Environment"]["Variables"]["WAKE_STATE_MACHINE_ARN"]
    assert _template_arn(wake_arn, template) == _resource_arn(WAKE_STATE_MACHINE, template)
    other = [a for s in statements for a in _actions(s) if not a.startswith(("dynamodb:", "ssm:", "states:", "logs:"))]
    assert not other, other


def test_each_role_starts_executions_of_its_own_workflows_only(template: dict[str, Any]) -> None:
    variables = template["Resources"][API_HANDLER]["Properties"]["Environment"]["Variables"]
    assert variables["PROVISION_STATE_MACHINE_ARN"] == {"Ref": STATE_MACHINE}
    machines = {_resource_arn(logical_id, template): logical_id for logical_id in WORKFLOWS}
    started: dict[str, set[str]] = {}
    for name, role in _resources_of_type(template, "AWS::IAM::Role").items():
        for statement in _policy_statements(role["Properties"].get("Policies", [])):
            states = {a for a in _actions(statement) if a.startswith("states:")}
            if states:
                assert "states:*" not in states and "*" not in _as_list(statement["Resource"]), name
            if "states:StartExecution" in states:
                assert states == {"states:StartExecution"}, f"{name}: start executions in a statement of its own"
                arns = {_template_arn(r, template) for r in _as_list(statement["Resource"])}
                assert arns <= set(machines), f"{name} may start {arns - set(machines)}"
                started.setdefault(name, set()).update(machines[arn] for arn in arns)
    assert started == EXECUTION_STARTERS


@pytest.mark.parametrize("function", [API_HANDLER, IDLE_CHECK, SCALE])
def test_the_functions_that_start_hibernations_and_wakes_are_given_those_workflows(
    template: dict[str, Any], function: str
) -> None:
    variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert variables["HIBERNATE_STATE_MACHINE_ARN"] == {"Ref": HIBERNATE_STATE_MACHINE}
    assert variables["WAKE_STATE_MACHINE_ARN"] == {"Ref": WAKE_STATE_MACHINE}


def test_chalice_deploy_gives_the_provision_function_its_own_least_privilege_policy(
    chalice_config: dict[str, Any],
) -> None:
    for stage, settings in chalice_config["stages"].items():
        provision = settings["lambda_functions"]["provision"]
        key = f"/hyperstack-llm-proxy/{stage}/hyperstack-api-key"
        assert provision["environment_variables"]["HYPERSTACK_API_KEY_PARAMETER"] == key
        path = REPO_ROOT / ".chalice" / provision["iam_policy_file"]
        assert path.name != settings["iam_policy_file"]
        statements = list(_policy_statements(json.loads(path.read_text())))
        for statement in statements:
            _assert_no_broad_dynamodb_grant(statement, path.name)
        prefix = f"arn:aws:dynamodb:*:*:table/{settings['environment_variables']['TABLE_PREFIX']}-"
        tables = {r for s in statements if _grants_dynamodb(s) for r in _as_list(s["Resource"])}
        assert all(r.startswith(prefix) for r in tables), path.name
        assert {r.removeprefix(prefix).split("/")[0] for r in tables} == PROVISION_WRITE_TABLES | {"llm_models"}
        granted = {(a, r) for s in statements for a in _actions(s) for r in _as_list(s["Resource"])
                   if not a.startswith(("dynamodb:", "logs:"))}
        executions = f"arn:aws:states:*:*:execution:hyperstack-llm-proxy-{stage}-provisioning:*"
        machine = f"arn:aws:states:*:*:stateMachine:hyperstack-llm-proxy-{stage}-"
        assert granted == {("ssm:GetParameter", f"arn:aws:ssm:*:*:parameter{key}")} | {
            (a, executions) for a in PROVISION_EXECUTION_ACTIONS
        } | {("states:StartExecution", machine + "wake")} | {
            ("states:DescribeExecution", f"arn:aws:states:*:*:execution:hyperstack-llm-proxy-{stage}-{workflow}:*")
            for workflow in ("hibernate", "wake")}, path.name
        api = list(_policy_statements(json.loads((REPO_ROOT / ".chalice" / settings["iam_policy_file"]).read_text())))
        starts = {r for s in api if "states:StartExecution" in _actions(s) for r in _as_list(s["Resource"])}
        assert starts == {machine + workflow for workflow in ("provisioning", "hibernate", "wake")}


def test_package_script_refuses_a_definition_with_an_unresolved_substitution() -> None:
    spec = importlib.util.spec_from_file_location("infra_package", REPO_ROOT / "infra" / "package.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    machine = {"Type": "AWS::StepFunctions::StateMachine", "Metadata": {"DefinitionFile": ASL_DEFINITION},
               "Properties": {"DefinitionSubstitutions": {}}}
    with pytest.raises(ValueError, match=FUNCTION_ARN_SUBSTITUTION):
        script.inline_definitions({"Resources": {STATE_MACHINE: machine}})
    machine["Properties"]["DefinitionSubstitutions"] = {FUNCTION_ARN_SUBSTITUTION: "arn"}
    assert script.inline_definitions({"Resources": {STATE_MACHINE: machine}}) == [STATE_MACHINE]
    assert machine["Properties"]["Definition"] == json.loads((REPO_ROOT / ASL_DEFINITION).read_text())


# --- the reconciler -------------------------------------------------------------------------------


def test_reconciler_runs_on_an_eventbridge_schedule_every_fifteen_minutes(template: dict[str, Any]) -> None:
    assert RECONCILE in template["Resources"], "app.py must declare @app.schedule(..., name='reconcile')"
    events = template["Resources"][RECONCILE]["Properties"].get("Events", {}).values()
    schedules = [event["Properties"]["Schedule"] for event in events if event["Type"] == "Schedule"]
    assert schedules == [RECONCILE_SCHEDULE]


def test_reconcile_role_allows_exactly_its_item_calls_the_hyperstack_key_and_its_logs(
    template: dict[str, Any],
) -> None:
    properties = template["Resources"][RECONCILE]["Properties"]
    assert properties["Role"] == {"Fn::GetAtt": [RECONCILE_ROLE, "Arn"]}
    assert "HYPERSTACK_API_KEY" not in properties["Environment"]["Variables"]
    statements = _role_statements(template, RECONCILE_ROLE)
    granted = {(action, _table_or_index(resource, template)) for s in statements if _grants_dynamodb(s)
               for action in _actions(s) for resource in _as_list(s["Resource"])}
    assert granted == RECONCILE_GRANTS
    others = {(action, json.dumps(s["Resource"])) for s in statements if not _grants_dynamodb(s)
              for action in _actions(s)}
    assert {action for action, _ in others} == LOG_ACTIONS | {"ssm:GetParameter"}
    assert any("hyperstack-api-key" in resource for action, resource in others if action == "ssm:GetParameter")
    updates = [s for s in statements if "dynamodb:UpdateItem" in _actions(s)]
    assert [set(s["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]) for s in updates] == [
        {"id", "vm_status", "error_message", "vm_id"}]
    bookkeeping = [s for s in statements if "dynamodb:PutItem" in _actions(s)]
    assert [s["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"] for s in bookkeeping] == [
        ["deployment"]]


# --- the idle check -------------------------------------------------------------------------------


def test_idle_check_runs_on_an_eventbridge_schedule_every_minute(template: dict[str, Any]) -> None:
    assert IDLE_CHECK in template["Resources"], "app.py must declare @app.schedule(..., name='idle_check')"
    events = template["Resources"][IDLE_CHECK]["Properties"].get("Events", {}).values()
    schedules = [event["Properties"]["Schedule"] for event in events if event["Type"] == "Schedule"]
    assert schedules == [IDLE_CHECK_SCHEDULE]


def _grants_by_target(statements: list[dict[str, Any]], template: dict[str, Any]) -> set[tuple[str, str]]:
    """(action, what it acts on) of every statement but the log writes: a table or index, a state machine by its
    logical id, or `executions of` one."""
    machines = {_resource_arn(logical_id, template): logical_id for logical_id in WORKFLOWS}

    def target(resource: Any) -> str:
        if isinstance(resource, dict) and set(resource) == {"Ref"}:
            return machines[_template_arn(resource, template)]
        if isinstance(resource, dict) and ":execution:" in str(resource.get("Fn::Sub")):
            machine = _template_arn(resource, template).replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
            return f"executions of {machines[machine]}"
        return _table_or_index(resource, template)

    return {(action, target(resource)) for s in statements if not set(_actions(s)) <= LOG_ACTIONS
            for action in _actions(s) for resource in _as_list(s["Resource"])}


def test_idle_check_role_allows_exactly_the_replica_listing_the_two_workflows_and_its_logs(
    template: dict[str, Any],
) -> None:
    assert template["Resources"][IDLE_CHECK]["Properties"]["Role"] == {"Fn::GetAtt": [IDLE_CHECK_ROLE, "Arn"]}
    statements = _role_statements(template, IDLE_CHECK_ROLE)
    granted = _grants_by_target(statements, template)
    assert granted == IDLE_CHECK_GRANTS
    assert not [s for s in statements if "Condition" in s], "no write to hold to attributes: it writes nothing"


def test_chalice_deploy_gives_the_idle_check_its_own_policy(chalice_config: dict[str, Any]) -> None:
    for stage, settings in chalice_config["stages"].items():
        own = settings["lambda_functions"][CHALICE_FUNCTIONS[IDLE_CHECK]]
        assert own["iam_policy_file"] == f"policy-idle_check-{stage}.json" != settings["iam_policy_file"]


# --- the scaler ------------------------------------------------------------------------------------


def test_scaler_runs_on_an_eventbridge_schedule_every_minute_with_its_own_role(template: dict[str, Any]) -> None:
    assert SCALE in template["Resources"], "app.py must declare @app.schedule(..., name='scale')"
    properties = template["Resources"][SCALE]["Properties"]
    schedules = [event["Properties"]["Schedule"] for event in properties.get("Events", {}).values()
                 if event["Type"] == "Schedule"]
    assert schedules == [SCALE_SCHEDULE]
    assert properties["Role"] == {"Fn::GetAtt": [SCALE_ROLE, "Arn"]}


def test_scale_role_allows_exactly_what_scaling_does_and_its_logs(template: dict[str, Any]) -> None:
    statements = _role_statements(template, SCALE_ROLE)
    granted = _grants_by_target(statements, template)
    assert granted == SCALE_GRANTS
    bookkeeping = [s for s in statements if "BookkeepingTable" in json.dumps(s["Resource"])]
    assert all("dynamodb:LeadingKeys" in json.dumps(s.get("Condition")) for s in bookkeeping), \
        "the scaler touches only its own kinds of bookkeeping items"
    [model_update] = [s for s in statements if "LlmModelsTable" in json.dumps(s["Resource"])
                      and "dynamodb:UpdateItem" in _actions(s)]
    assert set(model_update["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]) == {
        "name", "id", "deleting", "scaler_lease_until", "scaling_state"}, "never a model's settings or name"


def test_chalice_deploy_gives_the_scaler_its_own_policy(chalice_config: dict[str, Any]) -> None:
    for stage, settings in chalice_config["stages"].items():
        own = settings["lambda_functions"][CHALICE_FUNCTIONS[SCALE]]
        assert own["iam_policy_file"] == f"policy-scale-{stage}.json" != settings["iam_policy_file"]


# A chat flood cannot starve the rest (issue #19)


@pytest.mark.parametrize(("function", "parameter", "default"), [
    ("APIHandler", "ApiReservedConcurrency", 5), ("Provision", "ProvisionReservedConcurrency", 5),
    ("Reconcile", "ScheduledReservedConcurrency", 1), ("IdleCheck", "ScheduledReservedConcurrency", 1),
    ("Scale", "ScheduledReservedConcurrency", 1), ("Chat", "ChatConcurrencyLimit", 0),
])
def test_each_function_reserves_the_concurrency_its_parameter_says_and_0_reserves_none(
        template: dict[str, Any], function: str, parameter: str, default: int) -> None:
    reserved = template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
    condition, when_set, when_zero = reserved["Fn::If"]

    assert template["Parameters"][parameter]["Default"] == default
    assert when_set == {"Ref": parameter} and when_zero == {"Ref": "AWS::NoValue"}
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
