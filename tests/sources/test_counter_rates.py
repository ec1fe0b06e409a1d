"""Rates from two scrapes of a counter (the pods source's memory), with hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.sources.metrics.counters import (
    CounterMemory,
    CounterSample,
    counter_increases,
    counter_rates,
    summed_rates,
)

__all__: list[str] = []

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOL, OTHER = ("llm", "chat"), ("llm", "other")
A, B = "http://10.0.0.1:8000", "http://10.0.0.2:8000"


def at(seconds: float, *values: float | None, created: float | None = None) -> CounterSample:
    return CounterSample(T0 + timedelta(seconds=seconds), tuple(values), created)


def test_rate_is_the_delta_over_the_elapsed_time() -> None:
    assert counter_rates(at(0, 1000.0, 200.0), at(10, 1600.0, 500.0)) == (60.0, 30.0)
    assert counter_rates(at(0, 5.0, 5.0), at(4, 5.0, 6.0)) == (0.0, 0.25)  # no change is a rate of 0


def test_a_counter_missing_on_either_side_has_no_rate_the_others_do() -> None:
    assert counter_rates(at(0, 100.0, None), at(5, 150.0, 40.0)) == (10.0, None)


def test_a_counter_that_went_down_is_a_restart_no_rate_at_all() -> None:
    assert counter_rates(at(0, 1000.0, 200.0), at(10, 1600.0, 100.0)) is None


def test_a_new_created_time_is_a_restart_even_if_the_counters_grew() -> None:
    assert counter_rates(at(0, 10.0, created=1_700_000_000.0), at(10, 50.0, created=1_700_000_009.0)) is None
    assert counter_rates(at(0, 10.0, created=1_700_000_000.0), at(10, 50.0, created=1_700_000_000.0)) == (4.0,)
    assert counter_rates(at(0, 10.0), at(10, 50.0, created=1_700_000_000.0)) == (4.0,)  # unknown before: no claim


def test_no_time_between_the_samples_is_no_rate() -> None:
    assert counter_rates(at(10, 1.0), at(10, 2.0)) is None
    assert counter_rates(at(10, 1.0), at(5, 2.0)) is None


def test_sums_over_the_targets_that_have_a_rate() -> None:
    assert summed_rates([(60.0, 30.0), (40.0, None)], 2) == (100.0, 30.0)
    assert summed_rates([(None, None)], 2) == (None, None)
    assert summed_rates([], 2) == (None, None)


def test_none_before_two_samples_then_the_rate() -> None:
    memory = CounterMemory()
    assert memory.advance(POOL, [A, B], {A: at(0, 1000.0), B: at(0, 0.0)}) == {}
    assert memory.advance(POOL, [A, B], {A: at(10, 1600.0), B: at(10, 400.0)}) == {A: (60.0,), B: (40.0,)}
    assert memory.advance(POOL, [A, B], {A: at(15, 1600.0), B: at(15, 500.0)}) == {A: (0.0,), B: (20.0,)}


def test_a_reset_gives_no_rate_this_round_and_the_next_one_counts_from_the_new_value() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A], {A: at(0, 1000.0)})
    assert memory.advance(POOL, [A], {A: at(10, 30.0)}) == {}
    assert memory.advance(POOL, [A], {A: at(20, 130.0)}) == {A: (10.0,)}


def test_a_replica_no_longer_listed_is_forgotten() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A, B], {A: at(0, 1.0), B: at(0, 1.0)})
    memory.advance(POOL, [A], {A: at(10, 11.0)})
    assert memory.targets(POOL) == (A,)
    # Back under the same address later: a new replica, no rate from the sample of the old one.
    assert memory.advance(POOL, [A, B], {A: at(20, 21.0), B: at(20, 500.0)}) == {A: (1.0,)}


def test_a_failed_scrape_keeps_the_earlier_sample_for_the_next_good_one() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A], {A: at(0, 100.0)})
    assert memory.advance(POOL, [A], {}) == {}
    assert memory.advance(POOL, [A], {A: at(20, 300.0)}) == {A: (10.0,)}


def test_the_same_time_twice_keeps_the_first_sample() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A], {A: at(0, 100.0)})
    assert memory.advance(POOL, [A], {A: at(0, 150.0)}) == {}
    assert memory.advance(POOL, [A], {A: at(10, 200.0)}) == {A: (10.0,)}


def test_a_clock_that_went_back_starts_over() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A], {A: at(100, 100.0)})
    assert memory.advance(POOL, [A], {A: at(50, 150.0)}) == {}
    assert memory.advance(POOL, [A], {A: at(60, 250.0)}) == {A: (10.0,)}


def test_pools_are_apart_and_forgotten_on_their_own() -> None:
    memory = CounterMemory()
    memory.advance(POOL, [A], {A: at(0, 0.0)})
    memory.advance(OTHER, [A], {A: at(5, 1000.0)})  # the same URL under another pool is another memory
    assert memory.advance(POOL, [A], {A: at(10, 100.0)}) == {A: (10.0,)}
    memory.forget(OTHER)
    assert memory.pools == 1 and memory.targets(OTHER) == ()
    memory.advance(POOL, [], {})
    assert memory.pools == 0  # a pool listing nothing keeps nothing


@pytest.mark.parametrize("listed", [[A, A], [A]])
def test_a_target_listed_twice_is_one(listed: list[str]) -> None:
    memory = CounterMemory()
    memory.advance(POOL, listed, {A: at(0, 0.0)})
    assert memory.advance(POOL, listed, {A: at(2, 10.0)}) == {A: (5.0,)}


# --- increases (a histogram's buckets) ------------------------------------------------------------

def bucket_sample(seconds: float, *counts: float, bounds: tuple[float, ...] = (1.0, 2.5, float("inf")),
                  created: float | None = None) -> CounterSample:
    return CounterSample(T0 + timedelta(seconds=seconds), counts, created, keys=bounds)


def test_increases_are_the_deltas_under_the_same_rules_as_rates() -> None:
    assert counter_increases(bucket_sample(0, 3.0, 5.0, 6.0), bucket_sample(5, 4.0, 9.0, 12.0)) == (1.0, 4.0, 6.0)
    assert counter_increases(bucket_sample(0, 3.0, 5.0, 6.0), bucket_sample(5, 1.0, 2.0, 2.0)) is None  # a reset
    assert counter_increases(bucket_sample(0, 3.0, 5.0, 6.0, created=1.0),
                             bucket_sample(5, 4.0, 9.0, 12.0, created=2.0)) is None  # restarted, and counted past
    assert counter_increases(bucket_sample(0, 3.0, 5.0, 6.0), bucket_sample(0, 4.0, 9.0, 12.0)) is None  # no time


def test_samples_of_other_buckets_give_no_increase() -> None:
    other_bounds = bucket_sample(5, 4.0, 9.0, 12.0, bounds=(0.5, 2.5, float("inf")))
    assert counter_increases(bucket_sample(0, 3.0, 5.0, 6.0), other_bounds) is None
    assert counter_rates(bucket_sample(0, 3.0, 5.0, 6.0), other_bounds) is None


def test_a_memory_of_increases() -> None:
    memory = CounterMemory(increases=True)
    assert memory.advance(POOL, [A], {A: bucket_sample(0, 3.0, 5.0, 6.0)}) == {}
    assert memory.advance(POOL, [A], {A: bucket_sample(10, 4.0, 9.0, 12.0)}) == {A: (1.0, 4.0, 6.0)}
    rates = CounterMemory()  # the same samples, as rates
    rates.advance(POOL, [A], {A: bucket_sample(0, 3.0, 5.0, 6.0)})
    assert rates.advance(POOL, [A], {A: bucket_sample(10, 4.0, 9.0, 12.0)}) == {A: (0.1, 0.4, 0.6)}
