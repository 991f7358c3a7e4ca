"""`make deploy`'s path, run against moto's CloudFormation (issue #22): infra/deploy.py uploads the package's code
to an artifact bucket, translates the SAM template with aws-sam-translator, deploys it through a change set and
prints the outputs; `make undeploy` deletes the stack and keeps the tables.

moto models most of the stack. What it cannot model is left out, by type, with why (LEFT_OUT), and so is what
refers to those resources; test_package.py checks them in the template instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from infra import deploy
from tests.infra.conftest import REPO_ROOT, STAGE, offline_aws_env, tool

LEFT_OUT = {
    "AWS::CloudWatch::Alarm": "moto's CloudFormation has no model of alarms",
    "AWS::Lambda::Url": "moto's CloudFormation has no model of function URLs",
    "AWS::SNS::Subscription": "moto's CloudFormation has no model of subscriptions",
    "AWS::ApiGateway::Deployment": "moto's CloudFormation does not read a REST API's OpenAPI Body, so it finds "
                                   "no method to deploy (the routes are checked in the template)",
}
STACK = deploy.stack_name(STAGE)


def references(value: Any) -> set[str]:
    """Every logical id `value` names through Ref, Fn::GetAtt, Fn::Sub or DependsOn."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found |= {name.split(".")[0] for name in _substitutions(text)}
                found |= references(inner[1:] if isinstance(inner, list) else [])
            elif key == "DependsOn":
                found |= {inner} if isinstance(inner, str) else set(inner)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def _substitutions(text: str) -> list[str]:
    return re.findall(r"\$\{([^!}][^}]*)\}", text)


def what_moto_can_model(template: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The template without LEFT_OUT's types and whatever refers to them (resources and outputs); the ids left out."""
    resources = dict(template["Resources"])
    dropped = {name for name, resource in resources.items() if resource["Type"] in LEFT_OUT}
    while True:
        more = {name for name, resource in resources.items()
                if name not in dropped and references(resource) & dropped}
        if not more:
            break
        dropped |= more
    kept = {name: as_definition_string(resource) for name, resource in resources.items() if name not in dropped}
    outputs = {name: output for name, output in template.get("Outputs", {}).items()
               if not references(output) & dropped}
    return {**template, "Resources": kept, "Outputs": outputs}, dropped


def as_definition_string(resource: dict[str, Any]) -> dict[str, Any]:
    """A state machine's `Definition` and `DefinitionSubstitutions` as the one `DefinitionString` moto reads:
    the same JSON, with the same values substituted by Fn::Sub, as CloudFormation itself would."""
    properties = resource.get("Properties", {})
    if resource["Type"] != "AWS::StepFunctions::StateMachine" or "Definition" not in properties:
        return resource
    rest = {key: value for key, value in properties.items() if key not in ("Definition", "DefinitionSubstitutions")}
    text = json.dumps(properties["Definition"])
    rest["DefinitionString"] = {"Fn::Sub": [text, properties.get("DefinitionSubstitutions", {})]}
    return {**resource, "Properties": rest}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An AWS of moto's on loopback: the environment that points the SDK at it."""
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    env = offline_aws_env(tmp_path_factory.mktemp("deploy"))
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    # moto's state is one per process, whichever server serves it: start from none, and leave none.
    requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset", timeout=10)
    yield env
    requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset", timeout=10)
    server.stop()


@pytest.fixture(scope="module")
def aws_session(aws: dict[str, str]) -> Iterator[boto3.Session]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws.items():
            if name.startswith("AWS_"):
                patch.setenv(name, value)
        yield deploy.aws_session()


@pytest.fixture(scope="module")
def deployed(aws_session: boto3.Session, package_dir: Path) -> dict[str, Any]:
    template, bucket = deploy.packaged_template(aws_session, package_dir, STAGE)
    modelled, dropped = what_moto_can_model(template)
    outputs = deploy.ship(aws_session, bucket, STAGE, modelled, {"AlarmEmail": "oncall@example.com"})
    return {"template": template, "modelled": modelled, "dropped": dropped, "outputs": outputs, "bucket": bucket}


def _client(session: boto3.Session, service: str) -> Any:
    return session.client(service, region_name=session.region_name)


def _of_type(template: dict[str, Any], type_: str) -> dict[str, Any]:
    return {name: resource for name, resource in template["Resources"].items() if resource["Type"] == type_}


def _physical_ids(session: boto3.Session) -> dict[str, str]:
    resources = _client(session, "cloudformation").describe_stack_resources(StackName=STACK)["StackResources"]
    return {resource["LogicalResourceId"]: resource.get("PhysicalResourceId", "") for resource in resources}


def test_the_translated_template_is_plain_cloudformation_with_the_uploaded_code(deployed, aws_session) -> None:
    template = deployed["template"]
    assert "Transform" not in template
    assert not [r for r in template["Resources"].values() if r["Type"].startswith("AWS::Serverless::")]
    functions = _of_type(template, "AWS::Lambda::Function")
    assert len(functions) == 6  # the API handler, chat, provision and the three scheduled
    code = {(f["Properties"]["Code"]["S3Bucket"], f["Properties"]["Code"]["S3Key"]) for f in functions.values()}
    assert len(code) == 1  # one zip for every function
    bucket, key = code.pop()
    head = _client(aws_session, "s3").head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] > 1_000_000


