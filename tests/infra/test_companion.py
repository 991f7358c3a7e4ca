"""`chalice deploy` and the companion stack give the whole system, and nothing twice (issue #22).

The companion (infra/companion.py) declares what Chalice cannot create, from the definitions the packaged
stack merges. Offline: its template is checked against the packaged one, then `chalice deploy` itself runs
against moto's server and the companion is deployed beside it (leaving out what moto's CloudFormation cannot
model, as test_deploy.py does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from infra import deploy
from infra.companion import CHALICE_FUNCTIONS, companion_template
from tests.infra.conftest import REPO_ROOT, STAGE, offline_aws_env, tool
from tests.infra.test_deploy import references, what_moto_can_model

# What only the packaged stack has: Chalice deploys its own functions, roles, API and schedules; the REST API's
# streaming route to chat exists only there.
PACKAGED_ONLY_TYPES = {"AWS::Serverless::Function", "AWS::Serverless::Api", "AWS::Logs::LogGroup"}
PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::URLSuffix", "AWS::StackName"}
CHALICE_NAMES = {"APIHandler": f"hyperstack-llm-proxy-{STAGE}", "Chat": f"hyperstack-llm-proxy-{STAGE}-chat",
                 "Provision": f"hyperstack-llm-proxy-{STAGE}-provision",
                 "Reconcile": f"hyperstack-llm-proxy-{STAGE}-reconcile",
                 "IdleCheck": f"hyperstack-llm-proxy-{STAGE}-idle_check",
                 "Scale": f"hyperstack-llm-proxy-{STAGE}-scale"}


@pytest.fixture(scope="module")
def companion() -> dict[str, Any]:
    return companion_template(STAGE)


def _types(template: dict[str, Any]) -> dict[str, str]:
    return {name: resource["Type"] for name, resource in template["Resources"].items()}


def test_the_companion_declares_no_function_role_or_schedule_of_chalices(companion) -> None:
    types = _types(companion)
    assert not {"AWS::Lambda::Function", "AWS::Serverless::Function", "AWS::Events::Rule"} & set(types.values())
    roles = [name for name, type_ in types.items() if type_ == "AWS::IAM::Role"]
    assert roles == ["ProvisioningStateMachineRole"]
    assert not any(name.startswith("ChatApiInvoke") for name in types)


def test_the_companion_holds_everything_else_the_packaged_stack_holds(companion, template) -> None:
    packaged = {name for name, type_ in _types(template).items()
                if type_ not in PACKAGED_ONLY_TYPES and not name.startswith("ChatApiInvoke")
                and not name.startswith("RestAPI") and type_ not in ("AWS::IAM::Role", "AWS::Lambda::Permission")}
    kept = set(companion["Resources"])
    assert packaged - kept == set(), "the packaged stack has these, and no stage deployed by Chalice would"
    assert {"ChatUrl", "ChatUrlPublicAccess", "ChatUrlPublicInvoke"} <= kept


def test_every_reference_resolves_and_names_chalices_functions(companion) -> None:
    known = set(companion["Resources"]) | set(companion["Parameters"]) | set(companion.get("Conditions", {}))
    for name, resource in companion["Resources"].items():
        unknown = references(resource) - known - PSEUDO
        assert not unknown, f"{name} refers to {unknown}"
    text = json.dumps(companion)
    for logical_id, name in CHALICE_NAMES.items():
        assert CHALICE_FUNCTIONS[logical_id].replace("${Stage}", STAGE) == name
    assert "function:hyperstack-llm-proxy-${Stage}-provision" in text
    assert json.loads(json.dumps(companion["Resources"]["ChatUrl"]["Properties"]))["InvokeMode"] == "RESPONSE_STREAM"


def test_the_companion_passes_cfn_lint(companion, tmp_path: Path) -> None:
    path = tmp_path / "companion.json"
    path.write_text(json.dumps(companion, indent=1))
    linted = subprocess.run([tool("cfn-lint"), str(path)], capture_output=True, text=True, timeout=240)
    assert linted.returncode == 0, linted.stdout + linted.stderr


# --- chalice deploy, then the companion, in moto ----------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    # moto imports OpenAPI 3 documents with a description only; Chalice's API is Swagger 2.0 without one, so
    # `chalice deploy` stops at the REST API, after the roles, functions and schedules (which it makes first).
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    yield endpoint
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)
    server.stop()


@pytest.fixture(scope="module")
def chalice_deployed(moto_endpoint: str, package_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`chalice deploy --stage dev` against moto, from a copy of the project (so that no .chalice/deployed of
    the developer's is touched), reusing the deployment package `chalice package` built."""
    project = tmp_path_factory.mktemp("chalice") / "project"
    project.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(REPO_ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / ".chalice", project / ".chalice", ignore=shutil.ignore_patterns("deployed"))
    env = offline_aws_env(tmp_path_factory.mktemp("aws"))
    env["AWS_ENDPOINT_URL"] = moto_endpoint
    result = subprocess.run([tool("chalice"), "deploy", "--stage", STAGE], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    # Everything up to the REST API is deployed; moto cannot import Chalice's (Swagger 2.0, no description).
    assert "Creating Rest API" in result.stdout and "ImportRestApi operation" in result.stderr, (
        result.stdout + result.stderr)
    return {"env": env}


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def beside(chalice_deployed, moto_endpoint: str, companion) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in chalice_deployed["env"].items():
            if name.startswith("AWS_"):
                patch.setenv(name, value)
        session = deploy.aws_session()
        modelled, dropped = what_moto_can_model(companion)  # state machines' definitions as moto reads them too
        deploy.ship(session, deploy.this_accounts_bucket(session), STAGE, modelled, {},
                    deploy.companion_stack_name(STAGE))
    return {"dropped": dropped}


def test_chalice_deploy_names_its_functions_as_the_companion_expects(chalice_deployed, moto_endpoint) -> None:
    names = {function["FunctionName"] for function in _client(moto_endpoint, "lambda").list_functions()["Functions"]}
    assert names == set(CHALICE_NAMES.values())


def test_the_workflows_run_on_the_provision_function_chalice_deployed(beside, moto_endpoint) -> None:
    provision = _client(moto_endpoint, "lambda").get_function(
        FunctionName=CHALICE_NAMES["Provision"])["Configuration"]["FunctionArn"]
    machines = _client(moto_endpoint, "stepfunctions").list_state_machines()["stateMachines"]
    assert sorted(machine["name"] for machine in machines) == [
        f"hyperstack-llm-proxy-{STAGE}-{name}" for name in ("hibernate", "provisioning", "wake")]
    for machine in machines:
        definition = json.loads(_client(moto_endpoint, "stepfunctions").describe_state_machine(
            stateMachineArn=machine["stateMachineArn"])["definition"])
        tasks = {state["Resource"] for state in definition["States"].values() if state.get("Type") == "Task"}
        assert tasks == {provision}, machine["name"]


def test_the_tables_exist_beside_chalices_functions(beside, moto_endpoint) -> None:
    tables = _client(moto_endpoint, "dynamodb").list_tables()["TableNames"]
    assert len([name for name in tables if name.startswith(f"hyperstack-llm-proxy-{STAGE}-")]) == 7


def test_each_schedule_exists_once_and_is_chalices(beside, moto_endpoint) -> None:
    events = _client(moto_endpoint, "events")
    schedules = {}
    for rule in events.list_rules()["Rules"]:
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        schedules[rule["Name"]] = (rule["ScheduleExpression"], [target["Arn"].rsplit(":", 1)[1] for target in targets])
    assert schedules == {
        f"hyperstack-llm-proxy-{STAGE}-reconcile-event": ("rate(15 minutes)", [CHALICE_NAMES["Reconcile"]]),
        f"hyperstack-llm-proxy-{STAGE}-idle_check-event": ("rate(1 minute)", [CHALICE_NAMES["IdleCheck"]]),
        f"hyperstack-llm-proxy-{STAGE}-scale-event": ("rate(1 minute)", [CHALICE_NAMES["Scale"]]),
    }


def test_the_functions_chalice_deployed_are_told_the_workflows_names(chalice_deployed, moto_endpoint) -> None:
    lambdas = _client(moto_endpoint, "lambda")
    for logical_id in ("APIHandler", "Chat", "Provision", "IdleCheck", "Scale"):
        variables = lambdas.get_function_configuration(FunctionName=CHALICE_NAMES[logical_id])["Environment"]
        assert variables["Variables"]["WORKFLOW_NAME_PREFIX"] == f"hyperstack-llm-proxy-{STAGE}", logical_id


def test_only_what_moto_cannot_model_was_left_out_of_the_companion(beside) -> None:
    assert beside["dropped"] >= {"ChatUrl", "OperationsDashboard", "AlarmEmailSubscription"}
    assert not {name for name in beside["dropped"] if name.endswith("Table") or name.endswith("StateMachine")}
