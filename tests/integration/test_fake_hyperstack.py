"""The fake Hyperstack itself: lifecycle, callbacks, failure switches and HTTP shape, seen over real HTTP."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests
import urllib3

from chalicelib.core.vm_naming import replica_marker
from chalicelib.hyperstack.client import HyperstackClient, HyperstackError, VmSpec
from chalicelib.provisioning.cloud_init import user_data
from chalicelib.provisioning.replica_tls import new_credentials
from infra.local.fake_hyperstack import FakeHyperstack
from infra.local.hyperstack_vms import IMPOSTOR_FLAG
from infra.local.served_vms import ServedVms, mock_replica_for
from tests.integration.conftest import ROOT, free_port

MODEL = "Qwen/Qwen2.5-7B-Instruct"
RULE = {"direction": "ingress", "protocol": "tcp", "ethertype": "IPv4", "remote_ip_prefix": "0.0.0.0/0",
        "port_range_min": 8011, "port_range_max": 8011}


def spec(name: str = "llm-proxy-replica-7", port: int = 8011, model: str = MODEL) -> VmSpec:
    return VmSpec(name=name, environment_name="default-NORWAY-1", image_name="Ubuntu Server 22.04 LTS",
                  flavor_name="n3-L40x1", key_name="deploy-key", assign_floating_ip=True,
                  user_data=f"#cloud-config\n{replica_marker(port, model)}\n", labels=[name], security_rules=[RULE])


def wait_until(condition, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def raw(fake: FakeHyperstack, method: str, path: str, key: str | None = "fake-key", **kwargs) -> requests.Response:
    headers = {"api_key": key} if key is not None else {}
    return requests.request(method, fake.url + path, headers=headers, timeout=5, **kwargs)


class Events:
    """What the fake's callbacks reported."""

    def __init__(self) -> None:
        self.active: list[dict] = []
        self.deleted: list[dict] = []
        self.hibernated: list[dict] = []


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def fake(events: Events) -> Iterator[FakeHyperstack]:
    with FakeHyperstack(active_after_seconds=0.2, on_active=events.active.append, on_deleted=events.deleted.append,
                        on_hibernated=events.hibernated.append, hibernate_after_seconds=0.2,
                        restore_after_seconds=0.2) as running:
        yield running


@pytest.fixture
def client(fake: FakeHyperstack) -> Iterator[HyperstackClient]:
    with HyperstackClient(fake.api_key, host=fake.url, timeout_seconds=2) as hyperstack:
        yield hyperstack


def test_url_is_the_sdk_host_shape_ending_in_v1(fake):
    assert fake.url == f"http://127.0.0.1:{fake.port}/v1"


def test_a_vm_turns_active_after_the_delay_and_on_active_gets_its_port_and_model(client, fake, events):
    vm = client.create_vm(spec(port=8011))
    assert fake.vms[vm.id]["status"] == "CREATING"

    assert wait_until(lambda: fake.vms[vm.id]["status"] == "ACTIVE")

    (announced,) = events.active
    assert (announced["id"], announced["port"], announced["model"]) == (vm.id, 8011, MODEL)
    assert (announced["status"], announced["floating_ip"]) == ("ACTIVE", "127.0.0.1")


def test_on_active_runs_once_even_when_many_poll_at_once(client, fake, events):
    vm = client.create_vm(spec())
    time.sleep(0.25)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: raw(fake, "GET", f"/core/virtual-machines/{vm.id}"), range(16)))

    assert [announced["id"] for announced in events.active] == [vm.id]


def test_a_poller_sees_active_only_after_on_active_returned():
    seen_during_callback = []
    with FakeHyperstack(active_after_seconds=0.05) as fake:
        fake.on_active = lambda vm: seen_during_callback.append(
            raw(fake, "GET", f"/core/virtual-machines/{vm['id']}").json()["instance"]["status"])
        with HyperstackClient(fake.api_key, host=fake.url) as client:
            vm = client.create_vm(spec())
            time.sleep(0.1)

            after = client.get_vm(vm.id)

    assert seen_during_callback == ["CREATING"]
    assert after.status == "ACTIVE"


