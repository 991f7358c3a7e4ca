"""Which state machine a workflow starts on: the ARN configured (the packaged stack), or, under `chalice deploy`,
the one its name says in this account (WORKFLOW_NAME_PREFIX), which may not be deployed yet."""

from collections.abc import Iterator

import boto3
import pytest

from chalicelib.core import step_functions
from chalicelib.core.settings import get_provision_settings, get_settings

UNCONFIGURED = ("PROVISION_STATE_MACHINE_ARN", "HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN")


@pytest.fixture
def named_workflows(aws, monkeypatch) -> Iterator[None]:
    """A deployment that names its state machines (as `chalice deploy`'s config does) and gives no ARN."""
    for name in UNCONFIGURED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKFLOW_NAME_PREFIX", "hyperstack-llm-proxy-dev")
    for cached in (get_settings, get_provision_settings, step_functions._account_and_partition):
        cached.cache_clear()
    yield
    monkeypatch.undo()
    for cached in (get_settings, get_provision_settings, step_functions._account_and_partition):
        cached.cache_clear()


def test_a_configured_arn_is_used_as_given(aws) -> None:
    arn = "arn:aws:states:eu-west-1:111122223333:stateMachine:elsewhere"
    assert step_functions.state_machine_arn(arn, "wake") == arn


def test_without_an_arn_or_a_name_prefix_there_is_no_workflow(aws, monkeypatch) -> None:
    monkeypatch.delenv("WORKFLOW_NAME_PREFIX", raising=False)
    get_settings.cache_clear()
    assert step_functions.state_machine_arn(None, "wake") is None


def test_a_named_workflow_is_the_arn_of_that_name_in_this_account_and_region(named_workflows) -> None:
    assert step_functions.state_machine_arn(None, "hibernate") == (
        "arn:aws:states:us-east-1:123456789012:stateMachine:hyperstack-llm-proxy-dev-hibernate")


def test_starting_a_named_workflow_that_is_not_deployed_is_a_503_naming_it(named_workflows) -> None:
    arn = step_functions.state_machine_arn(None, "wake")
    with pytest.raises(step_functions.WorkflowNotDeployed) as refused:
        step_functions.start_once(arn, "replica-1-wake-1", {})
    assert refused.value.status == 503
    assert "hyperstack-llm-proxy-dev-wake is not deployed" in refused.value.message


def test_a_named_workflow_that_is_deployed_is_started(named_workflows) -> None:
    boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
        name="hyperstack-llm-proxy-dev-wake", definition='{"StartAt": "D", "States": {"D": {"Type": "Succeed"}}}',
        roleArn="arn:aws:iam::123456789012:role/sfn")
    arn = step_functions.state_machine_arn(None, "wake")
    started = step_functions.start_once(arn, "replica-1-wake-1", {})
    assert started.endswith(":execution:hyperstack-llm-proxy-dev-wake:replica-1-wake-1")


def test_create_vm_under_a_deployment_without_its_companion_stack_is_a_503_that_stores_nothing(
    api, named_workflows
) -> None:
    model_id = api.create_model("m/vm")
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "", "create_vm": True, "vm_creation_details": {
        "name": "vm", "environment_name": "default-CANADA-1", "image_name": "Ubuntu Server 22.04 LTS",
        "flavor_name": "n3-RTX-A6000x1", "key_name": "k", "port": 8100, "run_command": "vllm serve m/vm"}})

    assert reply.status == 503
    assert "hyperstack-llm-proxy-dev-provisioning is not deployed" in reply.json["error"]
    assert api.get(f"/v1/models/{model_id}/replicas").json == []
