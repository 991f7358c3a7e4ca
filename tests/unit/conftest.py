"""Unit fixtures: the Chalice app against DynamoDB emulated in-process by moto."""

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib.core.observability import logger
from chalicelib.core.settings import get_settings
from tests.conftest import TEST_ADMIN_KEY, TEST_HIBERNATE_ARN, TEST_STATE_MACHINE_ARN, TEST_WAKE_ARN


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        from chalicelib.store.bootstrap import ensure_tables

        ensure_tables()
        boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
            name="provision-test", definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
            roleArn="arn:aws:iam::123456789012:role/provision-test")
        yield


class AdminApi:
    """The admin API as a client sees it: method, path, JSON body in; status and JSON out."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = TEST_ADMIN_KEY,
             raw: bytes | str | None = None, headers: dict[str, str] | None = None) -> Any:
        sent = {"content-type": "application/json", **(headers or {})}
        if key is not None:
            sent["authorization"] = f"Bearer {key}"
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        response = getattr(self._client.http, method.lower())(path, headers=sent, body=payload)
        return Reply(response.status_code, response.body, response.headers)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.call("PUT", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)

    # Shortcuts for arranging a test
    def create_model(self, name: str = "meta-llama/Llama-3.1-8B-Instruct") -> int:
        reply = self.post("/v1/models", {"name": name})
        assert reply.status == 201, reply.json
        return reply.json["id"]

    def create_replica(self, model_id: int, endpoint: str = "http://10.0.0.1:8000/v1", **fields: Any) -> int:
        reply = self.post(f"/v1/models/{model_id}/replicas", {"endpoint": endpoint, **fields})
        assert reply.status == 201, reply.json
        return reply.json["replica_id"]

    def create_key(self, user_id: str = "alice", **fields: Any) -> dict[str, Any]:
        reply = self.post("/v1/generate_api_key", {"user_id": user_id, **fields})
        assert reply.status == 200, reply.json
        return reply.json


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@pytest.fixture
def api(aws: None) -> Iterator[AdminApi]:
    from app import app

    with Client(app) as client:
        yield AdminApi(client)
    # Chalice's client sets the stage's environment (.chalice/config.json: STAGE=dev) while it is open:
    # settings read then must not outlive it, or a later test sees another stage depending on the order.
    get_settings.cache_clear()


VM_DETAILS = {
    "name": "llama-replica-1",
    "environment_name": "default-CANADA-1",
    "image_name": "Ubuntu Server 22.04 LTS R535 CUDA 12.2",
    "flavor_name": "n3-RTX-A6000x1",
    "key_name": "ops-key",
    "port": 8000,
    "run_command": "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000",
}


def started_executions(action: str) -> int:
    """How many executions of the provisioning workflow were started with this action."""
    client = boto3.client("stepfunctions", region_name="us-east-1")
    executions = client.list_executions(stateMachineArn=TEST_STATE_MACHINE_ARN)["executions"]
    return sum(1 for execution in executions if json.loads(client.describe_execution(
        executionArn=execution["executionArn"])["input"])["action"] == action)


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The service logger's JSON lines, parsed (modules that need more, such as EMF lines, define their own)."""
    buffer = io.StringIO()
    previous = logger.registered_handler.setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logger.registered_handler.setStream(previous)


@pytest.fixture
def executions(aws) -> list[dict[str, Any]]:
    """The hibernate and wake executions steps and routes start: (state machine, name, input), in order
    (provisioning's create executions are not recorded)."""
    import json

    from chalicelib.core import step_functions

    started: list[dict[str, Any]] = []
    real = step_functions.client()

    class Recording:
        exceptions = real.exceptions

        def start_execution(self, **call: Any) -> dict[str, Any]:
            if call["stateMachineArn"] not in (TEST_HIBERNATE_ARN, TEST_WAKE_ARN):
                return {"executionArn": f"arn:execution:{call['name']}"}
            if any(e["name"] == call["name"] for e in started):
                raise real.exceptions.ExecutionAlreadyExists({"Error": {"Code": "ExecutionAlreadyExists"}},
                                                             "StartExecution")
            started.append({"state_machine": call["stateMachineArn"], "name": call["name"],
                            "input": json.loads(call["input"])})
            return {"executionArn": f"arn:execution:{call['name']}"}

        def describe_execution(self, executionArn: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
            return {"executionArn": executionArn, "status": "RUNNING"}  # every recorded execution still runs

    step_functions.client.cache_clear()
    original = step_functions.client
    step_functions.client = lambda: Recording()  # type: ignore[assignment]
    yield started
    step_functions.client = original  # type: ignore[assignment]


@pytest.fixture
def model_id(api: AdminApi) -> int:
    """A model to give replicas to."""
    return api.create_model()


@pytest.fixture
def hyperstack() -> Any:
    """The workflow steps' Hyperstack: provisioning's in-memory fake, which hibernates and restores too."""
    from tests.unit.provisioning.test_hibernation import HibernatingHyperstack

    return HibernatingHyperstack()
