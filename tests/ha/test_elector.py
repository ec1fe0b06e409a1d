"""The leader elector (controller/leader.py) against the embedded API server's Leases.

The candidates' monotonic clocks are test doubles where a test is about time: a candidate takes over
when the record has not changed for the lease duration on ITS clock, whatever the record's times say.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kmock
import pytest

from controller.kube.client import build_api_client
from controller.kube.lease import LeaseApi
from controller.leader import ElectionTimings, LeaderElector
from devkube.cluster import DevCluster

NAMESPACE = "poolpilot-system"
LEASES = "coordination.k8s.io/v1/leases"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/poolpilot"
TIMINGS = ElectionTimings(lease_duration_seconds=8, renew_deadline_seconds=6, retry_period_seconds=1.5)


class Clock:
    """A monotonic clock that moves when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def cluster() -> AsyncIterator[DevCluster]:
    async with DevCluster(namespaces=["default", NAMESPACE], nodes=()) as running:
        yield running


@pytest.fixture
def leases(cluster: DevCluster) -> Iterator[list[LeaseApi]]:
    made: list[LeaseApi] = []
    yield made
    for api in made:
        api.close()


def candidate(cluster: DevCluster, leases: list[LeaseApi], identity: str, *, clock: Clock | None = None,
              timings: ElectionTimings = TIMINGS, wall_clock: Any = None) -> LeaderElector:
    api = LeaseApi(build_api_client(str(cluster.kubeconfig_path), agent=f"poolpilot/test ({identity})"),
                   NAMESPACE, "poolpilot")
    leases.append(api)
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    if wall_clock is not None:
        options["wall_clock"] = wall_clock
    return LeaderElector(api, identity, timings, **options)


def lease(cluster: DevCluster) -> dict[str, Any]:
    found = cluster.get(LEASES, NAMESPACE, "poolpilot")
    assert found is not None
    return found


async def attempt(elector: LeaderElector) -> bool:
    return await elector.try_acquire_or_renew(timeout_seconds=5)


