"""Replica credentials: a write-only `api_key` sent upstream as a bearer, and write-only VM `secrets`."""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

import pytest

from chalicelib.chat import routing
from chalicelib.provisioning.cloud_init import user_data
from chalicelib.provisioning.replica_tls import new_credentials
from chalicelib.store import replica_secrets
from chalicelib.store.tables import Replica
from tests.unit.conftest import VM_DETAILS
from tests.unit.provisioning.test_provisioning_tasks import FakeHyperstack, run

KEY = "sk-replica-0123456789abcdef-wxyz"
CREDENTIALS = new_credentials("test-replica")
SECRET = "hf_s3cr3t-'$(touch /tmp/pwned)' \"quoted\" `ls`"



def stored(replica_id: int) -> Replica:
    return Replica.get(replica_id, consistent_read=True)


def provisioned(api, model_id: int, *, api_key: str | None = None, **details: Any) -> int:
    body: dict[str, Any] = {"endpoint": "", "create_vm": True, "vm_creation_details": {**VM_DETAILS, **details}}
    if api_key is not None:
        body["api_key"] = api_key
    reply = api.post(f"/v1/models/{model_id}/replicas", body)
    assert reply.status == 201, reply.json
    return reply.json["replica_id"]


def vm_script(run_command: str, secrets: dict[str, str] | None = None) -> str:
    return user_data("org/model", 8000, run_command, api_key=CREDENTIALS.api_key,
                     certificate_pem=CREDENTIALS.certificate_pem, private_key_pem=CREDENTIALS.private_key_pem,
                     secrets=secrets)


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


def test_vm_secrets_are_stored_for_the_workflow_apart_from_the_replica_row(api, model_id):
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": SECRET, "_OTHER": ""})

    row = stored(replica_id)
    assert replica_secrets.read(row) == {"HF_TOKEN": SECRET, "_OTHER": ""}
    assert row.secrets is None and row.secret_names == ["HF_TOKEN", "_OTHER"]
    assert SECRET not in json.dumps([item.to_simple_dict() for item in Replica.scan()])


# Never shown back


def test_no_admin_answer_contains_the_api_key_or_the_secrets(api, model_id):
    api.create_replica(model_id, api_key=KEY)
    provisioned(api, model_id, secrets={"HF_TOKEN": SECRET})

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
    script = vm_script("vllm serve org/model", {"HF_TOKEN": SECRET})

    (line,) = [line for line in script.splitlines() if line.startswith("export HF_TOKEN=")]
    assert shlex.split(line) == ["export", f"HF_TOKEN={SECRET}"]
    assert script.index(line) < script.index("exec bash -lc")


def test_exported_secret_reaches_the_run_command_as_it_was_given():
    script = vm_script("printenv HF_TOKEN", {"HF_TOKEN": SECRET})
    exports = "".join(line + "\n" for line in script.splitlines() if line.startswith("export "))

    shown = subprocess.run(["bash", "-c", exports + "printenv HF_TOKEN"], capture_output=True, text=True, check=True)

    assert shown.stdout == SECRET + "\n"


def test_user_data_without_secrets_exports_the_model_cache_the_replicas_key_and_the_port():
    script = vm_script("vllm serve org/model")

    exports = [line for line in script.splitlines() if line.startswith("export ")]
    assert exports == ["export HF_HOME=/var/lib/llm-replica/huggingface",
                       f"export VLLM_API_KEY={CREDENTIALS.api_key}", "export PORT=8000"]


def test_run_command_runs_as_a_service_that_comes_back_after_a_boot(tmp_path):
    script = vm_script("printenv PORT VLLM_API_KEY HF_HOME HF_TOKEN", {"HF_TOKEN": SECRET})
    run_sh = script.split("cat > /etc/llm-replica/run.sh) <<'LLM_REPLICA_EOF'\n", 1)[1].split("LLM_REPLICA_EOF", 1)[0]
    (tmp_path / "run.sh").write_text(run_sh)

    shown = subprocess.run(["bash", str(tmp_path / "run.sh")], capture_output=True, text=True, check=True)

    assert shown.stdout.splitlines() == ["8000", CREDENTIALS.api_key, "/var/lib/llm-replica/huggingface", SECRET]
    assert "systemctl daemon-reload\n" in script and "systemctl enable --now llm-replica.service\n" in script
    assert "Restart=always" in script and "ExecStart=/etc/llm-replica/run.sh" in script
    # iptables rules are lost on a reboot: the unit sets the redirect again before every start, once.
    assert "ExecStartPre=/etc/llm-replica/redirect.sh" in script
    assert 'rule="PREROUTING -p tcp --dport 8000 -j REDIRECT --to-ports 59443"' in script
    assert "iptables -t nat -C $rule 2>/dev/null || iptables -t nat -I $rule" in script


def test_user_data_refuses_a_name_that_is_not_an_environment_variable():
    with pytest.raises(ValueError, match="environment variable"):
        vm_script("vllm serve", {"A=1;rm -rf /;B": "x"})


def test_create_vm_sends_the_secrets_in_the_user_data(api, model_id):
    hyperstack = FakeHyperstack()
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": "hf_abc"})
    run("start_create", replica_id)

    run("create_vm", replica_id, hyperstack)

    (spec,) = hyperstack.specs
    assert "export HF_TOKEN=hf_abc\n" in spec.user_data


def test_the_secrets_are_in_no_item_once_the_vm_is_recorded(api, model_id):
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": SECRET})
    run("start_create", replica_id)

    run("create_vm", replica_id, FakeHyperstack())

    from chalicelib.store.tables import Bookkeeping

    everything = json.dumps([item.to_simple_dict() for table in (Replica, Bookkeeping) for item in table.scan()])
    assert SECRET not in everything
    assert stored(replica_id).secret_names == ["HF_TOKEN"]


def test_a_replica_made_before_the_secrets_moved_still_gets_them_and_then_loses_them(api, model_id):
    replica_id = provisioned(api, model_id)
    Replica(replica_id).update(actions=[Replica.secrets.set({"HF_TOKEN": SECRET})])  # an older row
    hyperstack = FakeHyperstack()
    run("start_create", replica_id)

    run("create_vm", replica_id, hyperstack)

    (spec,) = hyperstack.specs
    assert f"export HF_TOKEN={shlex.quote(SECRET)}\n" in spec.user_data
    assert stored(replica_id).secrets is None


def test_deleting_a_replica_before_its_vm_deletes_its_secrets(api, model_id):
    replica_id = provisioned(api, model_id, secrets={"HF_TOKEN": SECRET})
    assert api.delete(f"/v1/replicas/{replica_id}").status == 204

    run("teardown", replica_id, FakeHyperstack())

    from chalicelib.store.tables import Bookkeeping

    assert SECRET not in json.dumps([item.to_simple_dict() for item in Bookkeeping.scan()])