def test_vm_goes_to_error_switch_makes_new_vms_fail(client, fake, events):
    fake.vm_goes_to_error = True
    vm = client.create_vm(spec())

    assert wait_until(lambda: client.get_vm(vm.id).status == "ERROR")
    assert events.active == []
    assert client.get_vm(vm.id).floating_ip is None


def test_never_active_switch_keeps_new_vms_creating(client, fake):
    fake.never_active = True
    vm = client.create_vm(spec())
    time.sleep(0.3)

    assert client.get_vm(vm.id).status == "CREATING"


def test_deleting_removes_the_vm_and_calls_on_deleted(client, fake, events):
    vm = client.create_vm(spec())

    client.delete_vm(vm.id)

    assert fake.live_vm_names() == []
    assert [deleted["id"] for deleted in events.deleted] == [vm.id]
    assert events.deleted[0]["port"] == 8011


def test_fail_all_deletes_keeps_every_vm(client, fake):
    vm = client.create_vm(spec())
    fake.fail_all_deletes = True

    for _ in range(3):
        with pytest.raises(HyperstackError):
            client.delete_vm(vm.id)

    assert fake.live_vm_names() == ["llm-proxy-replica-7"]


def test_a_second_create_with_the_same_name_makes_a_second_vm(client, fake):
    client.create_vm(spec())
    client.create_vm(spec())

    assert fake.live_vm_names() == ["llm-proxy-replica-7", "llm-proxy-replica-7"]


def test_impostor_certificate_switch_flags_the_next_vms_to_turn_active(client, fake, events):
    fake.impostor_certificate = 1
    first, second = client.create_vm(spec()), client.create_vm(spec())

    assert wait_until(lambda: all(vm["status"] == "ACTIVE" for vm in fake.vms.values()))

    flagged = {announced["id"]: announced.get(IMPOSTOR_FLAG, False) for announced in events.active}
    assert flagged == {first.id: True, second.id: False}
    assert fake.impostor_certificate == 0
    assert IMPOSTOR_FLAG not in fake.vms[first.id]  # only on_active is told; the API shows nothing


# Hibernation

def active_vm(client: HyperstackClient, fake: FakeHyperstack, vm_spec: VmSpec | None = None) -> int:
    vm = client.create_vm(vm_spec or spec())
    assert wait_until(lambda: fake.vms[vm.id]["status"] == "ACTIVE")
    return vm.id


def hibernated_vm(client: HyperstackClient, fake: FakeHyperstack, retain_ip: bool = True) -> int:
    vm_id = active_vm(client, fake)
    client.hibernate_vm(vm_id, retain_ip=retain_ip)
    assert wait_until(lambda: fake.vms[vm_id]["status"] == "HIBERNATED")
    return vm_id


def statuses_seen(fake: FakeHyperstack, vm_id: int, until: str) -> list[str]:
    """The VM's statuses as a poller sees them until `until`, repeats dropped."""
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while (not seen or seen[-1] != until) and time.monotonic() < deadline:
        status = fake.vms[vm_id]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.01)
    return seen


def test_hibernate_answers_hyperstacks_response_model(client, fake):
    vm_id = active_vm(client, fake)

    reply = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate", params={"retain_ip": "true"})

    assert reply.status_code == 200
    assert reply.json() == {"status": True, "message": f"Virtual machine {vm_id} is being hibernated"}


def test_hibernating_goes_through_hibernating_to_hibernated_and_calls_on_hibernated(client, fake, events):
    vm_id = active_vm(client, fake)

    client.hibernate_vm(vm_id)

    assert statuses_seen(fake, vm_id, "HIBERNATED") == ["HIBERNATING", "HIBERNATED"]
    assert [(vm["id"], vm["status"], vm["port"]) for vm in events.hibernated] == [(vm_id, "HIBERNATED", 8011)]


