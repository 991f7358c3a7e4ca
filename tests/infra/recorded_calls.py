"""What each Lambda function asks of AWS, as IAM sees it: the functions' own code paths run against
moto, and every botocore call they make is written down as an action, a resource ARN and the DynamoDB
condition keys of the request.

    python -m tests.infra.recorded_calls OUT.json

writes {function: [{"action", "resource", "context"}]} as JSON to OUT.json (the functions log to
stdout). tests/infra runs it in a subprocess (importing the project reads and caches settings from the
environment) and checks the calls against the packaged roles. Each scenario walks every path of its
function that reaches AWS, so that a grant no path uses shows up as unused; a path that fails stops the
script rather than go unrecorded.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
STAGE = "dev"
TABLE_PREFIX = f"hyperstack-llm-proxy-{STAGE}"
ADMIN_KEY_PARAMETER = f"/hyperstack-llm-proxy/{STAGE}/admin-api-key"
HYPERSTACK_KEY_PARAMETER = f"/hyperstack-llm-proxy/{STAGE}/hyperstack-api-key"
STATE_MACHINE_NAME = f"hyperstack-llm-proxy-{STAGE}-provisioning"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STATE_MACHINE_NAME}"
HIBERNATE_STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:hyperstack-llm-proxy-{STAGE}-hibernate"
WAKE_STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:hyperstack-llm-proxy-{STAGE}-wake"
SCALE_FUNCTION_NAME = f"hyperstack-llm-proxy-{STAGE}-scale"
ADMIN_KEY = "recorded-admin-key"
USER_KEY = "hsk_recorded-user-key"

# Operations inside TransactWriteItems are authorised as the single-item actions they stand for.
_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem"}

os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
    STAGE=STAGE, TABLE_PREFIX=TABLE_PREFIX, ADMIN_API_KEY_PARAMETER=ADMIN_KEY_PARAMETER,
    HYPERSTACK_API_KEY_PARAMETER=HYPERSTACK_KEY_PARAMETER, PROVISION_STATE_MACHINE_ARN=STATE_MACHINE_ARN,
    HIBERNATE_STATE_MACHINE_ARN=HIBERNATE_STATE_MACHINE_ARN, WAKE_STATE_MACHINE_ARN=WAKE_STATE_MACHINE_ARN,
    SCALE_FUNCTION_NAME=SCALE_FUNCTION_NAME,
)
for variable in ("ADMIN_API_KEY", "HYPERSTACK_API_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "MOCK_LLM"):
    os.environ.pop(variable, None)


class Recorder:
    def __init__(self) -> None:
        self.function: str | None = None
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self._hash_keys: dict[str, str] = {}

    @contextmanager
    def recording(self, function: str) -> Iterator[None]:
        self.function = function
        self.calls.setdefault(function, [])
        try:
            yield
        finally:
            self.function = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Arranging a scenario mid-recording: these calls are not the function's."""
        function, self.function = self.function, None
        try:
            yield
        finally:
            self.function = function

    def observe(self, signing_name: str, operation: str, params: dict[str, Any]) -> None:
        if self.function is None:
            return  # arranging a scenario, not the function's own call
        record = self.calls[self.function].append
        if signing_name == "dynamodb" and operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                for kind, inner in item.items():
                    record(self._dynamodb_call(_TRANSACT_ACTIONS[kind], inner))
        elif signing_name == "dynamodb":
            record(self._dynamodb_call(operation, params))
        elif signing_name == "ssm":
            record({"action": f"ssm:{operation}", "resource": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
                    f"{params['Name']}", "context": {}})
        elif signing_name == "lambda":
            record({"action": "lambda:InvokeFunction", "resource": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
                    f"{params['FunctionName']}", "context": {}})
        elif signing_name == "states":
            arn = params.get("stateMachineArn") or params["executionArn"]
            record({"action": f"states:{operation}", "resource": arn, "context": {}})
        else:
            raise AssertionError(f"{self.function} calls {signing_name}:{operation}, which no scenario expects")

    def _dynamodb_call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        table = params["TableName"]
        resource = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
        if params.get("IndexName"):
            resource += f"/index/{params['IndexName']}"
        context: dict[str, list[str]] = {}
        item = params.get("Key") or params.get("Item")
        if item is not None:
            # The request's attribute names: its key or item, and every name its expressions use
            # (PynamoDB always names attributes through ExpressionAttributeNames placeholders).
            names = set(item) | set(params.get("ExpressionAttributeNames", {}).values())
            context["dynamodb:Attributes"] = sorted(names)
            context["dynamodb:LeadingKeys"] = [_scalar(item[self._hash_key(table)])]
        return {"action": f"dynamodb:{operation}", "resource": resource, "context": context}

    def _hash_key(self, table: str) -> str:
        if not self._hash_keys:
            from chalicelib.store.tables import ALL_TABLES

            self._hash_keys = {model.Meta.table_name: model._hash_keyname for model in ALL_TABLES}
        return self._hash_keys[table]


