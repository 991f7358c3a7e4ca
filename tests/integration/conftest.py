"""Integration fixtures: the local stack started the way `make run` starts it."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from infra.local.fake_hyperstack import FakeHyperstack
from infra.local.mock_vllm import MockVllm
from infra.local.served_vms import ServedVm, ServedVms, mock_replica_for
from tests.conftest import TEST_ADMIN_KEY
from tests.integration.stack_output import StackOutput

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalStack:
    def __init__(self, process: subprocess.Popen, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {TEST_ADMIN_KEY}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def register_model(self, name: str, *endpoints: str, rate_limits: tuple[int | None, ...] = ()) -> int:
        """The model `name`, served by `endpoints`; returns its id."""
        model_id = self.admin.post(self.url("/v1/models"), json={"name": name}).json()["id"]
        for index, endpoint in enumerate(endpoints):
            body = {"endpoint": endpoint}
            if index < len(rate_limits) and rate_limits[index]:
                body["rate_limit"] = rate_limits[index]
            reply = self.admin.post(self.url(f"/v1/models/{model_id}/replicas"), json=body)
            assert reply.status_code == 201, reply.text
        return model_id

    def new_key(self, **fields: object) -> dict:
        reply = self.admin.post(self.url("/v1/generate_api_key"), json={"user_id": "it-user", **fields})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def client(self, api_key: str) -> OpenAI:
        return OpenAI(base_url=self.url("/v1"), api_key=api_key, max_retries=0, timeout=30)

    def usage_rows(self, api_key_id: int, expected: int = 1, wait: float = 10) -> list[dict]:
        """The key's metric rows, waiting for `expected` of them (rows are written after the answer)."""
        deadline = time.monotonic() + wait
        while True:
            rows = [row for row in self.admin.get(self.url("/v1/tables/metric")).json()["data"]
                    if row["api_key_id"] == api_key_id]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_local_stack(extra_env: dict[str, str | None] | None = None) -> LocalStack:
    """`make run` on a free PORT (or `extra_env`'s); a None in `extra_env` unsets that variable."""
    port = int((extra_env or {}).get("PORT") or free_port())
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_ENDPOINT_URL", "TABLE_"))}
    # The demo replica takes a free port too, so tests never collide with a developer's `make run`.
    env.update(PORT=str(port), ADMIN_API_KEY=TEST_ADMIN_KEY, QUIET="1", MOCK_REPLICA_PORT="0")
    env.update(extra_env or {})
    env = {key: value for key, value in env.items() if value is not None}
    process = subprocess.Popen([sys.executable, "-m", "infra.local"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.stdout = StackOutput(process.stdout)  # read as it comes, so that the stack never blocks on it
    stack = LocalStack(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"local stack exited early:\n{process.stdout.read()}")
        try:
            requests.get(stack.url("/v1/tables"), timeout=1)
            return stack
        except requests.ConnectionError:
            time.sleep(0.2)
    stack.stop()
    raise RuntimeError("local stack did not start within 60 s")


# Small timeouts so that failure modes are tested in seconds, not minutes.
STACK_ENV = {"UPSTREAM_TIMEOUT_SECONDS": "2", "UPSTREAM_CONNECT_TIMEOUT_SECONDS": "1", "REPLICA_CACHE_SECONDS": "1"}


@contextmanager
def local_stack(extra_env: dict[str, str | None] | None = None) -> Iterator[LocalStack]:
    """A stack for a `with` block: started, then stopped however the block ends."""
    running = start_local_stack(extra_env)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with local_stack(STACK_ENV) as running:
        yield running


@pytest.fixture
def model_name() -> str:
    """A model name of the test's own, so that tests never share replicas or cached routes."""
    return f"it-{uuid.uuid4().hex[:10]}/Mock-Instruct"


@pytest.fixture
def replica(model_name: str) -> Iterator[MockVllm]:
    with MockVllm(model=model_name) as running:
        yield running


@pytest.fixture
def served(stack, model_name, replica) -> str:
    """The test's own model, served by its mock replica."""
    stack.register_model(model_name, replica.base_url)
    return model_name


@pytest.fixture
def second_replica(model_name: str) -> Iterator[MockVllm]:
    with MockVllm(model=model_name) as running:
        yield running


# VM-backed replicas: the fake Hyperstack, a stack provisioning through it, and the no-orphan check.

FAKE_KEY = "fake-hyperstack-key"


class Cloud:
    """The fake Hyperstack, and the replicas its ACTIVE VMs serve: each a MockVllm, behind the VM's TLS front
    when its user_data carries one (infra/local/served_vms.py, as `make run` serves them)."""

    def __init__(self, floating_ip: str | Callable[[dict], str] = "127.0.0.1") -> None:
        self.serve_models = True
        self.served = ServedVms(self._serve)
        self.hyperstack = FakeHyperstack(api_key=FAKE_KEY, active_after_seconds=0.5, floating_ip=floating_ip,
                                         on_active=self.served.on_active, on_deleted=self.served.on_deleted,
                                         on_hibernated=self.served.on_hibernated)

    @property
    def replicas(self) -> dict[int, MockVllm]:
        """VM id -> the MockVllm behind that VM (flip its `mode`); its own port, not the VM's, when fronted."""
        return self.served.replicas

    def _serve(self, vm: dict) -> ServedVm | None:
        return mock_replica_for(vm, pace_seconds=0.0) if self.serve_models else None

    def stop(self) -> None:
        self.served.stop_all()
        self.hyperstack.stop()


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    running = Cloud()
    running.hyperstack.start()
    yield running
    running.stop()


def provisioning_env(cloud: Cloud) -> dict[str, str]:
    """A stack that provisions on the fake Hyperstack, with waits of seconds and no replica cache."""
    return {
        "HYPERSTACK_API_URL": cloud.hyperstack.url, "HYPERSTACK_API_KEY": FAKE_KEY, "MOCK_REPLICA": "0",
        "PROVISION_POLL_SECONDS": "1", "PROVISION_TIMEOUT_SECONDS": "4", "MODEL_READY_TIMEOUT_SECONDS": "4",
        "REPLICA_CACHE_SECONDS": "0", "DRAIN_POLL_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def provisioning_stack(cloud: Cloud) -> Iterator[LocalStack]:
    stack = start_local_stack(provisioning_env(cloud))
    yield stack
    stack.stop()


@pytest.fixture
def no_vm_left_unowned(cloud: Cloud, provisioning_stack: LocalStack) -> Iterator[None]:
    """After every scenario, Hyperstack holds no VM that no SUCCESS replica owns."""
    cloud.hyperstack.vm_goes_to_error = cloud.hyperstack.never_active = False
    cloud.hyperstack.fail_all_deletes = False
    cloud.serve_models = True
    yield
    owned = {row["vm_id"] for row in replica_rows(provisioning_stack) if row["vm_status"] == "SUCCESS"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and set(cloud.hyperstack.vms) - owned:
        time.sleep(0.2)
    assert set(cloud.hyperstack.vms) - owned == set()


def replica_rows(stack: LocalStack) -> list[dict]:
    return stack.admin.get(stack.url("/v1/tables/replicas")).json()["data"]
