"""A fake VM's TLS front (infra/local/vm_front.py): what a booted VM's replica port answers, seen over real TLS.

Clients pin the certificate the way the proxy does (chalicelib/core/pinned_tls.py): urllib3 with CERT_NONE and
`assert_fingerprint`.
"""

import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import urllib3

from chalicelib.core.vm_naming import replica_marker
from chalicelib.hyperstack.client import HyperstackClient, VmSpec
from chalicelib.provisioning.cloud_init import user_data
from chalicelib.provisioning.replica_tls import ReplicaCredentials, fingerprint_of, new_credentials
from infra.local.fake_hyperstack import FakeHyperstack
from infra.local.mock_vllm import MockVllm
from infra.local.served_vms import ServedVms, mock_replica_for
from infra.local.vm_front import VmFront, credentials_in
from tests.integration.conftest import free_port

MODEL = "org/Front-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there, front!"}]}


def wait_until(condition, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def vm_user_data(credentials: ReplicaCredentials, port: int = 8000) -> str:
    return user_data(MODEL, port, f"vllm serve {MODEL} --port {port}", api_key=credentials.api_key,
                     certificate_pem=credentials.certificate_pem, private_key_pem=credentials.private_key_pem,
                     secrets={"HF_TOKEN": "hf_secret"})


def pinned_pool(port: int, fingerprint: str) -> urllib3.HTTPSConnectionPool:
    return urllib3.HTTPSConnectionPool("127.0.0.1", port, cert_reqs="CERT_NONE", assert_fingerprint=fingerprint,
                                       retries=False, timeout=5)


def served_fingerprint(port: int) -> str:
    return fingerprint_of(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))


def bearer(credentials: ReplicaCredentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {credentials.api_key}"}


@pytest.fixture(scope="module")
def credentials() -> ReplicaCredentials:
    return new_credentials("it-vm-front")


@pytest.fixture
def replica(credentials) -> Iterator[MockVllm]:
    with MockVllm(model=MODEL, pace_seconds=0.02, api_key=credentials.api_key) as running:
        yield running


@pytest.fixture
def front(credentials, replica) -> Iterator[VmFront]:
    with VmFront(credentials, (replica.loopback_host, replica.port)) as running:
        yield running


@pytest.fixture
def pool(front, credentials) -> Iterator[urllib3.HTTPSConnectionPool]:
    with pinned_pool(front.port, credentials.fingerprint) as pinned:
        yield pinned


# Reading the user_data


def test_the_front_credentials_are_read_from_the_user_data(credentials):
    assert credentials_in(vm_user_data(credentials)) == credentials


@pytest.mark.parametrize("script", [None, "", f"#!/bin/bash\n{replica_marker(8000, MODEL)}\nvllm serve x\n"],
                         ids=["none", "empty", "no-tls-material"])
def test_a_user_data_without_tls_material_asks_for_no_front(script):
    assert credentials_in(script) is None


# The front


def test_the_front_answers_tls_with_exactly_the_user_data_certificate(front, pool, credentials):
    reply = pool.request("GET", "/v1/models", headers=bearer(credentials))

    assert served_fingerprint(front.port) == credentials.fingerprint
    assert reply.status == 200
    assert reply.json()["data"][0]["id"] == MODEL


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-replica-not-this-one"}],
                         ids=["without", "wrong"])
def test_a_request_without_the_bearer_is_refused_and_never_reaches_the_replica(pool, replica, headers):
    reply = pool.request("POST", "/v1/chat/completions", body=json.dumps(CHAT).encode(), headers=headers)

    assert (reply.status, reply.json()) == (401, {"error": "Unauthorized"})
    assert reply.headers["Content-Length"] == str(len(reply.data))
    assert replica.requests_seen == 0


def test_a_chat_request_with_the_bearer_is_relayed(pool, replica, credentials):
    reply = pool.request("POST", "/v1/chat/completions", body=json.dumps(CHAT).encode(),
                         headers={**bearer(credentials), "Content-Type": "application/json"})

    assert reply.status == 200
    assert reply.json()["choices"][0]["message"]["content"]
    assert replica.last_request == CHAT


def test_a_stream_flows_event_by_event(pool, replica, credentials):
    reply = pool.request("POST", "/v1/chat/completions", body=json.dumps({**CHAT, "stream": True}).encode(),
                         headers=bearer(credentials), preload_content=False)
    chunks = reply.read_chunked()

    first = next(chunks)
    still_writing = replica.replies_in_progress
    rest = b"".join(chunks)

    assert first.startswith(b"data: {")
    assert still_writing == 1  # the first event came while the replica was still producing the others
    assert rest.endswith(b"data: [DONE]\n\n")


