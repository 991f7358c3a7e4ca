"""The packaged stack's operations (issue #13): the alarm topic and its optional e-mail subscription, the
alarms, and the dashboard, checked against the metrics contract (chalicelib/core/metric_names.py).

An embedded-metric-format metric is stored under its exact dimension set: an alarm or a widget that names a
set the code does not emit reads nothing and never fires. So every metric the template reads is compared
with CONTRACT_DIMENSIONS, written from the contract's constants: a metric renamed there breaks these tests
until the template follows. The package is the session's one build (tests/infra/conftest.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chalicelib.core import metric_names as mn
from chalicelib.core.observability import METRICS_NAMESPACE
from tests.infra.conftest import REPO_ROOT, STAGE

pytestmark = pytest.mark.timeout(300)

# Every metric of the contract and the one dimension set it is emitted with (chalicelib/core/metric_names.py).
CONTRACT_DIMENSIONS = {
    mn.CHAT_REQUESTS: {mn.STAGE, mn.OUTCOME},
    mn.CHAT_REQUESTS_BY_MODEL: {mn.STAGE, mn.MODEL, mn.OUTCOME},
    mn.CHAT_REFUSALS: {mn.STAGE, mn.REASON},
    mn.TIME_TO_FIRST_TOKEN: {mn.STAGE, mn.MODEL},
    mn.CHAT_DURATION: {mn.STAGE, mn.MODEL},
    mn.PROMPT_TOKENS: {mn.STAGE, mn.MODEL},
    mn.COMPLETION_TOKENS: {mn.STAGE, mn.MODEL},
    mn.REPLICA_FAILURES: {mn.STAGE},
    mn.FAILOVERS: {mn.STAGE},
    mn.USAGE_ROWS_LOST: {mn.STAGE},
    mn.WORKFLOW_OUTCOMES: {mn.STAGE, mn.WORKFLOW, mn.OUTCOME},
    mn.WORKFLOW_FAILURES: {mn.STAGE},
    mn.VMS_DELETED_BY_BACKSTOP: {mn.STAGE},
    mn.REPLICAS_DESIRED: {mn.STAGE, mn.MODEL},
    mn.REPLICAS_SERVING: {mn.STAGE, mn.MODEL},
    mn.SCALE_OUTS: {mn.STAGE, mn.MODEL},
    mn.SCALE_INS: {mn.STAGE, mn.MODEL},
    mn.MODELS_AT_MAX_REPLICAS: {mn.STAGE},
}
STAGE_REF = {"Ref": "Stage"}
TOPIC = "AlarmTopic"
SUBSCRIPTION = "AlarmEmailSubscription"
EMAIL_PARAMETER = "AlarmEmail"
DASHBOARD = "OperationsDashboard"
FUNCTIONS = ("APIHandler", "Chat", "Provision", "Reconcile", "IdleCheck", "Scale")
CHAT_5XX_RATE = "Chat5xxRateAlarm"
# A 503 by design: the first requests to a hibernated model (chalicelib/chat/waking.py); not in the 5xx rate.
MODEL_WAKING = "model_waking"
# The single-metric alarms on the contract's metrics: (metric, dimensions besides Stage, evaluation periods,
# datapoints to alarm). Each fires on a 5-minute Sum above 0.
METRIC_ALARMS = {
    "NoReplicaReadyAlarm": (mn.CHAT_REFUSALS, {mn.REASON: "no_replica_ready"}, 3, 2),
    "ProvisioningFailuresAlarm": (mn.WORKFLOW_FAILURES, {}, 1, 1),
    "UsageRowsLostAlarm": (mn.USAGE_ROWS_LOST, {}, 1, 1),
    "AtMaxReplicasAlarm": (mn.MODELS_AT_MAX_REPLICAS, {}, 3, 2),
}
THROTTLE_ALARMS = {f"{function}ThrottlesAlarm": function for function in FUNCTIONS}
MIN_REQUESTS_FOR_5XX_RATE = 20
MAX_5XX_PERCENT = 5
PERIOD = 300
# The placeholders the dashboard body may use, and what the tests substitute for them.
REGION = "us-east-1"
SEARCH = re.compile(r"""SEARCH\('\{([^}]*)\} MetricName="([^"]+)" Stage="([^"]*)"', '([^']+)', (\d+)\)""")
OPERATING = "docs/operating.md"


# --- helpers -------------------------------------------------------------------------------------


def _resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r.get("Type") == type_}


