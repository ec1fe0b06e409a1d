"""Which replica, and pool or API: the pure decisions behind the proxy."""

from __future__ import annotations

from collections import Counter

import pytest

from controller.api.status import FallbackMode
from controller.router.picking import PoolLoad, Route, route, spill_after

A, B, C = "http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"


def test_least_outstanding_first() -> None:
    load = PoolLoad()
    for replica in (A, A, B):
        load.started(replica)
    assert load.pick((A, B, C)) == C
    load.started(C)
    load.started(C)
    assert load.pick((A, B, C)) == B  # A and C have two each, B one


def test_equal_loads_take_turns() -> None:
    load = PoolLoad()
    picks = Counter(load.pick((A, B, C)) for _ in range(9))
    assert picks == {A: 3, B: 3, C: 3}
    for replica in (A, B, C):
        load.started(replica)
    assert [load.pick((A, B, C)) for _ in range(3)] in ([A, B, C], [B, C, A], [C, A, B])


def test_finished_requests_free_the_replica_and_the_total() -> None:
    load = PoolLoad()
    load.started(A)
    load.started(A)
    load.started(B)
    load.finished(A)
    load.finished(B)
    assert load.outstanding == {A: 1} and load.total == 1
    load.finished(A)
    assert load.outstanding == {} and load.total == 0


def decide(mode: FallbackMode, replicas: tuple[str, ...], in_flight: int = 0, *, provider: bool = True) -> Route:
    load = PoolLoad()
    for index in range(in_flight):
        load.started(replicas[index % len(replicas)])
    return route(mode, replicas, load, budget_per_replica=2, has_provider=provider)


@pytest.mark.parametrize(("mode", "replicas", "in_flight", "provider", "backend", "reason"), [
    ("Off", (A,), 0, True, "pool", None),
    ("Off", (A,), 10, True, "pool", None),  # Off never spills, budget or not
    ("Off", (), 0, True, "none", None),
    ("Overflow", (A, B), 3, True, "pool", None),  # 1.5 per replica, under the budget of 2
    ("Overflow", (A, B), 4, True, "api", "budget"),  # 2 per replica: at the budget
    ("Overflow", (), 0, True, "api", "no_replicas"),
    ("Overflow", (A,), 5, False, "pool", None),  # no provider: the pool or nothing
    ("Overflow", (), 0, False, "none", None),
    ("Full", (A, B), 0, True, "api", "full"),
    ("Full", (A,), 0, False, "pool", None),
])
def test_route(mode: FallbackMode, replicas: tuple[str, ...], in_flight: int, provider: bool, backend: str,
               reason: str | None) -> None:
    decision = decide(mode, replicas, in_flight, provider=provider)
    assert (decision.backend, decision.reason) == (backend, reason)
    assert (decision.replica in replicas) if backend == "pool" else decision.replica is None


@pytest.mark.parametrize(("mode", "provider", "status", "reason"), [
    ("Overflow", True, 429, "status_429"),
    ("Overflow", True, 503, "status_503"),
    ("Overflow", True, None, "refused"),
    ("Overflow", True, 500, None),  # a failure of the request itself stands
    ("Overflow", True, 400, None),
    ("Overflow", True, 200, None),
    ("Overflow", False, 503, None),
    ("Off", True, 503, None),
    ("Off", True, None, None),
])
def test_spill_after_the_pool_answered(mode: FallbackMode, provider: bool, status: int | None,
                                       reason: str | None) -> None:
    spill = spill_after(mode, has_provider=provider, status=status)
    assert (spill.reason if spill else None) == reason
    assert spill is None or spill.backend == "api"
