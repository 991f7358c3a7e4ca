"""Schemathesis against the local stack started as `make run` starts it, through /v1/openapi.json.

`make test` runs a short, seeded campaign (tests/integration/test_fuzz.py); `make fuzz` runs
`python -m tests.fuzz.run --long`: more examples, a new seed each time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import TEST_ADMIN_KEY
from tests.integration.conftest import STACK_ENV, LocalStack, start_local_stack

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    # A body the document forbids must be refused: the document and the validators say the same.
    "negative_data_rejection",
])
SEED = 20261125
SHORT_EXAMPLES = 100
LONG_EXAMPLES = 200
REQUEST_TIMEOUT = 15  # above the stack's upstream timeout: a request past it counts as a hang

# The chat route takes a user's key, not the admin key: a key made for the run is sent to that
# operation only, so the fuzzer gets past authentication into validation, routing and the replica.
# Replicas the fuzzer itself registers (dead URLs, the demo replica deleted) would make the chat
# route answer 502/503/504 rightly; MOCK_LLM answers in the proxy after auth, validation and rate
# limiting, so a 5xx there is a bug. The relay to real replicas is covered by test_chat.py.
FUZZ_STACK_ENV = {**STACK_ENV, "MOCK_LLM": "1"}

# A schema-breaking body that is also over the size limit is refused by the size check first (413).
CONFIG = """
headers = { Authorization = "Bearer ${FUZZ_ADMIN_KEY}" }

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]

[[operations]]
include-operation-id = "createChatCompletion"
headers = { Authorization = "Bearer ${FUZZ_USER_KEY}" }
"""


def command(base_url: str, config: Path, *, long: bool) -> list[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    args = [str(cli), "--config-file", str(config), "run", base_url + "/v1/openapi.json",
            "--checks", CHECKS, "--phases", "examples,coverage,fuzzing,stateful",
            "--request-timeout", str(REQUEST_TIMEOUT), "--workers", "1", "--warnings", "off",
            "--max-examples", str(LONG_EXAMPLES if long else SHORT_EXAMPLES), "--no-color"]
    # A seed (not --generation-deterministic, which ignores it): random generation that repeats run to run.
    return args if long else [*args, "--seed", str(SEED)]


def fuzz(stack: LocalStack, *, long: bool = False) -> subprocess.CompletedProcess[str]:
    user_key = stack.new_key(user_id="fuzz-user", allowed_rpm=1_000_000)["api_key"]
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "schemathesis.toml"
        config.write_text(CONFIG)
        env = {**os.environ, "FUZZ_ADMIN_KEY": TEST_ADMIN_KEY, "FUZZ_USER_KEY": user_key}
        return subprocess.run(command(stack.base_url, config, long=long), env=env, cwd=scratch,
                              capture_output=True, text=True, timeout=None if long else 600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="the longer, unseeded campaign")
    long = parser.parse_args().long
    stack = start_local_stack(FUZZ_STACK_ENV)
    started = time.monotonic()
    try:
        result = fuzz(stack, long=long)
    finally:
        stack.stop()
    print(result.stdout, result.stderr, sep="\n")
    print(f"fuzzing took {time.monotonic() - started:.0f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