def _scalar(value: dict[str, Any]) -> str:
    (_, raw), = value.items()
    return str(raw)


RECORDER = Recorder()


def _install_hook() -> None:
    from botocore.client import BaseClient

    original: Callable[..., Any] = BaseClient._make_api_call

    def recorded(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        RECORDER.observe(client.meta.service_model.signing_name, operation, params)
        return original(client, operation, params)

    BaseClient._make_api_call = recorded


def _arrange_aws() -> None:
    import boto3

    from chalicelib.store.bootstrap import ensure_tables

    ensure_tables()
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=ADMIN_KEY_PARAMETER, Type="SecureString", Value=ADMIN_KEY)
    ssm.put_parameter(Name=HYPERSTACK_KEY_PARAMETER, Type="SecureString", Value="recorded-hyperstack-key")
    sfn = boto3.client("stepfunctions", region_name=REGION)
    for arn in (STATE_MACHINE_ARN, HIBERNATE_STATE_MACHINE_ARN, WAKE_STATE_MACHINE_ARN):
        name = arn.rsplit(":", 1)[1]
        sfn.create_state_machine(name=name, definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
                                 roleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}")


# --- the admin API (APIHandler) ----------------------------------------------------------------------

VM_DETAILS = {
    "name": "recorded-replica", "environment_name": "default-CANADA-1", "image_name": "Ubuntu",
    "flavor_name": "n3-RTX-A6000x1", "key_name": "ops-key", "port": 8000, "run_command": "vllm serve m/one",
}


