"""Integration fixtures: the local stack started the way `make run` starts it."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_ADMIN_KEY

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

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_local_stack(extra_env: dict[str, str] | None = None) -> LocalStack:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_ENDPOINT_URL", "TABLE_"))}
    env.update(PORT=str(port), ADMIN_API_KEY=TEST_ADMIN_KEY, QUIET="1", **(extra_env or {}))
    process = subprocess.Popen([sys.executable, "-m", "chalicelib.local"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    running = start_local_stack()
    yield running
    running.stop()
