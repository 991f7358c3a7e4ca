"""The workflows, run locally: infra/provisioning.asl.json (and hibernate, wake) under moto's Step Functions.

The definition `chalice package` deploys runs unchanged under moto's ASL interpreter in the
embedded emulator (infra/local/emulator.py). Its Task states invoke the provision Lambda; the
emulator answers those invocations with a Python callable (the task code, or a test's fake), so
retries, catches and waits are the real interpreter's, not a second hand-written runner.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from infra.local.emulator import register_function

INFRA = Path(__file__).resolve().parents[2] / "infra"
DEFINITION_PATH = INFRA / "provisioning.asl.json"
# The environment variable naming each workflow's state machine -> its definition, as the stack deploys them.
WORKFLOWS = {"PROVISION_STATE_MACHINE_ARN": "provisioning", "HIBERNATE_STATE_MACHINE_ARN": "hibernate",
             "WAKE_STATE_MACHINE_ARN": "wake"}
FUNCTION_ARN_VARIABLE = "ProvisionFunctionArn"
FUNCTION_NAME = "provision"
STATE_MACHINE_NAME = "provisioning"
MOTO_ACCOUNT = "123456789012"
# Step Functions requires a role; moto checks nothing about it.
LOCAL_ROLE_ARN = f"arn:aws:iam::{MOTO_ACCOUNT}:role/provisioning-local"
FINAL_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _client(emulator_url: str) -> Any:
    return boto3.client("stepfunctions", endpoint_url=emulator_url, region_name=_region())


def definition(function_arn: str, name: str = STATE_MACHINE_NAME) -> dict[str, Any]:
    """A state machine definition with its substitution made, as CloudFormation makes it."""
    text = (INFRA / f"{name}.asl.json").read_text().replace("${" + FUNCTION_ARN_VARIABLE + "}", function_arn)
    return json.loads(text)


def setup_local_workflow(emulator_url: str, task_handler: Callable[[dict[str, Any]], dict[str, Any]],
                         name: str = STATE_MACHINE_NAME) -> str:
    """Create (or update) a workflow's state machine in the in-process emulator; returns its ARN.

    `task_handler(event)` answers every Task state. The emulator must run in this process
    (infra.local.emulator.start_emulator): that is where Lambda invocations are intercepted.
    """
    register_function(FUNCTION_NAME, task_handler)
    function_arn = f"arn:aws:lambda:{_region()}:{MOTO_ACCOUNT}:function:{FUNCTION_NAME}"
    body = json.dumps(definition(function_arn, name))
    client = _client(emulator_url)
    for machine in client.list_state_machines()["stateMachines"]:
        if machine["name"] == name:
            client.update_state_machine(stateMachineArn=machine["stateMachineArn"], definition=body)
            return machine["stateMachineArn"]
    created = client.create_state_machine(name=name, definition=body, roleArn=LOCAL_ROLE_ARN, type="STANDARD")
    return created["stateMachineArn"]


def setup_local_workflows(emulator_url: str, task_handler: Callable[[dict[str, Any]], dict[str, Any]]
                          ) -> dict[str, str]:
    """Every workflow's state machine: environment variable -> ARN (set them for the functions)."""
    return {variable: setup_local_workflow(emulator_url, task_handler, name) for variable, name in WORKFLOWS.items()}


def start_execution(emulator_url: str, state_machine_arn: str, execution_input: dict[str, Any]) -> str:
    """Start an execution (it runs in the emulator's background); returns the execution ARN."""
    started = _client(emulator_url).start_execution(
        stateMachineArn=state_machine_arn, name=f"local-{uuid.uuid4().hex}", input=json.dumps(execution_input)
    )
    return started["executionArn"]


def wait_for_execution(emulator_url: str, execution_arn: str, timeout: float = 60.0) -> dict[str, Any]:
    """DescribeExecution once the execution has ended; TimeoutError if it is still running at `timeout`."""
    client = _client(emulator_url)
    deadline = time.monotonic() + timeout
    while True:
        described = client.describe_execution(executionArn=execution_arn)
        if described["status"] in FINAL_STATUSES:
            return described
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {described['status']} after {timeout} s")
        time.sleep(0.2)


def states_entered(emulator_url: str, execution_arn: str) -> list[str]:
    """The names of the states the execution entered, in order (from its history)."""
    client = _client(emulator_url)
    events = [e for page in client.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
              for e in page["events"]]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
