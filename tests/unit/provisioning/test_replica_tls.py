"""Provisioned replicas are private by construction: a bearer and a certificate of their own, pinned."""

from __future__ import annotations

import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chalicelib.chat import upstream
from chalicelib.chat.routing import Target
from chalicelib.core.errors import UpstreamFailed
from chalicelib.provisioning import step_helpers
from chalicelib.provisioning.cloud_init import FRONT_PORT
from chalicelib.provisioning.errors import HyperstackRetryable
from chalicelib.provisioning.replica_tls import ReplicaCredentials, fingerprint_of, new_credentials
from chalicelib.store import replica_credentials
from chalicelib.store.tables import Replica
from tests.unit.provisioning.test_provisioning_tasks import RETRYABLE, new_replica, row, run
from tests.unit.replica_server import TlsReplicaServer

OTHER = new_credentials("someone-else")


def created(api, model_id: int, hyperstack, **details) -> tuple[int, int]:
    replica_id = new_replica(api, model_id, **details)
    run("start_create", replica_id)
    return replica_id, run("create_vm", replica_id, hyperstack)["vm_id"]


def pem_blocks(script: str, kind: str) -> list[str]:
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    blocks, rest = [], script
    while begin in rest:
        start = rest.index(begin)
        stop = rest.index(end, start) + len(end)
        blocks.append(rest[start:stop] + "\n")
        rest = rest[stop:]
    return blocks


def exported(script: str, name: str) -> str:
    (line,) = [line for line in script.splitlines() if line.startswith(f"export {name}=")]
    return line.split("=", 1)[1]


def booted_credentials(api, model_id: int, hyperstack, port: int) -> tuple[int, int, ReplicaCredentials]:
    """A replica whose VM is ACTIVE on 127.0.0.1, with the credentials its user_data carries."""
    replica_id, vm_id = created(api, model_id, hyperstack, port=port)
    script = hyperstack.specs[-1].user_data
    credentials = ReplicaCredentials(exported(script, "VLLM_API_KEY"), pem_blocks(script, "CERTIFICATE")[0],
                                     pem_blocks(script, "PRIVATE KEY")[0])
    hyperstack.set_vm(vm_id, "ACTIVE", floating_ip="127.0.0.1")
    run("check_vm", replica_id, hyperstack, vm_id=vm_id, polls=0)
    return replica_id, vm_id, credentials


# What the API accepts


def test_provisioned_replica_with_an_api_key_is_refused_and_nothing_is_stored(api, model_id):
    body = {"endpoint": "", "create_vm": True, "api_key": "sk-mine-0123456789abcdef",
            "vm_creation_details": {"name": "vm", "environment_name": "env", "image_name": "img",
                                    "flavor_name": "gpu", "key_name": "key", "port": 8000,
                                    "run_command": "vllm serve org/model", "assign_floating_ip": True}}

    reply = api.post(f"/v1/models/{model_id}/replicas", body)

    assert reply.status == 400 and set(reply.json["errors"]) == {"api_key"}
    assert list(Replica.scan()) == []


def test_api_key_of_a_provisioned_replica_cannot_be_replaced(api, model_id):
    replica_id = new_replica(api, model_id)

    reply = api.put(f"/v1/models/replicas/{replica_id}", {"api_key": "sk-mine-0123456789abcdef", "rate_limit": 9})

    assert reply.status == 400 and set(reply.json["errors"]) == {"api_key"}
    assert (row(replica_id).api_key, row(replica_id).rate_limit) == (None, None)


def test_port_of_the_vms_tls_front_is_refused(api, model_id):
    body = {"endpoint": "", "create_vm": True,
            "vm_creation_details": {"name": "vm", "environment_name": "env", "image_name": "img",
                                    "flavor_name": "gpu", "key_name": "key", "port": FRONT_PORT,
                                    "run_command": "vllm serve org/model", "assign_floating_ip": True}}

    reply = api.post(f"/v1/models/{model_id}/replicas", body)

    assert reply.status == 400 and "vm_creation_details" in reply.json["errors"]


# What the VM gets, what the replica keeps


def test_vm_boots_with_the_certificate_the_replica_pins_its_key_and_bearer(api, model_id, hyperstack):
    replica_id, _ = created(api, model_id, hyperstack)
    script = hyperstack.specs[0].user_data

    (certificate,) = pem_blocks(script, "CERTIFICATE")
    (private_key,) = pem_blocks(script, "PRIVATE KEY")
    assert fingerprint_of(certificate) == row(replica_id).tls_fingerprint
    assert exported(script, "VLLM_API_KEY") == row(replica_id).api_key
    public = serialization.load_pem_private_key(private_key.encode(), None).public_key()
    assert public == x509.load_pem_x509_certificate(certificate.encode()).public_key()


def test_private_key_is_forgotten_once_the_vm_is_recorded(api, model_id, hyperstack):
    replica_id, _ = created(api, model_id, hyperstack)

    assert replica_credentials.read(replica_id) is None
    assert "PRIVATE KEY" not in json.dumps(row(replica_id).attribute_values, default=str)


def test_each_replica_gets_its_own_certificate_and_bearer(api, model_id, hyperstack):
    first, _ = created(api, model_id, hyperstack)
    second, _ = created(api, model_id, hyperstack, port=8001)

    assert row(first).tls_fingerprint != row(second).tls_fingerprint
    assert row(first).api_key != row(second).api_key


