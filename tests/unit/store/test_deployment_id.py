"""The deployment id: made once, on first use, kept in bookkeeping, the same for every later reader."""

import re

import pytest

from chalicelib.store import deployment
from chalicelib.store.tables import Bookkeeping


@pytest.fixture(autouse=True)
def fresh_cache(aws):
    deployment.forget_cached_id()
    yield
    deployment.forget_cached_id()


def test_the_first_use_makes_a_stage_and_random_suffix_id_and_stores_it():
    made = deployment.deployment_id()

    assert re.fullmatch(r"test-[0-9a-f]{8}", made)
    assert f"{int(Bookkeeping.get(deployment.DEPLOYMENT_KEY).value):08x}" == made.removeprefix("test-")


def test_another_function_instance_reads_the_stored_id_rather_than_making_one():
    made = deployment.deployment_id()
    deployment.forget_cached_id()  # a cold start elsewhere

    assert deployment.deployment_id() == made


def test_an_id_stored_by_a_racing_instance_wins():
    Bookkeeping(deployment.DEPLOYMENT_KEY, value=0xCAFE).save()

    assert deployment.deployment_id() == "test-0000cafe"
