"""Only the proxy reaches a provisioned replica: TLS with the certificate made for it, pinned, and its bearer.

The fake Hyperstack serves each VM as a booted one would (infra/local/vm_front.py): its port answers TLS
with the certificate and key found in the VM's user_data, and only requests with its VLLM_API_KEY.
"""

from __future__ import annotations

import hashlib
import ssl

import openai
import pytest
import requests
import urllib3

from infra.local.vm_front import VmFront, credentials_in
from tests.integration.conftest import free_port
from tests.integration.provisioned import create_vm_replica, delete_replica, wait_for

MESSAGES = [{"role": "user", "content": "Hello, private replica"}]
pytestmark = pytest.mark.usefixtures("no_vm_left_unowned")


def served_fingerprint(port: int) -> str:
    certificate = ssl.get_server_certificate(("127.0.0.1", port))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate)).hexdigest()


@pytest.fixture
def serving(provisioning_stack, model_name):
    """A provisioned replica that reached SUCCESS: (its row, its VM's port); deleted afterwards."""
    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    row = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})
    assert row["vm_status"] == "SUCCESS", row["error_message"]
    yield row, int(row["endpoint"].rsplit(":", 1)[1].split("/")[0])
    delete_replica(provisioning_stack, replica_id)
    wait_for(provisioning_stack, replica_id, {None})


def test_provisioned_replica_serves_chat_over_tls_pinned_to_its_own_certificate(provisioning_stack, model_name,
                                                                               serving):
    row, port = serving
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])

    answer = client.chat.completions.create(model=model_name, messages=MESSAGES)
    streamed = list(client.chat.completions.create(model=model_name, messages=MESSAGES, stream=True))

    assert row["endpoint"] == f"https://127.0.0.1:{port}/v1"
    assert row["tls_fingerprint"] == served_fingerprint(port)
    assert answer.choices[0].message.content and streamed


def test_replica_port_refuses_whoever_lacks_the_replicas_bearer(serving):
    row, port = serving
    pool = urllib3.PoolManager(cert_reqs="CERT_NONE", assert_fingerprint=row["tls_fingerprint"], retries=False)

    without = pool.request("GET", f"https://127.0.0.1:{port}/v1/models", timeout=5)
    with_a_user_key = pool.request("GET", f"https://127.0.0.1:{port}/v1/models", timeout=5,
                                   headers={"Authorization": "Bearer hsk_not-the-replicas-key"})

    assert (without.status, with_a_user_key.status) == (401, 401)


def test_replica_port_answers_no_plain_http(serving):
    _, port = serving

    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)


def test_replica_bearer_is_never_shown_to_the_admin(provisioning_stack, cloud, serving):
    row, _ = serving
    bearer = credentials_in(cloud.hyperstack.vms[row["vm_id"]]["user_data"]).api_key

    answers = [provisioning_stack.admin.get(provisioning_stack.url(path)).text
               for path in ("/v1/tables/replicas", f"/v1/models/{row['model_id']}/replicas")]

    assert row["api_key"] == "..." + bearer[-4:]
    assert all(bearer not in answer for answer in answers)


def test_impostor_on_the_vms_address_keeps_the_replica_from_serving(provisioning_stack, cloud, model_name):
    cloud.hyperstack.impostor_certificate = 1

    _, replica_id = create_vm_replica(provisioning_stack, model_name)
    failed = wait_for(provisioning_stack, replica_id, {"SUCCESS", "FAILED"})

    assert failed["vm_status"] == "FAILED"
    assert "answer" in failed["error_message"]


def test_impostor_replacing_a_serving_replica_is_skipped_with_a_502(provisioning_stack, cloud, model_name, serving):
    row, port = serving
    served = cloud.served.served(row["vm_id"])
    served.front.stop()
    impostor = VmFront(served.front.credentials, served.front.backend, port=port, impostor=True).start()
    served.front = impostor  # stopped with the VM
    client = provisioning_stack.client(provisioning_stack.new_key()["api_key"])

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=model_name, messages=MESSAGES)

    assert refused.value.status_code == 502
    assert cloud.replicas[row["vm_id"]].requests_seen == 0



def test_a_secret_given_at_create_reaches_the_vm_and_no_view_or_log_line(provisioning_stack, cloud, model_name):
    secret = "hf_it-secret-4d7c9e"
    model_id = provisioning_stack.register_model(model_name)
    details = {"name": "it-secret", "environment_name": "default-CANADA-1", "image_name": "Ubuntu 22.04",
               "flavor_name": "n3-RTX-A6000x1", "key_name": "it-key", "port": free_port(),
               "run_command": f"vllm serve {model_name}", "secrets": {"HF_TOKEN": secret}}
    reply = provisioning_stack.admin.post(provisioning_stack.url(f"/v1/models/{model_id}/replicas"),
                                          json={"endpoint": "", "create_vm": True, "vm_creation_details": details})
    row = wait_for(provisioning_stack, reply.json()["replica_id"], {"SUCCESS", "FAILED"})

    views = [provisioning_stack.admin.get(provisioning_stack.url(path)).text
             for path in ("/v1/tables/replicas", f"/v1/models/{model_id}/replicas")]
    assert row["vm_status"] == "SUCCESS", row["error_message"]
    assert f"export HF_TOKEN={secret}" in cloud.hyperstack.vms[row["vm_id"]]["user_data"]
    assert row["secrets"] == ["HF_TOKEN"] and all(secret not in view for view in views)
    assert secret not in "".join(provisioning_stack.process.stdout.lines())
    delete_replica(provisioning_stack, row["id"])
    wait_for(provisioning_stack, row["id"], {None})
