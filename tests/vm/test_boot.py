"""A provisioned replica's VM booted for real: the user_data the workflow sends, run by cloud-init under systemd.

The local stack provisions through the fake Hyperstack as in every other test, but each VM is a Debian 12
machine (tests/vm/machine.py) that boots the create call's user_data: a real nginx as the TLS front, real
iptables for the redirect, a real systemd service for the model server (a stand-in for vLLM, since there is
no GPU and no docker here). The proxy's workflow health-checks it and chat reaches it as in AWS: over the
veth, pinned to its certificate, with its bearer. The tests run in order: the last ones hibernate, wake and
delete the one replica they share.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator

import pytest
import requests
import urllib3

from chalicelib.provisioning.cloud_init import FRONT_PORT, LOG, front_bearer
from tests.integration.conftest import LocalStack
from tests.integration.provisioned import delete_replica, wait_for
from tests.vm.conftest import STAND_IN, BootedVms
from tests.vm.machine import Machine
from tests.vm.stand_in_model import HOLD, REQUEST_LOG

PORT = 8000  # vLLM's own default: each VM has an address of its own
MODEL = "vm-test/Stand-In-Instruct"
# First boot, provisioning polls and the health check: well under a minute here; the rest is a cold cache.
pytestmark = pytest.mark.timeout(600)


class Replica:
    def __init__(self, stack: LocalStack, row: dict, machine: Machine, user_data: str) -> None:
        self.stack, self.row, self.machine, self.user_data = stack, row, machine, user_data
        self.bearer = front_bearer(user_data)

    def pool(self) -> urllib3.PoolManager:
        return urllib3.PoolManager(cert_reqs="CERT_NONE", assert_fingerprint=self.row["tls_fingerprint"],
                                   retries=False, timeout=10)

    def url(self, path: str = "") -> str:
        return f"https://{self.machine.address}:{PORT}{path}"

    def requests_seen(self) -> list[dict]:
        """What reached the model server, as it logged it."""
        logged = self.machine.run("cat", REQUEST_LOG).stdout
        return [json.loads(line) for line in logged.splitlines()]


@pytest.fixture(scope="module")
def replica(vm_stack: LocalStack, vm_hyperstack, booted_vms: BootedVms) -> Iterator[Replica]:
    """One provisioned replica, created through the admin API, whose VM booted and reached SUCCESS."""
    model_id = vm_stack.register_model(MODEL)
    details = {"name": "vm-test", "environment_name": "default-CANADA-1", "image_name": "Ubuntu 22.04",
               "flavor_name": "n3-RTX-A6000x1", "key_name": "vm-test-key", "port": PORT,
               "run_command": f"python3 /{STAND_IN} --model {MODEL}"}
    reply = vm_stack.admin.post(vm_stack.url(f"/v1/models/{model_id}/replicas"),
                                json={"endpoint": "", "create_vm": True, "vm_creation_details": details})
    assert reply.status_code == 201, reply.text
    row = wait_for(vm_stack, reply.json()["replica_id"], {"SUCCESS", "FAILED"}, timeout=300)
    assert row["vm_status"] == "SUCCESS", row["error_message"]  # a FAILED replica's VM is deleted, log and all
    yield Replica(vm_stack, row, booted_vms.machines[row["vm_id"]], vm_hyperstack.vms[row["vm_id"]]["user_data"])
    if row["vm_id"] in vm_hyperstack.vms:
        delete_replica(vm_stack, row["id"])


# The first boot


def test_cloud_init_runs_the_user_data_to_its_end_without_an_error(replica):
    status = replica.machine.run("cloud-init", "status", "--long", "--wait")

    assert status.returncode == 0, status.stdout
    assert "status: done" in status.stdout
    assert "llm-replica: done" in replica.machine.run("cat", LOG).stdout


def test_nginx_and_the_model_service_are_active_and_nginx_accepts_its_configuration(replica):
    active = replica.machine.run("systemctl", "is-active", "nginx", "llm-replica")
    checked = replica.machine.run("nginx", "-t")

    assert active.stdout.split() == ["active", "active"]
    assert checked.returncode == 0, checked.stderr


def test_the_replica_port_serves_tls_with_exactly_the_pinned_certificate(replica):
    served = ssl.get_server_certificate((replica.machine.address, PORT), timeout=10)

    assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest() == replica.row["tls_fingerprint"]
    assert replica.row["endpoint"] == f"https://{replica.machine.address}:{PORT}/v1"


def test_chat_through_the_proxy_reaches_the_model_server_behind_the_real_front(replica):
    client = replica.stack.client(replica.stack.new_key()["api_key"])
    messages = [{"role": "user", "content": "Hello, VM"}]

    answer = client.chat.completions.create(model=MODEL, messages=messages)
    streamed = client.chat.completions.create(model=MODEL, messages=messages, stream=True)

    assert answer.choices[0].message.content == "Hello from the VM"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == "Hello from the VM"


@pytest.mark.parametrize("authorization", [None, "Bearer sk-replica-wrong", "upper"],
                         ids=["no-bearer", "wrong-bearer", "bearer-differing-only-in-case"])
def test_the_front_refuses_whoever_lacks_the_exact_bearer_before_the_model_server_sees_it(replica, authorization):
    if authorization == "upper":
        authorization = f"Bearer {replica.bearer.upper()}"
        assert authorization != f"Bearer {replica.bearer}"
    path = f"/v1/models?probe={authorization is None}-{len(authorization or '')}"
    headers = {"Authorization": authorization} if authorization else {}

    with replica.pool() as pool:
        answer = pool.request("GET", replica.url(path), headers=headers)

    assert answer.status == 401
    assert json.loads(answer.data) == {"error": "Unauthorized"}
    assert not [seen for seen in replica.requests_seen() if seen["path"] == path]


def test_clear_text_from_outside_never_reaches_the_model_server(replica):
    inside = replica.machine.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 f"http://127.0.0.1:{PORT}/health?from=inside")

    for port in (PORT, FRONT_PORT):
        try:
            requests.get(f"http://{replica.machine.address}:{port}/health?from=outside", timeout=5)
        except requests.ConnectionError:
            pass  # refused or cut: nothing answered, better still

    # The model server does listen on every address (vLLM's default): only the redirect keeps outsiders off it.
    assert inside.stdout == "200"
    assert [seen["path"] for seen in replica.requests_seen() if seen["path"].startswith("/health?from=")] == [
        "/health?from=inside"]


def test_a_streamed_answer_crosses_the_front_as_it_is_made(replica):
    """The model server sends its first event, then holds the rest until it is released from inside the VM:
    a front (or proxy) that buffered would deliver nothing before the release, and the read would time out."""
    client = replica.stack.client(replica.stack.new_key()["api_key"])
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": HOLD}], stream=True)
    chunks = iter(stream)

    first = next(chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)
    released = replica.machine.run("curl", "-s", "-X", "POST", f"http://127.0.0.1:{PORT}/release")
    rest = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    assert first.choices[0].delta.content == "Hello"
    assert released.returncode == 0
    assert rest == " from the VM"


# A power-off and a boot again: what a hibernation and a wake do to the VM


def test_after_a_hibernation_and_a_wake_it_serves_again_with_its_redirect_set_once(replica, booted_vms):
    stack, replica_id = replica.stack, replica.row["id"]

    assert stack.admin.post(stack.url(f"/v1/replicas/{replica_id}/hibernate")).status_code == 202
    assert wait_for(stack, replica_id, {"HIBERNATED", "FAILED"}, timeout=120)["vm_status"] == "HIBERNATED"
    was_running = replica.machine.running
    assert stack.admin.post(stack.url(f"/v1/replicas/{replica_id}/wake")).status_code == 202
    awake = wait_for(stack, replica_id, {"SUCCESS", "FAILED"}, timeout=180)
    client = stack.client(stack.new_key()["api_key"])
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Awake?"}])
    rules = replica.machine.run("iptables", "-t", "nat", "-S", "PREROUTING").stdout

    assert was_running is False
    assert awake["vm_status"] == "SUCCESS", awake["error_message"]
    assert answer.choices[0].message.content == "Hello from the VM"
    assert rules.count(f"--dport {PORT} -j REDIRECT --to-ports {FRONT_PORT}") == 1
    # user_data runs on the first boot only: the service and its redirect came back by themselves.
    assert replica.machine.run("cat", LOG).stdout.count("llm-replica: writing the replica's TLS material") == 1


def test_deleting_the_replica_leaves_no_vm_and_no_machine(replica, vm_hyperstack, booted_vms):
    delete_replica(replica.stack, replica.row["id"])
    wait_for(replica.stack, replica.row["id"], {None}, timeout=60)

    assert vm_hyperstack.vms == {}
    assert booted_vms.machines == {}
    assert not replica.machine.running


# A step that fails


def test_a_failed_step_stops_the_script_and_shows_in_its_log_and_cloud_inits_status(rootfs, replica):
    """The same user_data on a VM where the front's port is already taken: nginx cannot start."""
    squatter = ("[Unit]\nBefore=cloud-final.service\n[Service]\n"
                f"ExecStart=/usr/bin/python3 -m http.server {FRONT_PORT}\n[Install]\nWantedBy=multi-user.target\n")
    machine = Machine(rootfs, replica.user_data, files={"etc/systemd/system/squatter.service": squatter})
    (machine.root / "etc/systemd/system/multi-user.target.wants/squatter.service").symlink_to(
        "/etc/systemd/system/squatter.service")
    try:
        machine.boot().wait_booted()
        status = machine.run("cloud-init", "status", "--long", "--wait")
        log = machine.run("cat", LOG).stdout
        output = machine.run("cat", "/var/log/cloud-init-output.log").stdout
        service = machine.run("systemctl", "is-enabled", "llm-replica").stdout.strip()
    finally:
        machine.destroy()

    assert status.returncode != 0 and "status: error" in status.stdout
    failed = "llm-replica: FAILED while starting the TLS front (nginx on port 59443): line"
    assert failed in log and "systemctl restart nginx" in log
    assert failed in output  # cloud-init's own output says it too
    assert "llm-replica: installing the model server's service" not in log
    assert service != "enabled"