async def test_the_first_candidate_creates_the_lease_and_renews_it(cluster: DevCluster,
                                                                  leases: list[LeaseApi]) -> None:
    clock = Clock()
    a = candidate(cluster, leases, "a", clock=clock)
    assert not a.is_leading()
    await asyncio.wait_for(a.acquire(), 5)
    assert a.is_leading() and a.leader == "a"
    created = lease(cluster)
    spec = created["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("a", 8, 0)
    # MicroTimes, as the server stores them: six fractional digits, UTC.
    assert spec["renewTime"].endswith("Z") and len(spec["renewTime"]) == len("2026-12-03T12:00:00.123456Z")
    clock.advance(1.5)
    assert await attempt(a)
    renewed = lease(cluster)
    assert renewed["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert renewed["spec"]["acquireTime"] == spec["acquireTime"] and renewed["spec"]["renewTime"] != spec["renewTime"]
    writes = [(w.method, w.status) for w in cluster.writes(resource="leases")]
    assert writes == [("POST", 201), ("PUT", 200)]  # the renewal took the fast path: no read before it
    assert all("(a)" in w.user_agent for w in cluster.writes(resource="leases"))


async def test_the_leader_stops_leading_locally_when_it_has_not_renewed_within_the_deadline(
        cluster: DevCluster, leases: list[LeaseApi]) -> None:
    clock = Clock()
    a = candidate(cluster, leases, "a", clock=clock)
    assert await attempt(a)
    clock.advance(5.9)
    assert a.is_leading()
    clock.advance(0.2)  # 6.1 s without a renewal: no request needed to know
    assert not a.is_leading()


async def test_a_second_candidate_waits_for_the_lease_duration_on_its_own_clock(
        cluster: DevCluster, leases: list[LeaseApi]) -> None:
    # The leader's wall clock is a day behind: the renewTime it writes says the lease expired long ago.
    # The standby must not believe it: only a record unchanged for 8 s of its own time counts.
    a = candidate(cluster, leases, "a", clock=Clock(),
                  wall_clock=lambda: datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    b_clock = Clock()
    b = candidate(cluster, leases, "b", clock=b_clock)
    assert await attempt(a)
    assert not await attempt(b) and b.leader == "a" and not b.is_leading()
    b_clock.advance(7.9)
    assert not await attempt(b)
    assert await attempt(a)  # a renews: at its next look, b sees the record change and counts again
    assert not await attempt(b)
    b_clock.advance(7.9)
    assert not await attempt(b)
    b_clock.advance(0.2)
    assert await attempt(b) and b.is_leading()
    spec = lease(cluster)["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    assert spec["acquireTime"] == spec["renewTime"]
    # a's renewal now meets b's write: 409 on its PUT, then it reads the Lease and sees b.
    assert not await attempt(a)
    assert a.leader == "b" and not a.is_leading()
    assert [w.status for w in cluster.writes(resource="leases", user_agent="(a)")][-1] == 409


async def test_two_candidates_at_once_one_wins(cluster: DevCluster, leases: list[LeaseApi]) -> None:
    electors = [candidate(cluster, leases, name) for name in "abcd"]
    results = await asyncio.gather(*(attempt(e) for e in electors))
    assert sum(results) == 1
    (winner,) = [e for e, won in zip(electors, results, strict=True) if won]
    assert lease(cluster)["spec"]["holderIdentity"] == winner.identity
    assert [e.identity for e in electors if e.is_leading()] == [winner.identity]


async def test_a_release_lets_the_standby_take_over_at_once(cluster: DevCluster, leases: list[LeaseApi]) -> None:
    a = candidate(cluster, leases, "a")
    b = candidate(cluster, leases, "b", clock=Clock())
    assert await attempt(a)
    assert not await attempt(b)
    assert await a.release()
    assert not a.is_leading()
    spec = lease(cluster)["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("", 1, 0)
    assert await attempt(b)  # no time passed on b's clock: an empty holder is free
    assert lease(cluster)["spec"]["leaseTransitions"] == 1
    assert await a.release()  # not the holder: nothing to give up, nothing written
    assert lease(cluster)["spec"]["holderIdentity"] == "b"


async def test_a_conflict_on_renewal_is_resolved_by_reading_the_lease_again(
        cluster: DevCluster, leases: list[LeaseApi]) -> None:
    a = candidate(cluster, leases, "a")
    assert await attempt(a)
    # Someone else changes the Lease without taking it (kubectl annotate): a's copy is stale now.
    cluster.put_object(LEASES, {**lease(cluster), "metadata": {**lease(cluster)["metadata"],
                                                               "annotations": {"note": "x"}}})
    mark = cluster.mark()
    assert await attempt(a) and a.is_leading()
    assert [(w.method, w.status) for w in cluster.writes(mark, resource="leases")] == [("PUT", 409), ("PUT", 200)]
    assert lease(cluster)["metadata"]["annotations"] == {"note": "x"}  # kept by the renewal


async def test_keep_renewing_reports_the_loss_to_another_holder_at_once(
        cluster: DevCluster, leases: list[LeaseApi]) -> None:
    timings = ElectionTimings(lease_duration_seconds=2, renew_deadline_seconds=1.5, retry_period_seconds=0.2)
    a = candidate(cluster, leases, "a", timings=timings)
    assert await attempt(a)
    taken = lease(cluster)
    cluster.put_object(LEASES, {**taken, "spec": {**taken["spec"], "holderIdentity": "intruder"}})
    reason = await asyncio.wait_for(a.keep_renewing(), 2)
    assert "intruder" in reason and not a.is_leading()


async def test_keep_renewing_gives_up_when_it_cannot_renew_within_the_deadline(
        cluster: DevCluster, leases: list[LeaseApi]) -> None:
    timings = ElectionTimings(lease_duration_seconds=2, renew_deadline_seconds=1.5, retry_period_seconds=0.2)
    a = candidate(cluster, leases, "a", timings=timings)
    assert await attempt(a)
    cluster.emulator[kmock.method.PUT] << 503
    cluster.emulator[kmock.method.GET, LEASE_PATH] << 503
    started = asyncio.get_running_loop().time()
    reason = await asyncio.wait_for(a.keep_renewing(), 5)
    assert "within 1.5 s" in reason and not a.is_leading()
    assert asyncio.get_running_loop().time() - started < 1.5 + 0.2 + 0.5
    assert len(cluster.writes(resource="leases", method="PUT", succeeded=False)) >= 2  # it kept trying


def test_timings_are_checked_as_client_go_checks_them() -> None:
    with pytest.raises(ValueError, match="greater than the renew deadline"):
        ElectionTimings(lease_duration_seconds=6, renew_deadline_seconds=6, retry_period_seconds=1)
    with pytest.raises(ValueError, match=r"1.2 x the retry period"):
        ElectionTimings(lease_duration_seconds=8, renew_deadline_seconds=2.4, retry_period_seconds=2)