def test_restoring_goes_through_restoring_to_active_and_calls_on_active_again(client, fake, events):
    vm_id = hibernated_vm(client, fake)

    client.restore_vm(vm_id)

    assert statuses_seen(fake, vm_id, "ACTIVE") == ["RESTORING", "ACTIVE"]
    assert [vm["id"] for vm in events.active] == [vm_id, vm_id]
    assert fake.restore_calls == [vm_id]


def test_a_poller_sees_hibernated_only_after_on_hibernated_returned(client, fake):
    seen_during_callback = []
    fake.on_hibernated = lambda vm: seen_during_callback.append(
        raw(fake, "GET", f"/core/virtual-machines/{vm['id']}").json()["instance"]["status"])
    vm_id = hibernated_vm(client, fake)

    assert seen_during_callback == ["HIBERNATING"]
    assert fake.vms[vm_id]["status"] == "HIBERNATED"


def test_a_vm_hibernated_with_retain_ip_keeps_its_floating_ip_throughout(client, fake):
    vm_id = hibernated_vm(client, fake, retain_ip=True)

    assert client.get_vm(vm_id).floating_ip == "127.0.0.1"
    assert raw(fake, "GET", f"/core/virtual-machines/{vm_id}").json()["instance"]["floating_ip_status"] == "ATTACHED"


def test_a_vm_hibernated_without_retain_ip_loses_its_floating_ip_and_gets_one_on_restore(client, fake):
    vm_id = hibernated_vm(client, fake, retain_ip=False)
    while_hibernated = client.get_vm(vm_id).floating_ip

    client.restore_vm(vm_id)
    assert wait_until(lambda: fake.vms[vm_id]["status"] == "ACTIVE")

    assert while_hibernated is None
    assert client.get_vm(vm_id).floating_ip == "127.0.0.1"


def test_hibernate_without_retain_ip_in_the_query_lets_the_ip_go(client, fake):
    vm_id = active_vm(client, fake)

    assert raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate").status_code == 200
    assert wait_until(lambda: fake.vms[vm_id]["status"] == "HIBERNATED")
    assert fake.vms[vm_id]["floating_ip"] is None


def test_a_flavor_without_hibernation_is_refused_with_400_and_stays_active(client, fake, events):
    fake.flavors_without_hibernation = {"n3-L40x1"}
    vm_id = active_vm(client, fake)

    reply = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate", params={"retain_ip": "true"})

    assert reply.status_code == 400
    assert reply.json() == {"status": False, "message": "Hibernation is not supported for flavor n3-L40x1",
                            "error_reason": "bad_request"}
    assert fake.vms[vm_id]["status"] == "ACTIVE"
    assert events.hibernated == []


@pytest.mark.parametrize(("action", "status"), [("hibernate", "CREATING"), ("hibernate-restore", "CREATING"),
                                                ("hibernate-restore", "ACTIVE")])
def test_a_vm_in_the_wrong_state_is_refused_with_400_bad_request(client, fake, action, status):
    vm_id = client.create_vm(spec()).id if status == "CREATING" else active_vm(client, fake)

    reply = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/{action}")

    assert reply.status_code == 400
    assert reply.json()["error_reason"] == "bad_request"
    assert status in reply.json()["message"]


def test_restoring_a_vm_still_hibernating_is_refused(client, fake):
    vm_id = active_vm(client, fake)
    fake.hibernate_after_seconds = 5
    client.hibernate_vm(vm_id)

    reply = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate-restore")

    assert (reply.status_code, fake.vms[vm_id]["status"]) == (400, "HIBERNATING")


@pytest.mark.parametrize("action", ["hibernate", "hibernate-restore"])
def test_hibernating_or_restoring_an_unknown_vm_answers_404(fake, action):
    reply = raw(fake, "GET", f"/core/virtual-machines/424242/{action}")

    assert reply.status_code == 404
    assert reply.json()["status"] is False