def test_create_retried_after_a_lost_answer_pins_the_certificate_of_the_vm_it_adopts(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    hyperstack.create_then_fail = RETRYABLE
    with pytest.raises(HyperstackRetryable):
        run("create_vm", replica_id, hyperstack)

    run("create_vm", replica_id, hyperstack)

    (spec,) = hyperstack.specs
    assert row(replica_id).tls_fingerprint == fingerprint_of(pem_blocks(spec.user_data, "CERTIFICATE")[0])
    assert row(replica_id).api_key == exported(spec.user_data, "VLLM_API_KEY")


def test_create_retried_after_it_recorded_the_vm_keeps_what_it_recorded(api, model_id, hyperstack):
    replica_id, vm_id = created(api, model_id, hyperstack)
    recorded = (row(replica_id).tls_fingerprint, row(replica_id).api_key)

    assert run("create_vm", replica_id, hyperstack) == {"vm_id": vm_id}

    assert (row(replica_id).tls_fingerprint, row(replica_id).api_key) == recorded
    assert len(hyperstack.vms) == 1


def test_teardown_of_a_replica_deleted_mid_create_forgets_its_credentials(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    replica_credentials.keep_first(replica_id, OTHER.api_key, OTHER.certificate_pem, OTHER.private_key_pem)
    assert api.delete(f"/v1/replicas/{replica_id}").status == 204

    run("teardown", replica_id, hyperstack)

    assert replica_credentials.read(replica_id) is None and row(replica_id) is None


def test_compensation_forgets_the_credentials(api, model_id, hyperstack):
    replica_id = new_replica(api, model_id)
    run("start_create", replica_id)
    replica_credentials.keep_first(replica_id, OTHER.api_key, OTHER.certificate_pem, OTHER.private_key_pem)

    run("delete_vm", replica_id, hyperstack)

    assert replica_credentials.read(replica_id) is None


def test_neither_the_private_key_nor_the_bearer_is_logged(api, model_id, hyperstack, log_lines):
    replica_id, _ = created(api, model_id, hyperstack)

    logged = json.dumps(log_lines())
    assert "PRIVATE KEY" not in logged and row(replica_id).api_key not in logged


# The health check and chat requests: TLS with the pinned certificate, the bearer


def test_health_check_reaches_the_replica_over_tls_with_its_bearer(api, model_id, hyperstack):
    with TlsReplicaServer(OTHER) as probe:  # a free port for the VM's
        port = probe.port
    replica_id, vm_id, credentials = booted_credentials(api, model_id, hyperstack, port)
    with TlsReplicaServer(credentials, api_key=credentials.api_key, port=port) as server:
        result = run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)

    assert result["healthy"] is True
    assert server.seen == [("/v1/models", f"Bearer {credentials.api_key}")]


def test_health_check_refuses_a_server_with_another_certificate_before_sending_anything(api, model_id, hyperstack):
    with TlsReplicaServer(OTHER) as impostor:
        replica_id, vm_id, _ = booted_credentials(api, model_id, hyperstack, impostor.port)
        result = run("check_model", replica_id, vm_id=vm_id, floating_ip="127.0.0.1", polls=0)

    assert result["healthy"] is False
    assert impostor.seen == []


def test_health_check_with_a_wrong_bearer_is_not_healthy():
    with TlsReplicaServer(OTHER, api_key=OTHER.api_key) as server:
        url = f"https://127.0.0.1:{server.port}/v1/models"

        assert step_helpers.answers(url, "sk-wrong", OTHER.fingerprint) is False
        assert step_helpers.answers(url, OTHER.api_key, OTHER.fingerprint) is True


def test_health_check_says_the_front_is_not_listening_when_nothing_accepts_the_connection():
    with TlsReplicaServer(OTHER) as probe:  # a port nothing listens on once it is closed
        port = probe.port

    problem = step_helpers.health_problem(f"https://127.0.0.1:{port}/v1/models", OTHER.api_key, OTHER.fingerprint)

    assert problem.startswith(f"nothing accepted a connection on 127.0.0.1:{port}: the VM's TLS front is not listening")


@pytest.mark.parametrize(("status", "says"), [
    (401, "the TLS front on {where} refused the replica's bearer (401)"),
    (502, "the TLS front on {where} answers, the model server behind it does not (502"),
    (500, "the model server behind {where} answered 500"),
])
def test_health_check_says_which_part_of_the_vm_did_not_answer(status, says):
    with TlsReplicaServer(OTHER, answer=status) as server:
        where = f"127.0.0.1:{server.port}"
        problem = step_helpers.health_problem(f"https://{where}/v1/models", OTHER.api_key, OTHER.fingerprint)

    assert problem.startswith(says.format(where=where))


def test_health_check_says_when_the_certificate_is_not_the_replicas():
    with TlsReplicaServer(OTHER) as impostor:
        where = f"127.0.0.1:{impostor.port}"
        pinned = new_credentials("the-replica").fingerprint
        problem = step_helpers.health_problem(f"https://{where}/v1/models", OTHER.api_key, pinned)

    assert problem.startswith(f"{where} answered, but not with the replica's TLS certificate")


def test_chat_reaches_a_pinned_replica_and_skips_an_impostor():
    credentials = new_credentials("replica")
    with TlsReplicaServer(credentials) as replica, TlsReplicaServer(OTHER) as impostor:
        pinned = Target(1, f"https://127.0.0.1:{replica.port}/v1", None, credentials.api_key, credentials.fingerprint)
        spoofed = Target(2, f"https://127.0.0.1:{impostor.port}/v1", None, credentials.api_key,
                         credentials.fingerprint)

        target, response = upstream.send([pinned], b"{}", stream=False, now=time.time())
        upstream.discard(response)
        with pytest.raises(UpstreamFailed):
            upstream.send([spoofed], b"{}", stream=False, now=time.time())

    assert target is pinned and response.status == 200
    assert replica.seen == [("/v1/chat/completions", f"Bearer {credentials.api_key}")]
    assert impostor.seen == []