def test_the_translated_template_passes_cfn_lint_again(deployed, tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(deployed["template"], indent=1))
    linted = subprocess.run([tool("cfn-lint"), str(plain)], capture_output=True, text=True, timeout=240)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_only_what_moto_cannot_model_is_left_out(deployed) -> None:
    dropped_types = {deployed["template"]["Resources"][name]["Type"] for name in deployed["dropped"]}
    # Left out because they refer to those: the dashboard shows the alarms, a stage is of a deployment.
    assert dropped_types - set(LEFT_OUT) == {"AWS::CloudWatch::Dashboard", "AWS::ApiGateway::Stage"}
    assert "ChatUrl" in deployed["dropped"] and "ChatFunctionUrl" not in deployed["modelled"]["Outputs"]


def test_every_modelled_resource_was_created(deployed, aws_session) -> None:
    physical = _physical_ids(aws_session)
    assert set(deployed["modelled"]["Resources"]) <= set(physical)


def test_the_tables_are_the_stages_with_their_keys_and_indexes(deployed, aws_session) -> None:
    dynamodb = _client(aws_session, "dynamodb")
    tables = _of_type(deployed["template"], "AWS::DynamoDB::Table")
    assert len(tables) == 7
    physical = _physical_ids(aws_session)
    for name, resource in tables.items():
        properties = resource["Properties"]
        described = dynamodb.describe_table(TableName=physical[name])["Table"]
        assert physical[name].startswith(f"hyperstack-llm-proxy-{STAGE}-")
        assert described["KeySchema"] == properties["KeySchema"]
        assert ({index["IndexName"] for index in described.get("GlobalSecondaryIndexes", [])}
                == {index["IndexName"] for index in properties.get("GlobalSecondaryIndexes", [])})


def test_each_function_runs_its_handler_on_arm64_with_its_role_and_resolved_environment(deployed, aws_session):
    lambdas, iam = _client(aws_session, "lambda"), _client(aws_session, "iam")
    physical = _physical_ids(aws_session)
    machines = {name: physical[name] for name in _of_type(deployed["template"], "AWS::StepFunctions::StateMachine")}
    for name, resource in _of_type(deployed["template"], "AWS::Lambda::Function").items():
        properties = resource["Properties"]
        configuration = lambdas.get_function(FunctionName=physical[name])["Configuration"]
        assert configuration["Handler"] == properties["Handler"]
        assert configuration["Runtime"] == properties["Runtime"]
        assert properties["Architectures"] == ["arm64"]  # moto's functions are all x86_64: it drops this
        role = configuration["Role"].rsplit("/", 1)[1]
        assert iam.get_role(RoleName=role)["Role"]["Arn"] == configuration["Role"]
        variables = configuration["Environment"]["Variables"]
        assert set(variables) == set(properties["Environment"]["Variables"])
        assert variables["STAGE"] == STAGE and variables["TABLE_PREFIX"] == f"hyperstack-llm-proxy-{STAGE}"
        for variable, machine in (("PROVISION_STATE_MACHINE_ARN", "ProvisioningStateMachine"),
                                  ("HIBERNATE_STATE_MACHINE_ARN", "HibernateStateMachine"),
                                  ("WAKE_STATE_MACHINE_ARN", "WakeStateMachine")):
            if variable in variables:
                assert variables[variable] == machines[machine], f"{name}: {variable}"


