"""Schemathesis over every operation of /v1/openapi.json, stateful phase included: zero failures.

Checks: no 5xx, every status and content type documented, every body matching its schema. A
request slower than the CLI's request timeout fails the run too, so a hang is a failure.
"""

import pytest

from tests.fuzz.run import FUZZ_STACK_ENV, fuzz
from tests.integration.conftest import start_local_stack


@pytest.mark.timeout(600)
def test_fuzzing_every_operation_finds_no_failure():
    stack = start_local_stack(FUZZ_STACK_ENV)
    try:
        result = fuzz(stack)
    finally:
        stack.stop()
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
