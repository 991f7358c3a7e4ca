"""The README, pasted top to bottom into one shell against a fresh local stack, as a newcomer would.

Every ```bash and ```python block runs in order in one bash process (Python blocks through the venv's
interpreter, in that shell's environment), unless the line before its fence is an HTML comment starting
`<!-- not run by the README test`. `curl` is wrapped to record each answer's status: an answer of 300
or more fails the test unless its block says to expect that status (`→ 503`), and a status a block says
to expect must occur.
"""

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_ADMIN_KEY
from tests.integration.conftest import ROOT, LocalStack, start_local_stack

README = ROOT / "README.md"
SKIP_MARK = "<!-- not run by the README test"
EXPECTED_STATUS = re.compile(r"→ ([1-5]\d\d)\b")
# Ports the README's demos name: a fake VM's two and the stand-in vLLM server's.
DEMO_PORTS = (8120, 8121, 8130)


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # of its opening fence, 1-based
    text: str

    @property
    def expected_statuses(self) -> set[int]:
        return {int(code) for code in EXPECTED_STATUS.findall(self.text)}


def readme_blocks(markdown: str) -> list[Block]:
    """The README's runnable blocks, in order."""
    blocks, lines = [], markdown.splitlines()
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w+)\s*", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        if fence.group(1) in ("bash", "python") and not before.startswith(SKIP_MARK):
            blocks.append(Block(fence.group(1), index + 1, "\n".join(lines[index + 1:end])))
        index = end + 1
    return blocks


CURL_RECORDER = r"""
curl() {
  local headers status rc=0
  headers=$(mktemp)
  command curl -D "$headers" "$@" || rc=$?
  status=$(grep -E '^HTTP/' "$headers" | tail -n 1 | cut -d' ' -f2)
  rm -f "$headers"
  if [ -n "$status" ]; then echo "$README_BLOCK $status" >> "$README_STATUS_LOG"; fi
  return $rc
}
"""


def pasting_script(blocks: list[Block]) -> str:
    parts = ["set -euo pipefail", CURL_RECORDER]
    for number, block in enumerate(blocks):
        parts.append(f"README_BLOCK={number}\necho '::: README block at line {block.line}'")
        if block.language == "python":
            parts.append(f'"$README_PYTHON" - <<\'README_PYTHON_EOF\'\n{block.text}\nREADME_PYTHON_EOF')
        else:
            parts.append(block.text)
    parts.append("echo '::: README done'")
    return "\n".join(parts) + "\n"


def banner_in_readme(markdown: str) -> list[str]:
    """The quick start's ```text block of what `make run` prints."""
    start = markdown.index("```text\nADMIN_API_KEY not set") + len("```text\n")
    return markdown[start:markdown.index("```", start)].splitlines()


def _normalised(line: str) -> str:
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)
    return re.sub(r"deployment [\w-]+-[0-9a-f]{8}", "deployment <id>", line)


def test_readme_blocks_are_found_and_the_deploy_block_is_skipped() -> None:
    blocks = readme_blocks(README.read_text())
    assert [block.language for block in blocks].count("python") >= 1
    assert len(blocks) >= 8
    assert not any("aws cloudformation deploy" in block.text for block in blocks)


def test_a_block_that_expects_an_error_says_so_with_an_arrow() -> None:
    block = Block("bash", 1, "# → 503 model_waking\ncurl ...\ncurl ... # → 401")
    assert block.expected_statuses == {503, 401}


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no owner
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def fresh_stack() -> LocalStack:
    taken = [port for port in DEMO_PORTS if not _port_is_free(port)]
    assert not taken, f"the README's demos need ports {taken} free on this machine"
    # As `make run` starts it: the fake Hyperstack and the demo replica, default timings.
    stack = start_local_stack({"HYPERSTACK_API_KEY": None, "HYPERSTACK_API_URL": None})
    yield stack
    stack.stop()


@pytest.mark.timeout(420)
def test_the_readme_pasted_in_order_answers_as_it_says(fresh_stack: LocalStack, tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text())
    script = tmp_path / "readme.sh"
    script.write_text(pasting_script(blocks))
    status_log = tmp_path / "statuses"
    status_log.touch()
    env = dict(os.environ, PORT=fresh_stack.base_url.rsplit(":", 1)[1], ADMIN_API_KEY=TEST_ADMIN_KEY,
               README_PYTHON=sys.executable, README_STATUS_LOG=str(status_log))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        env.pop(name, None)
    process = subprocess.Popen(["bash", str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=400)
    finally:
        try:  # the README's background server, should a block fail before it is stopped
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    tail = "\n".join(output.splitlines()[-60:])
    assert process.returncode == 0 and "::: README done" in output, f"the README stopped:\n{tail}"

    printed = [_normalised(line) for line in fresh_stack.process.stdout.lines()]
    for line in banner_in_readme(README.read_text())[1:]:  # the first is only printed without ADMIN_API_KEY
        assert _normalised(line) in printed, f"`make run` no longer prints {line!r}:\n" + "\n".join(printed[:12])

    seen: dict[int, list[int]] = {}
    for line in status_log.read_text().splitlines():
        number, status = line.split()
        seen.setdefault(int(number), []).append(int(status))
    for number, block in enumerate(blocks):
        statuses = seen.get(number, [])
        unexpected = [status for status in statuses if status >= 300 and status not in block.expected_statuses]
        assert not unexpected, f"README block at line {block.line} answered {unexpected}:\n{tail}"
        missing = block.expected_statuses - set(statuses)
        assert not missing, f"README block at line {block.line} says → {sorted(missing)}, never answered:\n{tail}"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {github_anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def test_every_link_between_the_readme_and_docs_reaches_a_page_and_heading() -> None:
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def test_github_anchors_are_made_as_github_makes_them() -> None:
    assert github_anchor("1. Quick start") == "1-quick-start"
    assert github_anchor("The replica's state machine") == "the-replicas-state-machine"
    assert github_anchor("`make bench`: what the proxy adds") == "make-bench-what-the-proxy-adds"
