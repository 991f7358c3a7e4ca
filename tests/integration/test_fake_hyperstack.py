"""The fake Hyperstack itself: lifecycle, callbacks, failure switches and HTTP shape, seen over real HTTP."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chalicelib.hyperstack.client import HyperstackClient, HyperstackError, VmSpec
from chalicelib.vm_naming import replica_marker
from infra.local.fake_hyperstack import FakeHyperstack
from infra.local.hyperstack_vms import IMPOSTOR_FLAG
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


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def fake(events: Events) -> Iterator[FakeHyperstack]:
    with FakeHyperstack(active_after_seconds=0.2, on_active=events.active.append,
                        on_deleted=events.deleted.append) as running:
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
