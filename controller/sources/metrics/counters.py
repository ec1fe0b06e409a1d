"""Rates (or increases) from two scrapes of a counter, for the pods source (Prometheus forms its own with
``rate()`` and ``increase()``).

A scraped target (a vLLM replica, a router pod) is known by its URL. For each pool the memory keeps the
latest sample of each target it lists, and nothing else: a target the pool no longer lists is forgotten,
so memory is bounded by what the pools list. A target that failed this round keeps its earlier sample
(the next good scrape forms a rate over the longer gap).

No rate is formed for a target (this round) when:

- it has no earlier sample (a new replica);
- a counter went down, or the counters' ``_created`` time changed: the process restarted, and what
  it counted before is gone (a restart that counted past the old value within one round is caught by
  ``_created``, which prometheus_client exposes unless disabled);
- the samples count different things (their ``keys`` differ: a histogram's bucket bounds changed);
- the caller's clock did not advance (the same ``now`` twice: the earlier sample is kept) or went back
  (the new sample starts over).

The times are the caller's ``now`` of each round (the scrapes of a round run concurrently, at about
that time), so a test can hand-compute every rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from controller.core.signals import PoolKey

__all__ = ["CounterMemory", "CounterSample", "counter_increases", "counter_rates", "summed_rates"]

Rates = tuple[float | None, ...]


@dataclass(frozen=True)
class CounterSample:
    at: datetime  # the caller's clock at the round that took it
    values: tuple[float | None, ...]  # one per counter, in a fixed order; None: the target does not expose it
    created: float | None = None  # the counters' earliest _created (seconds since the epoch), if exposed
    keys: tuple[float, ...] = ()  # what each value counts, when that varies (a histogram's bucket bounds)


def counter_increases(before: CounterSample, after: CounterSample) -> Rates | None:
    """How much each counter grew from ``before`` to ``after`` (None for one not in both); None if nothing
    can be formed at all (a restart, no time between them, or samples of different things)."""
    elapsed = (after.at - before.at).total_seconds()
    if elapsed <= 0 or len(before.values) != len(after.values) or before.keys != after.keys:
        return None
    if before.created is not None and after.created is not None and before.created != after.created:
        return None
    pairs = list(zip(before.values, after.values, strict=True))
    if any(old is not None and new is not None and new < old for old, new in pairs):
        return None
    return tuple(None if old is None or new is None else new - old for old, new in pairs)


def counter_rates(before: CounterSample, after: CounterSample) -> Rates | None:
    """Per-second rates from ``before`` to ``after``, per counter (None for one not in both); None if no
    rate can be formed at all (a restart, or no time between them)."""
    increases = counter_increases(before, after)
    if increases is None:
        return None
    elapsed = (after.at - before.at).total_seconds()
    return tuple(None if increase is None else increase / elapsed for increase in increases)


def summed_rates(rates: Iterable[Rates], counters: int) -> Rates:
    """Per counter, the sum over the targets that have a rate for it; None where none has."""
    columns: list[list[float]] = [[] for _ in range(counters)]
    for row in rates:
        for column, value in zip(columns, row, strict=True):
            if value is not None:
                column.append(value)
    return tuple(math.fsum(column) if column else None for column in columns)


class CounterMemory:
    """The latest counter sample of each target, per pool. ``advance`` gives per-second rates, or with
    ``increases=True`` how much each counter grew (what a histogram's buckets are read as)."""

    def __init__(self, *, increases: bool = False) -> None:
        self._by_pool: dict[PoolKey, dict[str, CounterSample]] = {}
        self._form = counter_increases if increases else counter_rates

    def advance(self, pool: PoolKey, listed: Sequence[str], samples: Mapping[str, CounterSample]) -> dict[str, Rates]:
        """Take this round's ``samples`` of the pool's ``listed`` targets; the rates (or increases) of those
        that have one."""
        previous = self._by_pool.get(pool, {})
        kept: dict[str, CounterSample] = {}
        rates: dict[str, Rates] = {}
        for target in dict.fromkeys(listed):
            before, after = previous.get(target), samples.get(target)
            if after is None:  # not scraped this round (it failed): keep what we had
                if before is not None:
                    kept[target] = before
                continue
            if before is None:
                kept[target] = after
                continue
            if after.at == before.at:  # the same round's time again: keep the first, no rate
                kept[target] = before
                continue
            kept[target] = after
            found = self._form(before, after)
            if found is not None:
                rates[target] = found
        if kept:
            self._by_pool[pool] = kept
        else:
            self._by_pool.pop(pool, None)
        return rates

    def forget(self, pool: PoolKey) -> None:
        self._by_pool.pop(pool, None)

    def targets(self, pool: PoolKey) -> tuple[str, ...]:
        """The targets with a sample kept for ``pool`` (for tests and debugging)."""
        return tuple(self._by_pool.get(pool, {}))

    @property
    def pools(self) -> int:
        return len(self._by_pool)
