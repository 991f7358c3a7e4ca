"""Two `make run`s side by side: only PORT differs, every side listener keeps its default (PORT+1 ..)."""

import re
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_run
from tests.integration.conftest import LocalStack, start_local_stack

SIDE_LISTENERS = 4  # demo replica, real model, AWS emulator, fake Hyperstack: PORT+1 .. PORT+4
LAST_LINE = "Provisioning workflow:"
# Every side port as make run leaves it by default: following PORT, never the tests' MOCK_REPLICA_PORT=0.
DEFAULT_SIDE_PORTS = {"MOCK_REPLICA_PORT": None, "LOCAL_REPLICA_PORT": None, "MOTO_PORT": None,
                      "FAKE_HYPERSTACK_PORT": None}


class Output:
    """A stack's printed lines, read as they come so that the pipe never fills."""

    def __init__(self, stack: LocalStack) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stack,), daemon=True)
        self._thread.start()

    def _read(self, stack: LocalStack) -> None:
        for line in stack.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def until(self, prefix: str, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.lines)


@pytest.fixture(scope="module")
def stacks() -> Iterator[tuple[int, tuple[LocalStack, Output], tuple[LocalStack, Output]]]:
    """The first on PORT=p, the second on p+2: its PORT+3 (the demo replica's) is the first's emulator's."""
    base = free_run(2 + SIDE_LISTENERS + 1)
    first = start_local_stack({"PORT": str(base), **DEFAULT_SIDE_PORTS})
    try:
        second = start_local_stack({"PORT": str(base + 2), **DEFAULT_SIDE_PORTS})
    except Exception:
        first.stop()
        raise
    yield base, (first, Output(first)), (second, Output(second))
    second.stop()
    first.stop()


def test_two_stacks_side_by_side_both_answer_chat_through_their_demo_replicas(stacks):
    _, (first, _), (second, _) = stacks

    for stack in (first, second):
        models = stack.admin.get(stack.url("/v1/models"))
        reply = stack.client(stack.new_key()["api_key"]).chat.completions.create(
            model="mock/llm", messages=[{"role": "user", "content": "Hello"}])

        assert models.status_code == 200
        assert "mock/llm" in models.text
        assert reply.choices[0].message.content


def test_side_ports_follow_port_and_the_printed_lines_name_each_listener(stacks):
    base, (_, first_output), _ = stacks

    lines = first_output.until(LAST_LINE)

    assert f"API: http://127.0.0.1:{base}/v1 (also under /api/v1)" in lines
    assert _url(lines, "Demo replica") == f"http://127.0.0.1:{base + 1}/v1"
    assert _url(lines, "AWS emulator") == f"http://127.0.0.1:{base + 3}"
    assert _url(lines, "Fake Hyperstack") == f"http://127.0.0.1:{base + 4}/v1"


def test_a_side_port_taken_by_the_other_stack_falls_back_to_a_free_one(stacks):
    base, _, (_, second_output) = stacks

    lines = second_output.until(LAST_LINE)

    demo = _url(lines, "Demo replica")
    assert demo.startswith("http://127.0.0.1:")
    assert demo != f"http://127.0.0.1:{base + 2 + 1}/v1"  # the first stack's emulator holds it
    assert _url(lines, "Fake Hyperstack") == f"http://127.0.0.1:{base + 2 + 4}/v1"


def _url(lines: list[str], role: str) -> str:
    found = [match.group(1) for line in lines if (match := re.match(rf"{role}: (\S+)", line))]
    assert len(found) == 1, lines
    return found[0]
