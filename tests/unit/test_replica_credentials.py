"""Replica credentials: a write-only `api_key` sent upstream as a bearer, and write-only VM `secrets`."""

from __future__ import annotations

import http.server
import json
import shlex
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.chat import routing
from chalicelib.provisioning import tasks
from chalicelib.provisioning.cloud_init import user_data
from chalicelib.store.tables import Replica
from tests.unit.conftest import VM_DETAILS
from tests.unit.test_provisioning_tasks import FakeHyperstack, run

KEY = "sk-replica-0123456789abcdef-wxyz"
SECRET = "hf_s3cr3t-'$(touch /tmp/pwned)' \"quoted\" `ls`"


@pytest.fixture
def model_id(api) -> int:
    return api.create_model()


def stored(replica_id: int) -> Replica:
    return Replica.get(replica_id, consistent_read=True)


def provisioned(api, model_id: int, *, api_key: str | None = None, **details: Any) -> int:
    body: dict[str, Any] = {"endpoint": "", "create_vm": True, "vm_creation_details": {**VM_DETAILS, **details}}
    if api_key is not None:
        body["api_key"] = api_key
    reply = api.post(f"/v1/models/{model_id}/replicas", body)
    assert reply.status == 201, reply.json
    return reply.json["replica_id"]


def every_admin_answer(api, model_id: int) -> str:
    answers = [api.get(f"/v1/models/{model_id}/replicas"), api.get("/v1/models/meta-llama%2FLlama-3.1-8B-Instruct"),
               api.get("/v1/tables/replicas"), api.get("/v1/openapi.json", key=None)]
    assert all(reply.status == 200 for reply in answers)
    return json.dumps([reply.json for reply in answers])


# Accepted, refused


def test_replica_by_url_with_an_api_key_stores_it(api, model_id):
    replica_id = api.create_replica(model_id, api_key=KEY)

    assert stored(replica_id).api_key == KEY


def test_replica_without_an_api_key_stores_none(api, model_id):
    replica_id = api.create_replica(model_id)

    assert stored(replica_id).api_key is None


@pytest.mark.parametrize("api_key", ["", "has space", "line\nbreak", "tab\t", "caf\u00e9", "x" * 1025, 42, ["k"]])
def test_unusable_api_key_is_refused_naming_it(api, model_id, api_key):
    reply = api.post(f"/v1/models/{model_id}/replicas", {"endpoint": "http://10.0.0.9:8000/v1", "api_key": api_key})

    assert reply.status == 400
    assert set(reply.json["errors"]) == {"api_key"}


@pytest.mark.parametrize("secrets", [
    {"1ABC": "x"}, {"HF-TOKEN": "x"}, {"": "x"}, {"A" * 129: "x"}, {"HF_TOKEN": 1}, {"HF_TOKEN": "a\x00b"},
    {"HF_TOKEN": "a\nb"}, {"HF_TOKEN": "x" * 4097}, {f"V{index}": "x" for index in range(33)}, ["HF_TOKEN"],
])
def test_unusable_vm_secrets_are_refused(api, model_id, secrets):
    body = {"endpoint": "", "create_vm": True, "vm_creation_details": {**VM_DETAILS, "secrets": secrets}}

    reply = api.post(f"/v1/models/{model_id}/replicas", body)

    assert reply.status == 400
    assert set(reply.json["errors"]["vm_creation_details"]) == {"secrets"}


def test_vm_secrets_are_stored_for_the_workflow(api, model_id):
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": SECRET, "_OTHER": ""})

    assert stored(replica_id).secrets.as_dict() == {"HF_TOKEN": SECRET, "_OTHER": ""}


# Never shown back


def test_no_admin_answer_contains_the_api_key_or_the_secrets(api, model_id):
    api.create_replica(model_id, api_key=KEY)
    provisioned(api, model_id, api_key=KEY + "-vm", secrets={"HF_TOKEN": SECRET})

    answers = every_admin_answer(api, model_id)

    assert KEY not in answers
    assert "s3cr3t" not in answers


def test_replica_list_shows_the_run_command_but_not_the_secrets(api, model_id):
    provisioned(api, model_id, secrets={"HF_TOKEN": SECRET})

    (replica,) = api.get(f"/v1/models/{model_id}/replicas").json

    assert replica["run_command"] == VM_DETAILS["run_command"]
    assert "secrets" not in replica and "api_key" not in replica


def test_tables_view_masks_the_api_key_like_a_user_key(api, model_id):
    api.create_replica(model_id, api_key=KEY)

    (row,) = api.get("/v1/tables/replicas").json["data"]

    assert row["api_key"] == "...wxyz"


def test_tables_view_shows_no_character_of_a_short_api_key(api, model_id):
    api.create_replica(model_id, api_key="short-key")

    (row,) = api.get("/v1/tables/replicas").json["data"]

    assert row["api_key"] == "..."


def test_tables_view_shows_the_secrets_names_only(api, model_id):
    provisioned(api, model_id, secrets={"HF_TOKEN": SECRET, "A_B": "value"})

    (row,) = api.get("/v1/tables/replicas").json["data"]

    assert row["secrets"] == ["A_B", "HF_TOKEN"]
    assert row["api_key"] is None


