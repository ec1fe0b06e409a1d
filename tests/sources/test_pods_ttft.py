"""The pods source's TTFT histogram: vllm:time_to_first_token_seconds_bucket from two scrapes of each replica,
summed over engines and replicas, over real HTTP to fake vLLM replicas (and, for a restart and an odd bucket
layout, to a server of fixed bodies)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from controller.core.signals import Histogram, PoolSignals, ttft_quantile
from controller.sources.metrics.base import PoolTarget
from controller.sources.metrics.pods import InvalidExposition, PodsSource, parse_vllm_metrics
from devkube.fakevllm import CONTENT_TYPE, TTFT_BUCKETS, FakeVLLMFleet, FakeVLLMReplica

__all__: list[str] = []

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOL = ("llm", "chat")
BOUNDS = (*TTFT_BUCKETS, math.inf)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cumulative(observations: Iterable[float]) -> Histogram:
    """What vLLM's buckets count for these observations, by hand."""
    seen = list(observations)
    return tuple((bound, float(sum(1 for s in seen if s <= bound))) for bound in BOUNDS)


@pytest.fixture
async def fleet() -> AsyncIterator[FakeVLLMFleet]:
    async with FakeVLLMFleet(2) as fleet:
        yield fleet


async def ttft_of(source: PodsSource, now: datetime, endpoints: tuple[str, ...]) -> Histogram | None:
    result = (await source.read([PoolTarget(POOL, endpoints)], now=now))[POOL]
    assert isinstance(result, PoolSignals), result
    return result.ttft_histogram


# --- parsing ------------------------------------------------------------------------------

def test_the_buckets_are_summed_over_engines_with_their_created_time() -> None:
    replica = FakeVLLMReplica("127.0.0.1", 0, name="parse")
    replica.set(engines=2)
    replica.observe_ttft(0.03, 0.3, 3.0, 30.0, 3000.0)  # round-robin: engine 0 gets 0.03, 3.0, 3000
    reading = parse_vllm_metrics(replica.exposition().decode())
    assert reading.ttft_buckets == cumulative([0.03, 0.3, 3.0, 30.0, 3000.0])
    assert reading.ttft_buckets is not None and reading.ttft_buckets[-1] == (math.inf, 5.0)
    assert dict(reading.ttft_buckets)[0.04] == 1.0 and dict(reading.ttft_buckets)[2560.0] == 4.0
    assert reading.ttft_created == pytest.approx(replica._created)


def test_a_body_without_the_histogram_has_none() -> None:
    assert parse_vllm_metrics('vllm:num_requests_waiting{engine="0"} 4\n').ttft_buckets is None


@pytest.mark.parametrize(("bucket", "match"), [
    ('{engine="0",le="1.0"} NaN', "TTFT requests up to 1 s"),
    ('{engine="0",le="+Inf"} -3', "TTFT requests up to inf s"),
    ('{engine="0",le="soon"} 3', "no numeric le label"),
    ('{engine="0"} 3', "no numeric le label"),
])
def test_a_bad_bucket_makes_the_replica_invalid_as_a_bad_counter_does(bucket: str, match: str) -> None:
    text = f'vllm:num_requests_waiting{{engine="0"}} 4\nvllm:time_to_first_token_seconds_bucket{bucket}\n'
    with pytest.raises(InvalidExposition, match=match):
        parse_vllm_metrics(text)


# --- two scrapes over HTTP ------------------------------------------------------------------