def test_a_bad_retain_ip_answers_400(client, fake):
    vm_id = active_vm(client, fake)

    reply = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate", params={"retain_ip": "maybe"})

    assert (reply.status_code, fake.vms[vm_id]["status"]) == (400, "ACTIVE")


def test_fail_next_hibernates_answers_500_once_without_hibernating(client, fake):
    vm_id = active_vm(client, fake)
    fake.fail_next_hibernates = 1

    failed = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate")
    status_after_failure = fake.vms[vm_id]["status"]
    retried = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate")

    assert (failed.status_code, status_after_failure) == (500, "ACTIVE")
    assert retried.status_code == 200
    assert fake.hibernate_calls == [vm_id, vm_id]


def test_fail_next_restores_answers_500_once_without_restoring(client, fake):
    vm_id = hibernated_vm(client, fake)
    fake.fail_next_restores = 1

    failed = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate-restore")
    status_after_failure = fake.vms[vm_id]["status"]
    retried = raw(fake, "GET", f"/core/virtual-machines/{vm_id}/hibernate-restore")

    assert (failed.status_code, status_after_failure) == (500, "HIBERNATED")
    assert retried.status_code == 200
    assert fake.restore_calls == [vm_id, vm_id]


def test_restore_goes_to_error_ends_the_next_restore_in_error_without_on_active(client, fake, events):
    first, second = hibernated_vm(client, fake), hibernated_vm(client, fake)
    fake.restore_goes_to_error = True  # counts as 1

    client.restore_vm(first)
    client.restore_vm(second)

    assert statuses_seen(fake, first, "ERROR") == ["RESTORING", "ERROR"]
    assert wait_until(lambda: fake.vms[second]["status"] == "ACTIVE")
    assert [vm["id"] for vm in events.active] == [first, second, second]
    assert fake.restore_goes_to_error == 0


def test_restore_calls_counts_every_restore_asked_for_refused_ones_too(client, fake):
    vm_id = hibernated_vm(client, fake)

    client.restore_vm(vm_id)
    client.restore_vm(vm_id)  # RESTORING already: refused, which the client takes for success

    assert fake.restore_calls == [vm_id, vm_id]


def test_deleting_a_hibernated_vm_removes_it_and_calls_on_deleted(client, fake, events):
    vm_id = hibernated_vm(client, fake)

    client.delete_vm(vm_id)

    assert fake.live_vm_names() == []
    assert [vm["id"] for vm in events.deleted] == [vm_id]


def test_deleting_a_vm_while_on_hibernated_runs_reports_it_deleted_once(client, fake, events):
    vm_id = active_vm(client, fake)
    fake.on_hibernated = lambda vm: (events.hibernated.append(vm), client.delete_vm(vm["id"]))

    client.hibernate_vm(vm_id)

    assert wait_until(lambda: vm_id not in fake.vms)
    assert [vm["id"] for vm in events.hibernated] == [vm_id]
    assert [vm["id"] for vm in events.deleted] == [vm_id]


# Serving: a hibernated VM's port answers nothing until it is restored

MODEL_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Are you awake?"}]}


@pytest.fixture
def served_cloud() -> Iterator[tuple[HyperstackClient, FakeHyperstack, ServedVms]]:
    served = ServedVms(lambda vm: mock_replica_for(vm, pace_seconds=0.0))
    with FakeHyperstack(active_after_seconds=0.05, on_active=served.on_active, on_deleted=served.on_deleted,
                        on_hibernated=served.on_hibernated, hibernate_after_seconds=0.05,
                        restore_after_seconds=0.05) as fake, \
            HyperstackClient(fake.api_key, host=fake.url, timeout_seconds=2) as client:
        yield client, fake, served
    served.stop_all()


def chat_over_tls(port: int, fingerprint: str, api_key: str) -> int:
    with urllib3.HTTPSConnectionPool("127.0.0.1", port, cert_reqs="CERT_NONE", assert_fingerprint=fingerprint,
                                     retries=False, timeout=5) as pool:
        return pool.request("POST", "/v1/chat/completions", json=MODEL_CHAT,
                            headers={"Authorization": f"Bearer {api_key}"}).status