def test_a_client_hanging_up_closes_the_replica_connection(front, replica, credentials):
    replica.mode = "idle"  # one event, then it holds the connection until the client has gone
    client = open_stream(front.port, credentials)
    assert wait_until(lambda: replica.replies_in_progress == 1)

    client.close()

    assert wait_until(lambda: replica.replies_in_progress == 0)


def test_stop_cuts_open_connections_like_a_vm_going_away(front, replica, credentials):
    replica.mode = "idle"
    client = open_stream(front.port, credentials)

    front.stop()

    assert client.recv(1024) == b""
    assert wait_until(lambda: replica.replies_in_progress == 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", front.port), timeout=1)
    client.close()


def test_a_front_with_nothing_behind_it_answers_502(credentials):
    with VmFront(credentials, ("127.0.0.1", free_port())) as front, \
            pinned_pool(front.port, credentials.fingerprint) as pool:
        reply = pool.request("GET", "/v1/models", headers=bearer(credentials))

    assert reply.status == 502


def open_stream(port: int, credentials: ReplicaCredentials) -> ssl.SSLSocket:
    """A raw TLS connection that asked for a stream and read its first event."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    body = json.dumps({**CHAT, "stream": True}).encode()
    client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: vm\r\n"
                   + f"Authorization: Bearer {credentials.api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                   + body)
    received = b""
    while b"data: " not in received:
        received += client.recv(4096)
    return client


# VMs of the fake Hyperstack, served the way `make run` and the integration `cloud` serve them


@pytest.fixture
def served() -> Iterator[ServedVms]:
    serving = ServedVms(lambda vm: mock_replica_for(vm, pace_seconds=0.0))
    yield serving
    serving.stop_all()


@pytest.fixture
def hyperstack(served) -> Iterator[HyperstackClient]:
    with FakeHyperstack(active_after_seconds=0.05, on_active=served.on_active,
                        on_deleted=served.on_deleted) as fake, \
            HyperstackClient(fake.api_key, host=fake.url, timeout_seconds=2) as client:
        client.fake = fake
        yield client


def create_active_vm(hyperstack: HyperstackClient, script: str) -> int:
    vm = hyperstack.create_vm(VmSpec(name="it-front", environment_name="default-NORWAY-1", image_name="Ubuntu",
                                     flavor_name="n3-L40x1", key_name="key", assign_floating_ip=True,
                                     user_data=script, labels=[], security_rules=[]))
    assert wait_until(lambda: hyperstack.get_vm(vm.id).status == "ACTIVE")
    return vm.id


def test_a_provisioned_vm_is_served_behind_its_front(hyperstack, served):
    made, port = new_credentials("it-vm"), free_port()
    vm_id = create_active_vm(hyperstack, vm_user_data(made, port))

    with pinned_pool(port, made.fingerprint) as pool:
        reply = pool.request("POST", "/v1/chat/completions", body=json.dumps(CHAT).encode(), headers=bearer(made))

    assert reply.status == 200
    assert served.replicas[vm_id].requests_seen == 1
    assert served.replicas[vm_id].port != port  # the mock sits behind the front, the front holds the VM's port


def test_the_impostor_switch_serves_the_next_vm_with_another_certificate(hyperstack):
    hyperstack.fake.impostor_certificate = 1
    impostor, genuine = new_credentials("it-vm-1"), new_credentials("it-vm-2")
    impostor_port, genuine_port = free_port(), free_port()
    create_active_vm(hyperstack, vm_user_data(impostor, impostor_port))
    create_active_vm(hyperstack, vm_user_data(genuine, genuine_port))

    assert served_fingerprint(impostor_port) != impostor.fingerprint
    assert served_fingerprint(genuine_port) == genuine.fingerprint
    with pinned_pool(impostor_port, impostor.fingerprint) as pool, pytest.raises(urllib3.exceptions.SSLError):
        pool.request("GET", "/v1/models", headers=bearer(impostor))


def test_a_vm_whose_user_data_has_no_tls_material_is_served_plain(hyperstack, served):
    port = free_port()
    vm_id = create_active_vm(hyperstack, f"#!/bin/bash\n{replica_marker(port, MODEL)}\nvllm serve {MODEL}\n")

    reply = urllib3.request("GET", f"http://127.0.0.1:{port}/v1/models", retries=False, timeout=5)

    assert reply.status == 200
    assert served.replicas[vm_id].port == port