def test_replica_target_never_shows_its_api_key_in_a_repr():
    target = routing.Target(1, "http://10.0.0.1:8000/v1", None, KEY)

    assert KEY not in repr(target)


# Set, replace, clear


def test_update_sets_an_api_key_and_leaves_the_rate_limit(api, model_id):
    replica_id = api.create_replica(model_id, rate_limit=10)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"api_key": KEY})

    assert reply.status == 204
    assert (stored(replica_id).api_key, stored(replica_id).rate_limit) == (KEY, 10)


def test_update_replaces_the_api_key(api, model_id):
    replica_id = api.create_replica(model_id, api_key=KEY)

    api.put(f"/v1/models/replicas/{replica_id}", {"api_key": "rotated-key"})

    assert stored(replica_id).api_key == "rotated-key"


def test_update_with_a_null_api_key_clears_it(api, model_id):
    replica_id = api.create_replica(model_id, api_key=KEY)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"api_key": None})

    assert reply.status == 204
    assert stored(replica_id).api_key is None


def test_rate_limit_update_leaves_the_api_key(api, model_id):
    replica_id = api.create_replica(model_id, api_key=KEY)

    api.put(f"/v1/models/replicas/{replica_id}", {"rate_limit": 5})

    assert (stored(replica_id).api_key, stored(replica_id).rate_limit) == (KEY, 5)


def test_bad_api_key_update_changes_nothing(api, model_id):
    replica_id = api.create_replica(model_id, api_key=KEY, rate_limit=10)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"rate_limit": 20, "api_key": "has space"})

    assert reply.status == 400
    assert (stored(replica_id).api_key, stored(replica_id).rate_limit) == (KEY, 10)


# The VM's user_data


def test_user_data_exports_each_secret_quoted_before_the_run_command():
    script = user_data("org/model", 8000, "vllm serve org/model", {"HF_TOKEN": SECRET})

    (line,) = [line for line in script.splitlines() if line.startswith("export HF_TOKEN=")]
    assert shlex.split(line) == ["export", f"HF_TOKEN={SECRET}"]
    assert script.index(line) < script.index("nohup")


def test_exported_secret_reaches_the_run_command_as_it_was_given():
    script = user_data("org/model", 8000, "printenv HF_TOKEN", {"HF_TOKEN": SECRET})
    exports = "".join(line + "\n" for line in script.splitlines() if line.startswith("export "))

    shown = subprocess.run(["bash", "-c", exports + "printenv HF_TOKEN"], capture_output=True, text=True, check=True)

    assert shown.stdout == SECRET + "\n"


def test_user_data_without_secrets_exports_only_the_port():
    script = user_data("org/model", 8000, "vllm serve org/model")

    assert [line for line in script.splitlines() if line.startswith("export ")] == ["export PORT=8000"]


def test_user_data_refuses_a_name_that_is_not_an_environment_variable():
    with pytest.raises(ValueError, match="environment variable"):
        user_data("org/model", 8000, "vllm serve", {"A=1;rm -rf /;B": "x"})


def test_create_vm_sends_the_secrets_in_the_user_data(api, model_id):
    hyperstack = FakeHyperstack()
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": "hf_abc"})
    run("start_create", replica_id)

    run("create_vm", replica_id, hyperstack)

    (spec,) = hyperstack.specs
    assert "export HF_TOKEN=hf_abc\n" in spec.user_data


# The health check


class BearerServer(http.server.BaseHTTPRequestHandler):
    """A model server that wants `Bearer <KEY>` on /v1, as `vllm serve --api-key` does."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's dispatch name
        self.server.seen.append(self.headers.get("Authorization"))
        ok = self.headers.get("Authorization") == f"Bearer {KEY}"
        body = b"{}" if ok else b'{"error": "Unauthorized"}'
        self.send_response(200 if ok else 401)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def bearer_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), BearerServer)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def booting_replica(api, model_id: int, port: int, api_key: str | None) -> tuple[int, int]:
    hyperstack = FakeHyperstack()
    replica_id = provisioned(api, model_id, api_key=api_key, port=port)
    run("start_create", replica_id)
    vm_id = run("create_vm", replica_id, hyperstack)["vm_id"]
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")
    run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)
    return replica_id, vm_id


def test_health_check_sends_the_replicas_bearer(api, model_id, bearer_server):
    replica_id, vm_id = booting_replica(api, model_id, bearer_server.server_port, KEY)

    result = run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)

    assert result["healthy"] is True
    assert bearer_server.seen == [f"Bearer {KEY}"]


def test_health_check_without_the_key_a_replica_demands_is_not_healthy(api, model_id, bearer_server):
    replica_id, vm_id = booting_replica(api, model_id, bearer_server.server_port, None)

    result = run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)

    assert result["healthy"] is False
    assert bearer_server.seen == [None]


def test_health_check_with_a_wrong_key_is_not_healthy(bearer_server):
    url = f"http://127.0.0.1:{bearer_server.server_port}/v1/models"

    assert tasks._answers(url, "wrong") is False  # noqa: SLF001 - the probe itself
