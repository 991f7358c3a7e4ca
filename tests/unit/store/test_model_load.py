"""A model's demand per minute (chalicelib/store/model_load.py)."""

import threading

from chalicelib.store import model_load

MINUTE = 29_000_000 * 60  # the start of some minute, in Unix seconds


def test_requests_in_one_minute_are_counted_exactly_under_concurrency(aws):
    threads = [threading.Thread(target=model_load.count, args=(7, MINUTE + 5)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert model_load.per_minute(7, MINUTE + 30) == 20


def test_the_minute_just_ended_is_the_load_until_this_one_counts_more(aws):
    for _ in range(6):
        model_load.count(7, MINUTE + 10)
    model_load.count(7, MINUTE + 70, requests=2)

    assert model_load.per_minute(7, MINUTE + 75) == 6  # the last whole minute, this one has 2 so far
    for _ in range(5):
        model_load.count(7, MINUTE + 80)
    assert model_load.per_minute(7, MINUTE + 85) == 7  # this one's so far, once higher


def test_a_whole_minute_read_after_it_ended_is_the_load(aws):
    for _ in range(4):
        model_load.count(7, MINUTE + 10)

    assert model_load.per_minute(7, MINUTE + 61) == 4


def test_a_count_older_than_the_minute_before_is_no_load(aws):
    for _ in range(4):
        model_load.count(7, MINUTE + 10)

    assert model_load.per_minute(7, MINUTE + 125) == 0
    model_load.count(7, MINUTE + 190)
    assert model_load.per_minute(7, MINUTE + 190) == 1  # the stale minute did not become the previous one


def test_models_are_counted_apart_and_an_uncounted_one_has_no_load(aws):
    model_load.count(7, MINUTE + 10)
    model_load.count(8, MINUTE + 10, requests=3)

    assert (model_load.per_minute(7, MINUTE + 20), model_load.per_minute(8, MINUTE + 20)) == (1, 3)
    assert model_load.per_minute(9, MINUTE + 20) == 0


def test_a_caller_whose_clock_runs_behind_counts_in_the_minute_already_open(aws):
    model_load.count(7, MINUTE + 70)
    model_load.count(7, MINUTE + 59)  # a clock a few seconds behind: counted, not lost

    assert model_load.per_minute(7, MINUTE + 80) == 2
