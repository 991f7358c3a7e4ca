"""Autoscaling over the local stack (issue #23): the scaler every second, demand counted per 5-second window, VMs
on the fake Hyperstack, each at a loopback address of its own so that VMs from one template share a port."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from openai import APIStatusError

from infra.local.served_vms import loopback_for
from tests.integration.conftest import Cloud, LocalStack, local_stack, provisioning_env, replica_rows

pytestmark = pytest.mark.skipif(not loopback_for({"id": 1}).startswith("127.1."),
                                reason="VMs of one template need loopback addresses of their own (Linux)")


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    running = Cloud(floating_ip=loopback_for)
    running.hyperstack.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def scaling_stack(cloud: Cloud) -> Iterator[LocalStack]:
    env = {**provisioning_env(cloud), "SCALE_CHECK_SECONDS": "1", "LOAD_WINDOW_SECONDS": "5",
           "PROVISION_TIMEOUT_SECONDS": "30", "MODEL_READY_TIMEOUT_SECONDS": "30"}
    with local_stack(env) as running:
        yield running


@pytest.fixture
def model(scaling_stack: LocalStack) -> tuple[int, str]:
    name = f"as-{uuid.uuid4().hex[:8]}/Mock-Instruct"
    return scaling_stack.register_model(name), name


def autoscale(stack: LocalStack, model_id: int, name: str, **settings: object) -> dict:
    port = 18000  # one port for every VM of the template: each has its own address
    details = {"name": "autoscaled", "environment_name": "default-CANADA-1", "image_name": "Ubuntu 22.04",
               "flavor_name": "n3-RTX-A6000x1", "key_name": "it-key", "port": port,
               "run_command": f"vllm serve {name} --port {port}"}
    body = {"min_replicas": 1, "max_replicas": 2, "target_requests_per_minute": 60, "scale_in_after_seconds": 2,
            "vm_creation_details": details, **settings}
    reply = stack.admin.put(stack.url(f"/v1/models/{model_id}/autoscaling"), json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def statuses(stack: LocalStack, model_id: int) -> list[str]:
    return sorted(row["vm_status"] for row in replica_rows(stack) if row["model_id"] == model_id)


def wait_until(what: str, check, timeout: float = 60, stack: LocalStack | None = None, model_id: int = 0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    state = stack.admin.get(stack.url(f"/v1/models/{model_id}/autoscaling")).json() if stack else None
    raise AssertionError(f"never {what}; scaler state: {state}")


def vms_of(cloud: Cloud, name: str) -> list[dict]:
    return [vm for vm in cloud.hyperstack.vms.values() if vm.get("model") == name]


def ask(stack: LocalStack, key: str, name: str, text: str, **extra: object) -> str:
    reply = stack.client(key).chat.completions.create(model=name, messages=[{"role": "user", "content": text}],
                                                      max_tokens=4, **extra)
    return reply.choices[0].message.content


def test_min_replicas_one_brings_up_a_serving_replica_that_answers(scaling_stack, cloud, model):
    model_id, name = model
    autoscale(scaling_stack, model_id, name, min_replicas=1, max_replicas=2)

    wait_until("a replica serves", lambda: statuses(scaling_stack, model_id) == ["SUCCESS"],
               stack=scaling_stack, model_id=model_id)

    [row] = scaling_stack.admin.get(scaling_stack.url(f"/v1/models/{model_id}/replicas")).json()
    assert row["autoscaled"] is True and row["endpoint"].startswith("https://127.1.")
    assert ask(scaling_stack, scaling_stack.new_key()["api_key"], name, "hello")
    state = scaling_stack.admin.get(scaling_stack.url(f"/v1/models/{model_id}/autoscaling")).json()["state"]
    assert state["desired_replicas"] == 1 and state["serving"] == 1


def test_a_flood_brings_a_second_replica_never_more_than_max_and_the_model_returns_to_min(
        scaling_stack, cloud, model):
    model_id, name = model
    autoscale(scaling_stack, model_id, name, min_replicas=1, max_replicas=2, target_requests_per_minute=12)
    wait_until("a first replica serves", lambda: statuses(scaling_stack, model_id) == ["SUCCESS"],
               stack=scaling_stack, model_id=model_id)
    key = scaling_stack.new_key(allowed_rpm=100_000)
    most_vms, flooding = [0], threading.Event()

    def flood() -> None:
        turn = 0
        while not flooding.is_set():
            turn += 1
            try:
                ask(scaling_stack, key["api_key"], name, f"conversation {turn}")
            except APIStatusError:
                pass  # refused while the second starts: demand all the same
            most_vms[0] = max(most_vms[0], len(vms_of(cloud, name)))

    threads = [threading.Thread(target=flood) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until("a second replica serves", lambda: statuses(scaling_stack, model_id) == ["SUCCESS", "SUCCESS"],
                   stack=scaling_stack, model_id=model_id)
        served_by = set()
        wait_until("both replicas answer", lambda: served_by.update(
            row["replica_id"] for row in scaling_stack.usage_rows(key["id"], expected=1)) or len(served_by) >= 2)
    finally:
        flooding.set()
        for thread in threads:
            thread.join()

    assert most_vms[0] <= 2 and len(vms_of(cloud, name)) <= 2
    wait_until("the model is back to one serving replica",
               lambda: statuses(scaling_stack, model_id) == ["HIBERNATED", "SUCCESS"], timeout=90,
               stack=scaling_stack, model_id=model_id)
    assert len(vms_of(cloud, name)) == 2  # the second hibernated: the warm pool, not deleted


def test_min_replicas_zero_scales_to_zero_and_a_request_brings_one_back(scaling_stack, cloud, model):
    model_id, name = model
    key = scaling_stack.new_key()["api_key"]
    autoscale(scaling_stack, model_id, name, min_replicas=0, max_replicas=1, scale_in_after_seconds=1)
    time.sleep(3)
    assert statuses(scaling_stack, model_id) == []  # nothing wanted, nothing made

    with pytest.raises(APIStatusError) as refused:
        ask(scaling_stack, key, name, "anyone there?")
    assert refused.value.status_code == 503  # no replica yet: the request is demand, and one is made
    wait_until("a replica serves", lambda: statuses(scaling_stack, model_id) == ["SUCCESS"],
               stack=scaling_stack, model_id=model_id)
    wait_until("the model scales to zero", lambda: statuses(scaling_stack, model_id) == ["HIBERNATED"],
               timeout=90, stack=scaling_stack, model_id=model_id)

    answer = ask(scaling_stack, key, name, "wake up", extra_headers={"X-Wait-For-Model": "60"})

    assert answer and statuses(scaling_stack, model_id) == ["SUCCESS"]


def test_deleting_an_autoscaled_model_leaves_no_vm(scaling_stack, cloud, model):
    model_id, name = model
    autoscale(scaling_stack, model_id, name, min_replicas=2, max_replicas=2)
    wait_until("both replicas are being made", lambda: len(statuses(scaling_stack, model_id)) == 2,
               stack=scaling_stack, model_id=model_id)

    assert scaling_stack.admin.delete(scaling_stack.url(f"/v1/models/{model_id}")).status_code == 204

    wait_until("the model's VMs are gone", lambda: not vms_of(cloud, name) and not statuses(scaling_stack, model_id))
    time.sleep(2)  # a scaler run after the delete makes nothing
    assert not vms_of(cloud, name) and scaling_stack.admin.get(
        scaling_stack.url(f"/v1/models/{model_id}/autoscaling")).status_code == 404


def test_bad_settings_are_400s_naming_the_field(scaling_stack, model):
    model_id, name = model
    reply = scaling_stack.admin.put(scaling_stack.url(f"/v1/models/{model_id}/autoscaling"), json={
        "min_replicas": 3, "max_replicas": 2, "target_requests_per_minute": 0, "scale_in_after_seconds": 60,
        "vm_creation_details": {"name": "x"}})

    assert reply.status_code == 400
    assert {"target_requests_per_minute", "vm_creation_details"} <= set(reply.json()["errors"])


def test_a_template_whose_vms_fail_backs_off_says_why_and_leaves_no_vm(scaling_stack, cloud, model):
    model_id, name = model
    cloud.hyperstack.vm_goes_to_error = True
    try:
        autoscale(scaling_stack, model_id, name, min_replicas=1, max_replicas=2)

        def backing_off() -> dict | None:
            state = scaling_stack.admin.get(scaling_stack.url(f"/v1/models/{model_id}/autoscaling")).json()["state"]
            return state if "not creating" in state["reason"] else None

        state = wait_until("the scaler backs off", backing_off, timeout=90, stack=scaling_stack, model_id=model_id)
    finally:
        cloud.hyperstack.vm_goes_to_error = False

    assert len(state["failed_creates"]) >= 2 and all(f["reason"] for f in state["failed_creates"])
    wait_until("the failed replicas and their VMs are gone",
               lambda: not vms_of(cloud, name) and not statuses(scaling_stack, model_id), timeout=60)
    time.sleep(3)  # runs while it backs off make nothing
    assert not vms_of(cloud, name) and not statuses(scaling_stack, model_id)


def test_a_refused_request_nudges_the_scaler_which_acts_before_its_schedule(cloud):
    """The scaler's schedule an hour away: only the nudge of a refused request (a Lambda Event invocation,
    answered by the embedded emulator) can bring the replica that then serves."""
    env = {**provisioning_env(cloud), "SCALE_CHECK_SECONDS": "3600", "LOAD_WINDOW_SECONDS": "5"}
    with local_stack(env) as stack:
        name = f"as-{uuid.uuid4().hex[:8]}/Mock-Instruct"
        model_id = stack.register_model(name)
        autoscale(stack, model_id, name, min_replicas=0, max_replicas=1)
        key = stack.new_key()["api_key"]

        with pytest.raises(APIStatusError) as refused:
            ask(stack, key, name, "anyone?")
        assert refused.value.status_code == 503 and refused.value.code == "no_replica_ready"

        wait_until("the nudged scaler's replica serves", lambda: statuses(stack, model_id) == ["SUCCESS"],
                   timeout=60, stack=stack, model_id=model_id)
        assert ask(stack, key, name, "now?")
        assert stack.admin.delete(stack.url(f"/v1/models/{model_id}")).status_code == 204
        wait_until("its VM is gone", lambda: not vms_of(cloud, name))