def test_a_hibernated_vm_stops_serving_and_serves_again_once_restored(served_cloud):
    client, fake, served = served_cloud
    credentials, port = new_credentials("it-hibernate"), free_port()
    script = user_data(MODEL, port, f"vllm serve {MODEL} --port {port}", api_key=credentials.api_key,
                       certificate_pem=credentials.certificate_pem, private_key_pem=credentials.private_key_pem)
    vm_id = active_vm(client, fake, replace(spec(), user_data=script))
    before = chat_over_tls(port, credentials.fingerprint, credentials.api_key)

    client.hibernate_vm(vm_id)
    assert wait_until(lambda: client.get_vm(vm_id).status == "HIBERNATED")
    with pytest.raises(urllib3.exceptions.HTTPError):
        chat_over_tls(port, credentials.fingerprint, credentials.api_key)
    assert vm_id not in served.replicas

    client.restore_vm(vm_id)
    assert wait_until(lambda: client.get_vm(vm_id).status == "ACTIVE")
    after = chat_over_tls(port, credentials.fingerprint, credentials.api_key)

    assert (before, after) == (200, 200)
    assert served.replicas[vm_id].requests_seen == 1  # a fresh model server: the guest booted back


def test_requests_without_the_api_key_header_answer_401(fake):
    reply = raw(fake, "GET", "/core/virtual-machines", key=None)

    assert reply.status_code == 401
    assert reply.json()["status"] is False


def test_list_searches_names_and_pages_oldest_first(client, fake):
    for index in range(3):
        client.create_vm(spec(f"llm-proxy-replica-{index}"))
    client.create_vm(spec("other-vm"))

    reply = raw(fake, "GET", "/core/virtual-machines", params={"search": "REPLICA", "page": 2, "pageSize": 2})

    body = reply.json()
    assert (body["count"], body["page"], body["page_size"]) == (3, 2, 2)
    assert [vm["name"] for vm in body["instances"]] == ["llm-proxy-replica-2"]


def test_unknown_paths_answer_404_and_wrong_methods_405(fake):
    assert raw(fake, "GET", "/core/flavors").status_code == 404
    assert raw(fake, "DELETE", "/core/virtual-machines").status_code == 405


def test_rate_limit_answers_429_with_retry_after_then_recovers(fake):
    fake.rate_limit_next = 1

    limited = raw(fake, "GET", "/core/virtual-machines")
    after = raw(fake, "GET", "/core/virtual-machines")

    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert after.status_code == 200


def test_stop_cuts_a_stalled_request_and_leaves_no_threads():
    fake = FakeHyperstack(stall_seconds=30).start()
    fake.stall_next = 1
    errors = []
    caller = threading.Thread(target=lambda: errors.append(_get_or_error(fake)))
    caller.start()
    assert wait_until(lambda: fake.request_log)

    started = time.monotonic()
    fake.stop()
    caller.join(5)

    assert time.monotonic() - started < 2
    assert errors and isinstance(errors[0], requests.ConnectionError)
    assert not [thread for thread in threading.enumerate()
                if thread.name.startswith("fake-hyperstack") or "process_request_thread" in thread.name]


def _get_or_error(fake: FakeHyperstack) -> object:
    try:
        return raw(fake, "GET", "/core/virtual-machines")
    except requests.RequestException as error:
        return error


def test_cli_serves_the_api_until_sigterm():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "infra.local.fake_hyperstack", "--port", str(port),
                                "--quiet"], cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        reply = requests.get(f"http://127.0.0.1:{port}/v1/core/virtual-machines",
                             headers={"api_key": "fake-key"}, timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        process.stdout.close()

    assert f"http://127.0.0.1:{port}/v1" in banner
    assert reply.json() == {"status": True, "message": "Getting VMs successful", "instances": [], "count": 0,
                            "page": 1, "page_size": 20}
    assert code == 0