def _alarm(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    resource = template["Resources"].get(logical_id)
    assert resource and resource["Type"] == "AWS::CloudWatch::Alarm", f"no alarm {logical_id}"
    return resource["Properties"]


def _dimensions(dimensions: list[dict[str, Any]]) -> dict[str, Any]:
    names = [d["Name"] for d in dimensions]
    assert len(names) == len(set(names)), names
    return {d["Name"]: d["Value"] for d in dimensions}


def _substitute(text: str, template: dict[str, Any]) -> str:
    """Fn::Sub's placeholders: Stage, the region, a resource's name (Ref) or ARN (.Arn); ${!x} is a literal ${x}."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "Stage":
            return STAGE
        if name == "AWS::Region":
            return REGION
        logical_id, _, attribute = name.partition(".")
        assert logical_id in template["Resources"], f"${{{name}}} names no resource"
        return f"arn:{logical_id}" if attribute == "Arn" else f"name-of-{logical_id}"

    resolved = re.sub(r"\$\{(?!!)([^}]+)\}", value, text)
    return resolved.replace("${!", "${")


def _resolve(node: Any, template: dict[str, Any]) -> str:
    if isinstance(node, str):
        return node
    if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
        return _substitute(node["Fn::Sub"], template)
    if set(node) == {"Fn::Join"}:
        delimiter, parts = node["Fn::Join"]
        return delimiter.join(_resolve(part, template) for part in parts)
    raise AssertionError(f"unexpected intrinsic in the dashboard body: {node}")


@pytest.fixture(scope="module")
def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    resource = template["Resources"][DASHBOARD]
    assert resource["Type"] == "AWS::CloudWatch::Dashboard"
    assert resource["Properties"]["DashboardName"] == {"Fn::Sub": "hyperstack-llm-proxy-${Stage}"}
    return json.loads(_resolve(resource["Properties"]["DashboardBody"], template))


def _metric_widgets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [w["properties"] for w in dashboard["widgets"] if w["type"] == "metric"]


def _dashboard_metrics(dashboard: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str]]:
    """Every metric the dashboard reads: (namespace, name, dimensions, statistic); for a SEARCH the dimension
    names of its schema, with the Stage it filters on."""
    found = []
    for widget in _metric_widgets(dashboard):
        for line in widget["metrics"]:
            options = line[-1] if isinstance(line[-1], dict) else {}
            if "expression" in options:
                for schema, name, stage, stat, period in SEARCH.findall(options["expression"]):
                    namespace, *dimensions = schema.split(",")
                    assert int(period) == PERIOD
                    found.append((namespace, name, {d: stage if d == mn.STAGE else "*" for d in dimensions}, stat))
                continue
            parts = line[:-1] if options else line
            assert "." not in parts, f"{widget['title']}: write each metric out whole"
            namespace, name, *pairs = parts
            assert len(pairs) % 2 == 0, line
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)),
                          options.get("stat", widget.get("stat", ""))))
    return found


def _readme_section() -> str:
    """docs/operating.md up to its metrics: the dashboard and the alarms."""
    return (REPO_ROOT / OPERATING).read_text().split("\n## Metrics", 1)[0]


# --- the topic ------------------------------------------------------------------------------------


def test_the_alarm_topic_is_the_one_topic_and_not_on_the_aws_managed_key_alarms_cannot_use(
    template: dict[str, Any],
) -> None:
    topics = _resources_of_type(template, "AWS::SNS::Topic")
    assert list(topics) == [TOPIC]
    # CloudWatch cannot use alias/aws/sns (its key policy cannot be edited): an alarm's publish would fail.
    assert topics[TOPIC]["Properties"].get("KmsMasterKeyId") in (None, "")
    assert template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": TOPIC}


def test_the_alarm_email_is_subscribed_only_when_the_parameter_is_given(template: dict[str, Any]) -> None:
    parameter = template["Parameters"][EMAIL_PARAMETER]
    assert parameter["Type"] == "String" and parameter["Default"] == ""
    subscription = template["Resources"][SUBSCRIPTION]
    assert subscription["Type"] == "AWS::SNS::Subscription"
    condition = template["Conditions"][subscription["Condition"]]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": EMAIL_PARAMETER}, ""]}]}
    assert subscription["Properties"] == {"TopicArn": {"Ref": TOPIC}, "Protocol": "email",
                                          "Endpoint": {"Ref": EMAIL_PARAMETER}}


@pytest.mark.parametrize(("value", "allowed"), [
    ("", True), ("ops@example.com", True), ("on-call+llm@ops.example.org", True),
    ("ops", False), ("ops@example", False), ("a b@example.com", False),
])
def test_the_alarm_email_parameter_takes_an_address_or_nothing(
    template: dict[str, Any], value: str, allowed: bool
) -> None:
    pattern = template["Parameters"][EMAIL_PARAMETER]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is allowed


# --- the alarms -----------------------------------------------------------------------------------


def test_the_alarms_are_the_5xx_rate_no_replica_ready_workflow_failures_lost_usage_rows_max_replicas_and_throttles(
    template: dict[str, Any],
) -> None:
    expected = {CHAT_5XX_RATE} | set(METRIC_ALARMS) | set(THROTTLE_ALARMS)
    assert set(_resources_of_type(template, "AWS::CloudWatch::Alarm")) == expected


def test_every_alarm_notifies_the_topic_on_alarm_and_ok_and_treats_missing_data_as_fine(
    template: dict[str, Any],
) -> None:
    for name, alarm in _resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": TOPIC}], name
        assert properties["OKActions"] == [{"Ref": TOPIC}], name
        assert properties["TreatMissingData"] == "notBreaching", name
        assert properties["ComparisonOperator"] == "GreaterThanThreshold", name
        assert properties["AlarmName"]["Fn::Sub"].startswith("hyperstack-llm-proxy-${Stage}-"), name


def _rate_inputs(alarm: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The 5xx rate's metric queries: id -> (metric, the value of its one dimension besides Stage)."""
    inputs = {}
    for query in alarm["Metrics"]:
        if "MetricStat" not in query:
            continue
        stat, metric = query["MetricStat"], query["MetricStat"]["Metric"]
        assert metric["Namespace"] == METRICS_NAMESPACE
        assert (stat["Stat"], stat["Period"], query["ReturnData"]) == ("Sum", PERIOD, False)
        dimensions = _dimensions(metric["Dimensions"])
        assert set(dimensions) == CONTRACT_DIMENSIONS[metric["MetricName"]]
        assert dimensions.pop(mn.STAGE) == STAGE_REF
        [value] = dimensions.values()
        inputs[query["Id"]] = (metric["MetricName"], value)
    return inputs


def test_the_5xx_rate_alarm_reads_every_outcome_of_chat_requests_and_the_model_waking_refusals(
    template: dict[str, Any],
) -> None:
    alarm = _alarm(template, CHAT_5XX_RATE)
    assert sorted(_rate_inputs(alarm).values()) == sorted(
        [(mn.CHAT_REQUESTS, outcome) for outcome in (mn.OK, mn.CLIENT_ERROR, mn.SERVER_ERROR, mn.CLIENT_CLOSED)]
        + [(mn.CHAT_REFUSALS, MODEL_WAKING)])
    assert [m["Id"] for m in alarm["Metrics"] if m.get("ReturnData")] == ["rate"]
    assert (alarm["Threshold"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (MAX_5XX_PERCENT, 3, 2)


@pytest.mark.parametrize(("counts", "percent"), [
    ({mn.SERVER_ERROR: 1}, 0),  # one error at night: under the minimum, not a page
    ({mn.SERVER_ERROR: 1, mn.OK: MIN_REQUESTS_FOR_5XX_RATE - 2}, 0),
    ({mn.SERVER_ERROR: 2, mn.OK: MIN_REQUESTS_FOR_5XX_RATE - 2}, 10),
    ({mn.SERVER_ERROR: 1, mn.OK: 90, mn.CLIENT_ERROR: 5, mn.CLIENT_CLOSED: 4}, 1),
    ({mn.SERVER_ERROR: 5, mn.CLIENT_ERROR: 15}, 25),  # every outcome counts in the total, absent ones as 0
    ({mn.SERVER_ERROR: 30, MODEL_WAKING: 30, mn.OK: 10}, 0),  # a hibernated model waking up: by design
    ({mn.SERVER_ERROR: 30, MODEL_WAKING: 20, mn.OK: 70}, 10),
])
def test_the_5xx_rate_is_a_percentage_of_all_chat_requests_from_twenty_requests(
    template: dict[str, Any], counts: dict[str, int], percent: float
) -> None:
    alarm = _alarm(template, CHAT_5XX_RATE)
    inputs = _rate_inputs(alarm)
    values: dict[str, float | None] = {query_id: counts.get(value) for query_id, (_, value) in inputs.items()}
    functions = {"FILL": lambda value, default: default if value is None else value,
                 "IF": lambda condition, then, otherwise: then if condition else otherwise}
    for query in alarm["Metrics"]:  # in order: an expression may read the ones before it
        if "Expression" in query:
            values[query["Id"]] = eval(query["Expression"], {"__builtins__": {}}, {**functions, **values})
    assert values["rate"] == pytest.approx(percent)


@pytest.mark.parametrize("logical_id", sorted(METRIC_ALARMS))
def test_each_metric_alarm_reads_its_contract_metric_with_its_exact_dimensions(
    template: dict[str, Any], logical_id: str
) -> None:
    metric, dimensions, evaluation_periods, datapoints = METRIC_ALARMS[logical_id]
    alarm = _alarm(template, logical_id)
    assert (alarm["Namespace"], alarm["MetricName"]) == (METRICS_NAMESPACE, metric)
    read = _dimensions(alarm["Dimensions"])
    assert set(read) == CONTRACT_DIMENSIONS[metric]
    assert read == {mn.STAGE: STAGE_REF, **dimensions}
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", PERIOD, 0)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (evaluation_periods, datapoints)


def test_every_function_of_the_stack_has_a_throttles_alarm(template: dict[str, Any]) -> None:
    functions = set(_resources_of_type(template, "AWS::Serverless::Function"))
    assert functions == set(FUNCTIONS)
    for logical_id, function in THROTTLE_ALARMS.items():
        alarm = _alarm(template, logical_id)
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/Lambda", "Throttles", "Sum")
        assert (alarm["Period"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (PERIOD, 0, 1)
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]


# --- the dashboard --------------------------------------------------------------------------------


def test_the_dashboard_reads_every_contract_metric_and_each_with_its_exact_dimensions(
    dashboard: dict[str, Any],
) -> None:
    ours = [m for m in _dashboard_metrics(dashboard) if m[0] != "AWS/Lambda"]
    for namespace, name, dimensions, _ in ours:
        assert namespace == METRICS_NAMESPACE, (namespace, name)
        assert name in CONTRACT_DIMENSIONS, f"{name} is not a metric of chalicelib/core/metric_names.py"
        assert set(dimensions) == CONTRACT_DIMENSIONS[name], (name, dimensions)
        assert dimensions[mn.STAGE] == STAGE, (name, dimensions)
    assert {name for _, name, _, _ in ours} == set(CONTRACT_DIMENSIONS)


def test_the_dashboard_shows_latency_percentiles_and_tokens_by_model(dashboard: dict[str, Any]) -> None:
    by_model = {(name, stat) for _, name, dimensions, stat in _dashboard_metrics(dashboard) if mn.MODEL in dimensions}
    assert {(mn.TIME_TO_FIRST_TOKEN, "p50"), (mn.TIME_TO_FIRST_TOKEN, "p90"),
            (mn.CHAT_DURATION, "p50"), (mn.CHAT_DURATION, "p90"),
            (mn.PROMPT_TOKENS, "Sum"), (mn.COMPLETION_TOKENS, "Sum"),
            (mn.CHAT_REQUESTS_BY_MODEL, "Sum")} <= by_model


def test_the_dashboard_shows_lambda_errors_and_throttles_of_every_function(dashboard: dict[str, Any]) -> None:
    lambdas = {(name, dimensions["FunctionName"]) for namespace, name, dimensions, _ in _dashboard_metrics(dashboard)
               if namespace == "AWS/Lambda"}
    assert lambdas == {(metric, f"name-of-{function}") for metric in ("Errors", "Throttles") for function in FUNCTIONS}


def test_the_dashboard_shows_every_alarm_and_every_widget_its_stacks_region(
    template: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    shown = [alarm for w in dashboard["widgets"] if w["type"] == "alarm" for alarm in w["properties"]["alarms"]]
    assert sorted(shown) == sorted(f"arn:{a}" for a in _resources_of_type(template, "AWS::CloudWatch::Alarm"))
    assert all(widget["region"] == REGION for widget in _metric_widgets(dashboard))
    url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert url.endswith("#dashboards/dashboard/${" + DASHBOARD + "}")


def test_the_dashboard_body_keeps_cloudwatchs_own_labels_out_of_fn_sub(template: dict[str, Any]) -> None:
    body = json.dumps(template["Resources"][DASHBOARD]["Properties"]["DashboardBody"])
    assert "${PROP(" not in body, "write ${!PROP(...)}: Fn::Sub would take ${PROP(...)} for a parameter"


# --- docs/operating.md ------------------------------------------------------------------------------------


def test_the_operating_page_says_what_each_alarm_means(template: dict[str, Any]) -> None:
    section = _readme_section()
    for name, alarm in _resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        if name in THROTTLE_ALARMS:
            continue
        suffix = alarm["Properties"]["AlarmName"]["Fn::Sub"].removeprefix("hyperstack-llm-proxy-${Stage}-")
        assert f"`{suffix}`" in section, f"{OPERATING}: nothing on {suffix}"
    assert "-throttles`" in section and EMAIL_PARAMETER in section