def admin_api() -> None:
    from chalice.test import Client

    from app import app
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.store.tables import Metric, Replica

    with Client(app) as client:
        def call(method: str, path: str, body: Any = None, status: int | None = None, key: str = ADMIN_KEY) -> Any:
            response = getattr(client.http, method)(
                path, body=json.dumps(body) if body is not None else None,
                headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
            expected = response.status_code == status if status else response.status_code < 400
            assert expected, (method, path, response.status_code, response.body)
            return json.loads(response.body) if response.body else None

        with RECORDER.recording("APIHandler"):
            model_id = call("post", "/v1/models", {"name": "m/one"})["id"]
            by_url = call("post", f"/v1/models/{model_id}/replicas",
                          {"endpoint": "http://10.0.0.1:8000/v1", "rate_limit": 5})["replica_id"]
            by_vm = call("post", f"/v1/models/{model_id}/replicas",  # its secrets wait apart, for the create step
                         {"create_vm": True, "vm_creation_details": {**VM_DETAILS, "secrets": {"HF_TOKEN": "hf_x"}}}
                         )["replica_id"]
            with mock.patch("chalicelib.provisioning.workflow.start", side_effect=RuntimeError("refused")):
                # a workflow that does not start: the replica's rows and security rules are taken back
                call("post", f"/v1/models/{model_id}/replicas",
                     {"create_vm": True, "vm_creation_details": VM_DETAILS}, status=503)
            call("put", f"/v1/models/replicas/{by_url}", {"rate_limit": 10})
            call("get", "/v1/models?active=true")
            call("get", "/v1/models/m%2Fone")
            call("get", f"/v1/models/{model_id}/replicas")
            autoscaling = {"min_replicas": 0, "max_replicas": 2, "target_requests_per_minute": 60,
                           "scale_in_after_seconds": 300, "vm_creation_details": {**VM_DETAILS,
                                                                                  "secrets": {"HF_TOKEN": "hf_x"}}}
            call("put", f"/v1/models/{model_id}/autoscaling", autoscaling)  # the template's secrets apart
            call("get", f"/v1/models/{model_id}/autoscaling")
            call("delete", f"/v1/models/{model_id}/autoscaling")  # its secrets and demand counts go
            call("put", f"/v1/models/{model_id}/autoscaling", autoscaling)  # on again: the model's delete takes it
            used = call("post", "/v1/generate_api_key", {"user_id": "alice", "allowed_rpm": 5})
            unused = call("post", "/v1/generate_api_key", {"user_id": "bob", "allowed_rpm": 5})
            # A user's key on the OpenAI model routes: authenticated by reading its item, nothing written.
            call("get", "/v1/models", key=used["api_key"])
            call("get", "/v1/models/m%2Fone", key=used["api_key"])
            call("get", "/v1/usage?group_by=user_id&granularity=hour")  # a Query per day of the current month
            for table in call("get", "/v1/tables")["tables"]:
                call("get", f"/v1/tables/{table}?limit=1")
        Metric(1, api_key_id=used["id"], created=0, model="m/one").save()
        Replica(by_vm).update(actions=[Replica.vm_status.set(statuses.SUCCESS), Replica.vm_id.set(7)])
        with RECORDER.recording("APIHandler"):
            call("post", f"/v1/replicas/{by_vm}/hibernate", status=202)
        Replica(by_vm).update(actions=[Replica.vm_status.set(statuses.HIBERNATED), Replica.hibernated_at.set(0)])
        with RECORDER.recording("APIHandler"):
            call("post", f"/v1/replicas/{by_vm}/wake", status=202)  # the ask (a conditional write), then the start
            call("post", f"/v1/replicas/{by_vm}/wake", status=409)  # asked before: is that wake running?
        Replica(by_vm).update(actions=[Replica.vm_status.set(statuses.FAILED)])
        with RECORDER.recording("APIHandler"):  # one transaction (the row, its secrets), then the start
            call("post", f"/v1/replicas/{by_vm}/retry", {"secrets": {"HF_TOKEN": "hf_y"}}, status=202)
        Replica(by_vm).update(actions=[Replica.vm_status.set(statuses.PENDING), Replica.vm_id.remove(),
                                       Replica.wake_requested_at.remove(), Replica.hibernated_at.remove()])
        with RECORDER.recording("APIHandler"):
            call("post", "/v1/delete_api_key", {"user_id": "alice", "api_key_id": used["id"]})  # disabled
            call("post", "/v1/delete_api_key", {"user_id": "bob", "api_key_id": unused["id"]})  # deleted
            call("delete", f"/v1/replicas/{by_url}")
            call("delete", f"/v1/replicas/{by_vm}")  # its teardown starts
            call("delete", f"/v1/models/{model_id}")


# --- the chat plane (Chat) ---------------------------------------------------------------------------

def chat() -> None:
    from chalicelib.admin.api_keys import hash_key
    from chalicelib.admin.replicas import SUCCESS
    from chalicelib.chat import access, nudge, routing
    from chalicelib.chat.metering import Meter
    from chalicelib.chat.request import parse_chat_request
    from chalicelib.core.errors import ApiError
    from chalicelib.store.tables import ApiKey, Bookkeeping, LlmModel, Metric, Replica, UsageCount

    ApiKey(hash_key(USER_KEY), id=1, user_id="alice", key_prefix="hsk_", last4="9999", allowed_rpm=2,
           created_at=0).save()
    LlmModel("m/one", id=1, created_at=0, autoscaling={"min_replicas": 0}).save()
    Replica(1, model_id=1, endpoint="http://127.0.0.1:9/v1", rate_limit=1, vm_status=SUCCESS, created_at=0).save()
    now = 120.0
    with RECORDER.recording("Chat"):
        caller = access.admit(USER_KEY, "m/one", now)  # opens the key's window
        access.admit(USER_KEY, "m/one", now)  # counts in it
        for refused_key in (USER_KEY, "hsk_unknown"):  # over its limit; no such key
            try:
                access.admit(refused_key, "m/one", now)
            except ApiError:
                pass
            else:
                raise AssertionError(f"{refused_key} was admitted")
        assert not routing.model_exists("m/none")
        target, = routing.targets_for("m/one")
        assert routing.reserve(target, now) and not routing.reserve(target, now)  # the replica's limit is 1
        request = parse_chat_request(json.dumps({"model": "m/one", "messages": [{"role": "user", "content": "Hi"}]})
                                     .encode(), 1 << 20)
        meter = Meter(caller, request, now)
        meter.replica_id = target.replica_id
        meter.write()
        routing.count_demand("m/one", now)  # an autoscaled model's demand, after the answer
        nudge.nudge(1, "m/one", now)  # a capacity refusal's, after the answer: moto has no such function to run
    assert any(c["action"] == "lambda:InvokeFunction" for c in RECORDER.calls["Chat"]), "the scaler was not nudged"
    assert Metric.count() == 1, "the usage row was not written"
    assert Bookkeeping.get("load#1").rl_count == 1, "the demand was not counted"
    assert UsageCount.count() == 1, "the usage row was not counted"
    chat_requests()


WAKING_KEY = "hsk_recorded-waking-key"
# A replica's answer to a chat completion, as vLLM gives it.
REPLICA_ANSWER = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "m/used",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class _ReplicaHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's dispatch name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(REPLICA_ANSWER).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def _replica_server() -> Iterator[str]:
    """A replica's model server on localhost (moto intercepts AWS calls only): its endpoint."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReplicaHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def chat_requests() -> None:
    """Whole requests through both entry points of the chat plane: the Chat function's handler and, as
    `chalice deploy` serves it, the API handler's buffered route (its calls are the chat plane's; the
    tests hold the API handler's policy file to them through CHALICE_DEPLOY_CALLS). Each entry point asks
    a model whose only replica hibernates to wake (503 model_waking), waits for it a moment, and is served
    by a replica that may hibernate (its minute of use is marked after the answer)."""
    from chalice.test import Client

    from app import app, chat
    from chalicelib.admin.api_keys import hash_key
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.store.tables import ApiKey, LlmModel, Replica

    ApiKey(hash_key(WAKING_KEY), id=2, user_id="carol", key_prefix="hsk_", last4="8888", allowed_rpm=60,
           created_at=0).save()

    def function_url(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        path = "/v1/chat/completions"
        result = chat({"version": "2.0", "rawPath": path, "headers": headers, "body": body.decode(),
                       "requestContext": {"http": {"method": "POST", "path": path}}, "isBase64Encoded": False}, None)
        return result["statusCode"], json.loads(result["body"])

    with _replica_server() as endpoint, Client(app) as client:
        def buffered_route(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            response = client.http.post("/v1/chat/completions", body=body, headers=headers)
            return response.status_code, json.loads(response.body)

        for replica_id, send in ((2, function_url), (4, buffered_route)):
            asleep, used = f"m/asleep-{replica_id}", f"m/used-{replica_id}"
            LlmModel(asleep, id=replica_id, created_at=0).save()
            LlmModel(used, id=replica_id + 1, created_at=0).save()
            Replica(replica_id, model_id=replica_id, vm_status=statuses.HIBERNATED, vm_id=replica_id,
                    hibernated_at=0, created_at=0).save()
            Replica(replica_id + 1, model_id=replica_id + 1, vm_status=statuses.SUCCESS, endpoint=endpoint,
                    serving_since=0, hibernate_after_seconds=300, created_at=0).save()
            headers = {"authorization": f"Bearer {WAKING_KEY}", "content-type": "application/json"}
            with RECORDER.recording("Chat"):
                for model, extra, expected in ((asleep, {}, 503), (asleep, {"x-wait-for-model": "0.01"}, 503),
                                               (used, {}, 200)):
                    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}]}).encode()
                    status, answer = send(body, {**headers, **extra})
                    assert status == expected, (model, status, answer)
                    if status == 503:
                        assert answer["error"]["code"] == "model_waking", answer
            assert Replica.get(replica_id).wake_requested_at is not None, "no wake was asked"
            assert Replica.get(replica_id + 1).last_used_minute is not None, "the use was not marked"
    started = [c for c in RECORDER.calls["Chat"] if c["action"] == "states:StartExecution"]
    assert [c["resource"] for c in started] == [WAKE_STATE_MACHINE_ARN] * 2, started


# --- the provisioning workflow's tasks (Provision) ---------------------------------------------------

class FakeHyperstack:
    """Stands in for chalicelib.hyperstack.client.HyperstackClient: one VM, always ready."""

    def __init__(self, api_key: str, **_: Any) -> None:
        assert api_key == "recorded-hyperstack-key", "the Hyperstack key did not come from SSM"

    def _vm(self) -> Any:
        from chalicelib.hyperstack.client import Vm

        return Vm(id=7, name="llm-proxy-replica-1", status="ACTIVE", floating_ip="127.0.0.1", fixed_ip=None)

    def find_vm_by_name(self, name: str) -> Any:
        return None

    def find_vms_by_name(self, name: str) -> list[Any]:
        return [self._vm()]

    def create_vm(self, spec: Any) -> Any:
        return self._vm()

    def get_vm(self, vm_id: int) -> Any:
        return self._vm()

    def delete_vm(self, vm_id: int) -> None:
        return None


def provision() -> None:
    import boto3

    from chalicelib.core import replica_statuses as statuses
    from chalicelib.provisioning import step_helpers, tasks
    from chalicelib.store.tables import LlmModel, Replica, ReplicaSecurityRule

    LlmModel("m/one", id=1, created_at=0).save()
    fields = {**VM_DETAILS, "assign_floating_ip": True}
    # Made by the scaler: its scaling slot goes with its rows.
    Replica(1, model_id=1, vm_status=statuses.PENDING, created_at=0, scale_slot=1, **fields).save()
    ReplicaSecurityRule(1, 1, direction="ingress", protocol="tcp", ethertype="IPv4", remote_ip_prefix="127.0.0.1/32",
                        port_range_min=8000, port_range_max=8000).save()
    started = boto3.client("stepfunctions", region_name=REGION).start_execution(
        stateMachineArn=STATE_MACHINE_ARN, name="replica-1-create")
    Replica(1).update(actions=[Replica.execution_arn.set(started["executionArn"])])
    vm = {"replica_id": 1, "vm_id": 7, "floating_ip": "127.0.0.1", "execution_arn": started["executionArn"]}
    with mock.patch("chalicelib.hyperstack.client.HyperstackClient", FakeHyperstack), \
            mock.patch.object(step_helpers, "health_problem", return_value=None), RECORDER.recording("Provision"):
        for step in ("start_create", "create_vm", "check_vm", "check_model", "mark_ready", "mark_failed",
                     "delete_vm", "mark_delete_failed", "create_ended", "stop_create", "teardown"):
            tasks.handle({"step": step, **vm})
    assert Replica.count() == 0, "the teardown left the replica's row"


class HibernatingHyperstack(FakeHyperstack):
    """The same VM, which Hyperstack hibernates and restores at once (an ACTIVE VM, when read back)."""

    def hibernate_vm(self, vm_id: int, retain_ip: bool = True) -> None:
        return None

    def restore_vm(self, vm_id: int) -> None:
        return None


def hibernate_and_wake() -> None:
    """The provision function's steps of infra/hibernate.asl.json and infra/wake.asl.json, each path once."""
    import boto3
    from aws_lambda_powertools.utilities.parameters import clear_caches

    from chalicelib.core import replica_statuses as statuses
    from chalicelib.hyperstack import configured_client
    from chalicelib.provisioning import step_helpers, tasks
    from chalicelib.store.tables import LlmModel, Replica

    clear_caches()
    configured_client.cache_clear()
    LlmModel("m/one", id=1, created_at=0).save()
    Replica(1, model_id=1, vm_status=statuses.SUCCESS, vm_id=7, created_at=0, serving_since=0,
            hibernate_after_seconds=300, endpoint="https://127.0.0.1:8000/v1", **VM_DETAILS).save()
    execution = HIBERNATE_STATE_MACHINE_ARN.replace(":stateMachine:", ":execution:") + ":replica-1-hibernate-0"
    vm = {"replica_id": 1, "vm_id": 7, "floating_ip": "127.0.0.1", "execution_arn": execution}
    refused = {"Error": "HibernationRefused", "Cause": "Hyperstack refused: this flavor does not support hibernation"}
    never = {"Error": "VmNeverHibernated", "Cause": "The VM did not hibernate."}
    with mock.patch("chalicelib.hyperstack.client.HyperstackClient", HibernatingHyperstack), \
            mock.patch.object(step_helpers, "health_problem", return_value=None), RECORDER.recording("Provision"):
        # A flavor that cannot hibernate; a hibernation that failed with the VM still serving; one that ends
        # HIBERNATED with a wake asked meanwhile (it starts the wake); then the wake, to SUCCESS.
        for step, extra in (("start_hibernate", {}), ("hibernate_vm", {}), ("check_hibernated", {}),
                            ("hibernation_refused", {"error": refused}),
                            ("start_hibernate", {}), ("hibernation_failed", {"error": never}),
                            ("start_hibernate", {}),
                            ("check_drained", {"if_idle": False, "last_used_minute": None, "drain_poll_seconds": 0}),
                            ("ask_wake", {}), ("mark_hibernated", {}),
                            ("start_wake", {}), ("restore_vm", {}), ("check_restored", {}), ("check_awake", {}),
                            ("mark_awake", {})):
            if step == "ask_wake":  # a request asks for the wake while the replica hibernates (not provision's call)
                with RECORDER.paused():
                    Replica(1).update(actions=[Replica.wake_requested_at.set(1_000)])
                continue
            tasks.handle({"step": step, **vm, **extra})
        # A hibernation, then a wake, whose execution ended without finishing (stopped here) leaves the replica
        # HIBERNATING, then WAKING: the next execution's first step takes it over (reading how the last one
        # ended) and carries on; a wake that goes wrong reads the VM again (wake_failed).
        hibernate = ("hibernate", statuses.HIBERNATING, HIBERNATE_STATE_MACHINE_ARN,
                     ("start_hibernate", "check_drained", "hibernate_vm", "check_hibernated", "mark_hibernated"))
        wake = ("wake", statuses.WAKING, WAKE_STATE_MACHINE_ARN,
                ("start_wake", "wake_failed", "restore_vm", "check_restored", "check_awake", "mark_awake"))
        for action, status, machine, steps in (hibernate, wake):
            with RECORDER.paused():
                sfn = boto3.client("stepfunctions", region_name=REGION)
                ended = sfn.start_execution(stateMachineArn=machine, name=f"replica-1-{action}-ended",
                                            input="{}")["executionArn"]
                sfn.stop_execution(executionArn=ended)
                Replica(1).update(actions=[Replica.vm_status.set(status), Replica.moved_by.set(ended)])
            resumed = {**vm, "execution_arn": ended.replace("-ended", "-resumed-0"), "if_idle": False,
                       "last_used_minute": None, "drain_poll_seconds": 0}
            for step in steps:
                tasks.handle({"step": step, **resumed})
    replica = Replica.get(1)
    assert replica.vm_status == statuses.SUCCESS and replica.wake_seconds, replica.attribute_values
    assert replica.hibernate_after_seconds is None, "the refused hibernation left hibernation on"
    started = [c for c in RECORDER.calls["Provision"] if c["action"] == "states:StartExecution"]
    assert [c["resource"] for c in started] == [WAKE_STATE_MACHINE_ARN], started


# --- the reconciler (Reconcile) --------------------------------------------------------------------

class ReconciledHyperstack(FakeHyperstack):
    """One VM of this deployment that no replica owns, long past the grace period."""

    def find_vms_by_prefix(self, prefix: str) -> list[Any]:
        from datetime import UTC, datetime

        from chalicelib.hyperstack.client import Vm

        return [Vm(id=8, name=f"{prefix}2", status="ACTIVE", floating_ip=None, fixed_ip=None,
                   created_at=datetime(2020, 1, 1, tzinfo=UTC))]

    def get_vm(self, vm_id: int) -> Any:
        return None


def reconcile() -> None:
    from aws_lambda_powertools.utilities.parameters import clear_caches

    from chalicelib.core import replica_statuses as statuses
    from chalicelib.hyperstack import configured_client
    from chalicelib.provisioning import reconciler
    from chalicelib.store import deployment
    from chalicelib.store.tables import Replica

    # A fresh function instance: it reads (here: makes) the deployment id and reads the Hyperstack key.
    deployment.forget_cached_id()
    clear_caches()
    configured_client.cache_clear()
    Replica(1, model_id=1, vm_status=statuses.SUCCESS, vm_id=7, created_at=0, endpoint="http://10.0.0.9:8000/v1").save()
    with mock.patch("chalicelib.hyperstack.client.HyperstackClient", ReconciledHyperstack), \
            RECORDER.recording("Reconcile"):
        summary = reconciler.run()
    assert summary.deleted_vms == [8] and summary.failed_replicas == [1], summary


# --- the idle check (IdleCheck) --------------------------------------------------------------------

def idle_check() -> None:
    import boto3

    from chalicelib.core import replica_statuses as statuses
    from chalicelib.provisioning import idle_check as check
    from chalicelib.store.tables import Replica

    # Serving since the epoch, never used, hibernating after 5 minutes: idle. Hibernated, with a wake asked
    # for at the epoch and never started (its asker died): started now. Each execution then fails, and the
    # next check describes it and starts it again (issue #20: no dead ends).
    Replica(1, model_id=1, vm_status=statuses.SUCCESS, vm_id=7, created_at=0, serving_since=0,
            hibernate_after_seconds=300, endpoint="https://10.0.0.9:8000/v1").save()
    Replica(2, model_id=1, vm_status=statuses.HIBERNATED, vm_id=8, created_at=0, wake_requested_at=0,
            hibernated_at=0).save()
    # Creating its VM, left there by a create execution stopped by hand: a new one takes it over.
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stopped = sfn.start_execution(stateMachineArn=STATE_MACHINE_ARN, name="replica-3-create")["executionArn"]
    sfn.stop_execution(executionArn=stopped)
    Replica(3, model_id=1, vm_status=statuses.CREATING_VM, created_at=0, moved_by=stopped).save()
    # Its teardown failed long ago: the check starts another.
    Replica(4, model_id=1, vm_status=statuses.DELETE_FAILED, created_at=0, teardown_started_at=0).save()
    expected = {"hibernating": [1], "waking": [2], "taken_over": [3], "tearing_down": [4]}
    with RECORDER.recording("IdleCheck"):
        assert check.run() == expected
        with RECORDER.paused():  # these executions fail: the next check sees that and starts them again
            sfn = boto3.client("stepfunctions", region_name=REGION)
            for machine in (HIBERNATE_STATE_MACHINE_ARN, WAKE_STATE_MACHINE_ARN, STATE_MACHINE_ARN):
                for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
                    if "-create" not in execution["name"]:
                        sfn.stop_execution(executionArn=execution["executionArn"])
        assert check.run() == expected


# --- the scaler (Scale) ----------------------------------------------------------------------------

def scale() -> None:
    from chalicelib.admin import scaler
    from chalicelib.core import replica_statuses as statuses
    from chalicelib.provisioning.power import REFUSED_REASON
    from chalicelib.store import model_load, template_secrets
    from chalicelib.store.tables import Bookkeeping, LlmModel, Replica

    Bookkeeping("seq#replicas", value=10).save()  # the replicas below were made before
    settings = {"min_replicas": 0, "max_replicas": 4, "target_requests_per_minute": 60, "scale_in_after_seconds": 60,
                "vm_creation_details": {**VM_DETAILS, "assign_floating_ip": True}, "updated_at": 0}
    # Growing: a hibernated replica to wake, a failed create to tear down, and two more to make from the template.
    LlmModel("m/grows", id=1, created_at=0, autoscaling=settings).save()
    template_secrets.item(1, {"HF_TOKEN": "hf_x"}).save()
    Replica(1, model_id=1, vm_status=statuses.HIBERNATED, vm_id=7, hibernated_at=0, created_at=0, scale_slot=1,
            **VM_DETAILS).save()
    Replica(2, model_id=1, vm_status=statuses.FAILED, created_at=0, scale_slot=2, error_message="no boot",
            **VM_DETAILS).save()
    now = 10_000.0
    model_load.count(1, now, requests=180)
    # Shrinking, long below its need: one of its own that cannot hibernate goes, then one hibernates.
    LlmModel("m/shrinks", id=2, created_at=0, autoscaling=settings,
             scaling_state={"below_since": 0, "failures": []}).save()
    Replica(3, model_id=2, vm_status=statuses.SUCCESS, vm_id=8, endpoint="https://10.0.0.3:8000/v1", created_at=1,
            serving_since=0, scale_slot=1, error_message=REFUSED_REASON.format(reason="flavor"), **VM_DETAILS).save()
    Replica(4, model_id=2, vm_status=statuses.SUCCESS, vm_id=9, endpoint="https://10.0.0.4:8000/v1", created_at=0,
            serving_since=0, scale_slot=2, **VM_DETAILS).save()
    with RECORDER.recording("Scale"):
        from chalicelib.provisioning import workflow

        def no_create(action: str, replica_id: int, start: Callable[..., str] = workflow.start) -> str:
            if action == "create":
                raise RuntimeError("refused")
            return start(action, replica_id)

        with mock.patch("chalicelib.provisioning.workflow.start", no_create):
            first = scaler.run(now)  # no create starts: the replica's rows and security rules are taken back
        with RECORDER.paused():
            assert [r.id for r in Replica.scan() if r.model_id == 1 and r.vm_status == statuses.PENDING] == []
        second = scaler.run(now + 60)  # the wake asked already (is it running?), the scale-in named alike
    grew, shrank = first["1"], first["2"]
    assert grew["woken"] == [1] and grew["created"] == [] and grew["deleted"] == [2], grew
    assert len(second["1"]["created"]) == 2 and second["1"]["failures"][0]["replica_id"] == 2, second
    assert shrank["deleted"] == [3] and second["2"]["hibernating"] == [4], (shrank, second)
    assert Replica.get(3).vm_status == statuses.DELETING
    started = {c["resource"].rsplit(":", 1)[1] for c in RECORDER.calls["Scale"]
               if c["action"] == "states:StartExecution"}
    assert started == {"hyperstack-llm-proxy-dev-provisioning", "hyperstack-llm-proxy-dev-wake",
                       "hyperstack-llm-proxy-dev-hibernate"}, started


def main(out: str) -> int:
    from moto import mock_aws

    _install_hook()
    for scenario in (admin_api, chat, provision, hibernate_and_wake, reconcile, idle_check, scale):
        with mock_aws():
            _arrange_aws()
            scenario()
    with open(out, "w") as file:
        json.dump(RECORDER.calls, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