def test_each_state_machine_runs_its_definition_on_the_deployed_provision_function(deployed, aws_session) -> None:
    physical = _physical_ids(aws_session)
    provision_arn = _client(aws_session, "lambda").get_function(
        FunctionName=physical["Provision"])["Configuration"]["FunctionArn"]
    stepfunctions = _client(aws_session, "stepfunctions")
    for name, source in (("ProvisioningStateMachine", "provisioning"), ("HibernateStateMachine", "hibernate"),
                         ("WakeStateMachine", "wake")):
        described = stepfunctions.describe_state_machine(stateMachineArn=physical[name])
        definition = json.loads(described["definition"])
        expected = json.loads((REPO_ROOT / "infra" / f"{source}.asl.json").read_text())
        assert definition["States"].keys() == expected["States"].keys()
        resources = {state["Resource"] for state in definition["States"].values() if state.get("Type") == "Task"}
        assert resources == {provision_arn}, name
        assert described["name"] == f"hyperstack-llm-proxy-{STAGE}-{source}"


def test_the_schedules_run_the_reconciler_every_15_minutes_the_idle_check_and_the_scaler_every_minute(
        deployed, aws_session):
    events, physical = _client(aws_session, "events"), _physical_ids(aws_session)
    lambdas = _client(aws_session, "lambda")
    schedules = {}
    for rule in events.list_rules()["Rules"]:
        for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
            schedules[target["Arn"]] = rule["ScheduleExpression"]
    arn = {name: lambdas.get_function(FunctionName=physical[name])["Configuration"]["FunctionArn"]
           for name in ("Reconcile", "IdleCheck", "Scale")}
    assert schedules == {arn["Reconcile"]: "rate(15 minutes)", arn["IdleCheck"]: "rate(1 minute)",
                         arn["Scale"]: "rate(1 minute)"}


def test_the_outputs_deploy_prints_are_the_stacks_api_url_and_chat_url(deployed) -> None:
    # moto's change sets make no outputs, so what is printed is checked in the template.
    outputs = deployed["template"]["Outputs"]
    assert outputs["EndpointURL"]["Value"] == {
        "Fn::Sub": "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/"}
    assert outputs["ChatFunctionUrl"]["Value"] == {"Fn::GetAtt": ["ChatUrl", "FunctionUrl"]}
    assert set(deploy.SHOWN_OUTPUTS) <= set(outputs)


def test_a_second_deploy_of_the_same_package_uploads_nothing_new(deployed, aws_session, package_dir) -> None:
    s3 = _client(aws_session, "s3")
    before = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=deployed["bucket"])["Contents"])
    template, bucket = deploy.packaged_template(aws_session, package_dir, STAGE)
    deploy.ship(aws_session, bucket, STAGE, what_moto_can_model(template)[0], {})
    after = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert bucket == deployed["bucket"] and after == before


def test_the_artifact_bucket_is_private_and_encrypted(deployed, aws_session) -> None:
    s3 = _client(aws_session, "s3")
    block = s3.get_public_access_block(Bucket=deployed["bucket"])["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = s3.get_bucket_encryption(Bucket=deployed["bucket"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def _run(aws: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.deploy", *arguments], cwd=REPO_ROOT, env=aws,
                          capture_output=True, text=True, timeout=120)


def test_a_parameter_that_is_not_name_equals_value_or_is_the_stage_is_refused(aws, package_dir) -> None:
    bad = _run(aws, "deploy", str(package_dir), "--stage", STAGE, "AlarmEmail")
    assert bad.returncode == 1 and "a parameter is Name=Value" in bad.stderr
    stage = _run(aws, "deploy", str(package_dir), "--stage", STAGE, "Stage=prod")
    assert stage.returncode == 1 and "Stage comes from STAGE" in stage.stderr
    usage = _run(aws, "deploy")
    assert usage.returncode == 2 and "make deploy" in usage.stderr


def test_undeploy_deletes_the_stack_keeps_the_tables_and_a_new_deploy_says_what_is_in_its_way(
    deployed, aws, package_dir
) -> None:
    # Last in this module: it takes the stack down.
    gone = _run(aws, "undeploy", "--stage", STAGE)
    assert gone.returncode == 0, gone.stderr
    assert f"{STACK} deleted. Retained, with their data: hyperstack-llm-proxy-{STAGE}-" in gone.stdout
    again = _run(aws, "undeploy", "--stage", STAGE)
    assert again.returncode == 0 and "nothing to delete" in again.stdout

    blocked = _run(aws, "deploy", str(package_dir), "--stage", STAGE)
    assert blocked.returncode == 1
    assert "its tables do" in blocked.stderr and "delete-table" in blocked.stderr