async def test_the_histogram_is_the_requests_between_two_scrapes_summed_over_replicas(
        fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b = fleet.replicas
    endpoints = (a.url, b.url)
    a.set(engines=2)
    a.observe_ttft(9.0, 9.0)  # before the first scrape: never counted in a window
    assert await ttft_of(source, T0, endpoints) is None  # one sample: nothing to tell yet
    a.observe_ttft(0.03, 0.3, 3.0)
    b.observe_ttft(0.3, 7.0)
    second = await ttft_of(source, later(5), endpoints)
    assert second == cumulative([0.03, 0.3, 3.0, 0.3, 7.0])
    assert second is not None and dict(second)[0.5] == 3.0 and dict(second)[5.0] == 4.0 and second[-1][1] == 5.0
    quiet = await ttft_of(source, later(10), endpoints)  # no request since: zeros, not None (and not read)
    assert quiet == cumulative([])
    b.observe_ttft(*[0.3] * 10, *[3.0] * 10)
    busy = await ttft_of(source, later(15), endpoints)
    assert busy == cumulative([*[0.3] * 10, *[3.0] * 10])
    assert ttft_quantile(busy, 95) == pytest.approx(2.5 + 2.5 * 9 / 10)  # rank 19: 9 of the (2.5, 5] bucket's 10


async def test_a_replica_gone_or_a_pool_forgotten_starts_over(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b = fleet.replicas
    await ttft_of(source, T0, (a.url, b.url))
    b.observe_ttft(1.5)
    assert await ttft_of(source, later(5), (a.url,)) == cumulative([])  # b is not listed: a's alone
    b.observe_ttft(0.7)
    assert await ttft_of(source, later(10), (a.url, b.url)) == cumulative([])  # b again: a first sample
    assert source.ttft_counters.targets(POOL) == (a.url, b.url)
    source.forget(POOL)
    assert source.ttft_counters.pools == 0
    assert await ttft_of(source, later(15), (a.url, b.url)) is None
    await source.read([PoolTarget(POOL, ())], now=later(20))  # no ready replica: nothing kept
    assert source.ttft_counters.pools == 0


class _Bodies:
    """A replica whose /metrics body the test sets."""

    def __init__(self) -> None:
        self.body = ""
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.body.encode(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


@pytest.fixture
async def served() -> AsyncIterator[_Bodies]:
    bodies = _Bodies()
    await bodies.start()
    yield bodies
    assert bodies.runner is not None
    await bodies.runner.cleanup()


def process(*observations: float) -> FakeVLLMReplica:
    """A new vLLM process (its own _created) having seen ``observations``; never served, only rendered."""
    replica = FakeVLLMReplica("127.0.0.1", 0, name="process")
    replica.observe_ttft(*observations)
    return replica


async def test_a_restart_gives_no_increase_for_that_replica(fleet: FakeVLLMFleet, served: _Bodies,
                                                            source: PodsSource) -> None:
    steady = fleet.replicas[0]
    endpoints = (steady.url, served.url)
    served.body = process(*[0.3] * 30).exposition().decode()
    await ttft_of(source, T0, endpoints)
    restarted = process(*[0.3] * 40)  # a new _created, and counted past the old 30 already
    served.body = restarted.exposition().decode()
    steady.observe_ttft(3.0)
    assert await ttft_of(source, later(5), endpoints) == cumulative([3.0])  # the steady replica's alone
    restarted.observe_ttft(0.3, 0.3)
    served.body = restarted.exposition().decode()
    assert await ttft_of(source, later(10), endpoints) == cumulative([0.3, 0.3])  # counting from its new start


async def test_replicas_with_other_buckets_are_summed_by_bound(fleet: FakeVLLMFleet, served: _Bodies,
                                                              source: PodsSource) -> None:
    vllm = fleet.replicas[0]

    def coarse(up_to_1: float, total: float) -> str:  # an older build, say, with two buckets
        return (f'vllm:num_requests_waiting{{engine="0"}} 0\n'
                f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="1.0"}} {up_to_1}\n'
                f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf"}} {total}\n')

    served.body = coarse(0, 0)
    await ttft_of(source, T0, (vllm.url, served.url))
    served.body = coarse(6, 10)
    vllm.observe_ttft(*[3.0] * 10)
    summed = await ttft_of(source, later(5), (vllm.url, served.url))
    assert summed is not None
    assert dict(summed) == {**dict(cumulative([3.0] * 10)), 1.0: 6.0, math.inf: 20.0}  # le 1: 0 + 6; +Inf: 10 + 10
    # Cumulative counts by bound no longer rise everywhere (0 at 2.5 s after 6 at 1 s): read as Prometheus would,
    # 6 at 2.5 s; then rank 8 of 20 is 2 of the (2.5, 5] bucket's 4.
    assert ttft_quantile(summed, 40) == pytest.approx(2.5 + 2.5 * 2 / 4)
