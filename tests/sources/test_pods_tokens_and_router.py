"""The pods source's token rates (two scrapes of vLLM's counters) and the router's demand, over real HTTP
to fake vLLM replicas and a stand-in router serving the router's fixed metric names."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import openai
import pytest
from prometheus_client import generate_latest

from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals
from controller.sources.metrics.base import PoolTarget
from controller.sources.metrics.pods import InvalidExposition, PodsSource, parse_router_metrics, parse_vllm_metrics
from devkube.fakevllm import FakeVLLMFleet, FakeVLLMReplica
from tests.support.router_metrics import FakeRouterMetrics

__all__: list[str] = []

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOL = ("llm", "chat")


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def fleet() -> AsyncIterator[FakeVLLMFleet]:
    async with FakeVLLMFleet(3) as fleet:
        yield fleet


@pytest.fixture
async def router() -> AsyncIterator[FakeRouterMetrics]:
    async with FakeRouterMetrics() as router:
        yield router


async def read(source: PodsSource, now: datetime, endpoints: tuple[str, ...] = (),
               routers: tuple[str, ...] = ()) -> PoolSignals | MetricsProblem:
    return (await source.read([PoolTarget(POOL, endpoints, routers)], now=now))[POOL]


def signals_of(result: PoolSignals | MetricsProblem) -> PoolSignals:
    assert isinstance(result, PoolSignals), result
    return result


def tokens(signals: PoolSignals) -> tuple[float | None, float | None]:
    return signals.prompt_tokens_per_second, signals.generation_tokens_per_second


def demand(signals: PoolSignals) -> tuple[float | None, float | None, float | None]:
    return signals.router_arrivals_per_second, signals.router_in_flight, signals.router_spills_per_second


# --- parsing ------------------------------------------------------------------------------

def test_the_token_counters_are_summed_over_engines_with_their_created_time() -> None:
    replica = FakeVLLMReplica("127.0.0.1", 0, name="x")
    replica.set(engines=2, prompt_tokens=1001, generation_tokens=51)
    reading = parse_vllm_metrics(replica.exposition().decode())
    assert (reading.prompt_tokens, reading.generation_tokens) == (1001.0, 51.0)
    assert reading.counters_created == pytest.approx(replica._created)


def test_token_counters_are_matched_exactly_and_may_be_absent() -> None:
    text = ('vllm:num_requests_waiting{engine="0"} 1\n'
            'vllm:prompt_tokens_total_by_source{engine="0"} 999\n'  # a longer name is another metric
            'vllm:prompt_tokens_cached_total{engine="0"} 999\n')
    reading = parse_vllm_metrics(text)
    assert (reading.prompt_tokens, reading.generation_tokens, reading.counters_created) == (None, None, None)


def test_a_negative_or_nan_token_counter_is_invalid() -> None:
    with pytest.raises(InvalidExposition, match=r"prompt tokens \(vllm:prompt_tokens_total\) is -5"):
        parse_vllm_metrics('vllm:num_requests_waiting{engine="0"} 1\nvllm:prompt_tokens_total{engine="0"} -5\n')
    with pytest.raises(InvalidExposition, match=r"generation tokens .* is nan"):
        parse_vllm_metrics('vllm:num_requests_waiting{engine="0"} 1\nvllm:generation_tokens_total{engine="0"} NaN\n')


def test_token_counters_alone_are_not_vllm_load_metrics() -> None:
    with pytest.raises(InvalidExposition, match="none of vLLM's load metrics"):
        parse_vllm_metrics('vllm:prompt_tokens_total{engine="0"} 5\n')


def test_the_router_figures_are_summed_over_their_labels() -> None:
    router = FakeRouterMetrics()
    router.requests.labels("pool", "ok").inc(30)
    router.requests.labels("api", "ok").inc(8)
    router.requests.labels("pool", "error").inc(2)
    router.in_flight.labels("pool").set(3)
    router.in_flight.labels("api").set(1)
    router.spills.labels("status_429").inc(5)
    router.spills.labels("budget").inc(3)
    reading = parse_router_metrics(generate_latest(router.registry).decode())
    assert (reading.requests, reading.in_flight, reading.spills) == (40.0, 4.0, 8.0)
    assert reading.counters_created is not None and math.isfinite(reading.counters_created)


def test_only_the_tokens_sent_to_the_api_are_read_from_the_router() -> None:
    router = FakeRouterMetrics()
    router.requests.labels("api", "ok").inc(4)
    router.prompt_tokens.labels("api").inc(1200)
    router.prompt_tokens.labels("pool").inc(9000)  # the pool's own tokens come from vLLM, not from here
    router.generation_tokens.labels("api").inc(300)
    reading = parse_router_metrics(generate_latest(router.registry).decode())
    assert (reading.api_prompt_tokens, reading.api_generation_tokens) == (1200.0, 300.0)
    no_tokens = parse_router_metrics('poolpilot_router_in_flight{backend="pool"} 1\n')
    assert (no_tokens.api_prompt_tokens, no_tokens.api_generation_tokens) == (None, None)
    with pytest.raises(InvalidExposition, match=r"API prompt tokens .* is -2"):
        parse_router_metrics('poolpilot_router_in_flight{backend="pool"} 1\n'
                             'poolpilot_router_prompt_tokens_total{backend="api"} -2\n')
    with pytest.raises(InvalidExposition, match="none of the router's metrics"):  # tokens alone are not demand
        parse_router_metrics('poolpilot_router_prompt_tokens_total{backend="api"} 2\n')


def test_a_declared_family_without_series_is_zero_and_an_undeclared_one_is_none() -> None:
    text = ("# HELP poolpilot_router_requests_total Requests.\n# TYPE poolpilot_router_requests_total counter\n"
            "# HELP poolpilot_router_in_flight In flight.\n# TYPE poolpilot_router_in_flight gauge\n")
    reading = parse_router_metrics(text)
    assert (reading.requests, reading.in_flight, reading.spills) == (0.0, 0.0, None)


@pytest.mark.parametrize(("text", "match"), [
    ('vllm:num_requests_waiting{engine="0"} 1\n', "none of the router's metrics"),
    ("<html>502</html>\n", "not the Prometheus text format"),
    ('poolpilot_router_in_flight{backend="pool"} -1\n', "requests in flight .* is -1"),
    ('poolpilot_router_requests_total{backend="pool",outcome="ok"} NaN\n', "requests .* is nan"),
])
def test_what_is_not_the_routers_metrics_is_refused(text: str, match: str) -> None:
    with pytest.raises(InvalidExposition, match=match):
        parse_router_metrics(text)


# --- token rates over HTTP ----------------------------------------------------------------

async def test_token_rates_from_two_scrapes_summed_over_replicas(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, _ = fleet.replicas
    endpoints = (a.url, b.url)
    a.set(prompt_tokens=1000, generation_tokens=200, engines=2)
    b.set(prompt_tokens=0, generation_tokens=0)
    first = signals_of(await read(source, T0, endpoints))
    assert tokens(first) == (None, None)  # one sample: no rate yet
    assert first.queue_depth == 0.0  # and the rest as ever
    a.set(prompt_tokens=1600, generation_tokens=500, engines=2)  # +600, +300 in 10 s
    b.set(prompt_tokens=400, generation_tokens=0)  # +400, +0
    assert tokens(signals_of(await read(source, later(10), endpoints))) == (100.0, 30.0)
    b.set(prompt_tokens=500, generation_tokens=50)  # a: unchanged; b: +100, +50 in 5 s
    assert tokens(signals_of(await read(source, later(15), endpoints))) == (20.0, 10.0)


async def test_served_tokens_show_in_the_rates(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    """The fake counts what it serves (prompt at admission, one generation token per token sent)."""
    replica = fleet.replicas[0]
    signals_of(await read(source, T0, (replica.url,)))
    client = openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0)
    try:
        answer = await client.completions.create(model=replica.model_name, prompt="x" * 400, max_tokens=8)
    finally:
        await client.close()
    assert answer.usage is not None
    rates = tokens(signals_of(await read(source, later(2), (replica.url,))))
    assert rates == (answer.usage.prompt_tokens / 2, answer.usage.completion_tokens / 2) == (50.0, 4.0)


async def test_a_counter_reset_gives_no_rate_for_that_replica(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, _ = fleet.replicas
    endpoints = (a.url, b.url)
    a.set(prompt_tokens=5000, generation_tokens=900)
    b.set(prompt_tokens=100, generation_tokens=10)
    await read(source, T0, endpoints)
    a.set(prompt_tokens=40, generation_tokens=2)  # restarted
    b.set(prompt_tokens=300, generation_tokens=30)
    assert tokens(signals_of(await read(source, later(10), endpoints))) == (20.0, 2.0)  # b's alone
    a.set(prompt_tokens=140, generation_tokens=12)  # counting again from its new start
    b.set(prompt_tokens=300, generation_tokens=30)
    assert tokens(signals_of(await read(source, later(20), endpoints))) == (10.0, 1.0)


async def test_a_replica_gone_is_forgotten(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, _ = fleet.replicas
    a.set(prompt_tokens=100)
    b.set(prompt_tokens=100)
    await read(source, T0, (a.url, b.url))
    assert tokens(signals_of(await read(source, later(10), (a.url,))))[0] == 0.0
    assert source.replica_counters.targets(POOL) == (a.url,)
    b.set(prompt_tokens=10_000)  # back, say a new pod at the same address: a first sample, not a rate from 100
    assert tokens(signals_of(await read(source, later(20), (a.url, b.url))))[0] == 0.0
    source.forget(POOL)
    assert source.replica_counters.pools == 0
    assert tokens(signals_of(await read(source, later(30), (a.url, b.url)))) == (None, None)


async def test_a_replica_that_fails_once_rates_over_the_longer_gap(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, _ = fleet.replicas
    a.set(prompt_tokens=0)
    b.set(prompt_tokens=0)
    await read(source, T0, (a.url, b.url))
    await b.stop()
    assert tokens(signals_of(await read(source, later(10), (a.url, b.url))))[0] == 0.0
    await b.start()
    b.set(prompt_tokens=2000)
    assert tokens(signals_of(await read(source, later(20), (a.url, b.url))))[0] == 100.0  # 2000 over 20 s


# --- the router ---------------------------------------------------------------------------

async def test_router_figures_from_two_scrapes(fleet: FakeVLLMFleet, router: FakeRouterMetrics,
                                               source: PodsSource) -> None:
    replica = fleet.replicas[0]
    replica.set(waiting=3)
    router.requests.labels("pool", "ok").inc(100)
    router.in_flight.labels("pool").set(6)
    router.spills.labels("status_429").inc(4)
    first = signals_of(await read(source, T0, (replica.url,), (router.url,)))
    assert demand(first) == (None, 6.0, None)  # in flight is a gauge: known at once
    assert first.queue_depth == 3.0
    router.requests.labels("pool", "ok").inc(40)
    router.requests.labels("api", "ok").inc(15)
    router.requests.labels("api", "error").inc(5)  # 60 answered in 4 s
    router.spills.labels("status_429").inc(6)
    router.spills.labels("full").inc(2)  # a reason seen for the first time: 8 spills in 4 s
    router.in_flight.labels("api").set(2)
    second = signals_of(await read(source, later(4), (replica.url,), (router.url,)))
    assert demand(second) == (15.0, 8.0, 2.0)
    assert source.last_round.requests == 2 and source.last_round.failed_requests == 0


async def test_the_tokens_sent_to_the_api_per_second_from_two_scrapes(router: FakeRouterMetrics,
                                                                      source: PodsSource) -> None:
    router.requests.labels("api", "ok").inc(10)
    router.prompt_tokens.labels("api").inc(5000)
    router.generation_tokens.labels("api").inc(1000)
    first = signals_of(await read(source, T0, routers=(router.url,)))  # at zero replicas: the router's reading
    assert (first.router_api_prompt_tokens_per_second, first.router_api_generation_tokens_per_second) == (None, None)
    router.prompt_tokens.labels("api").inc(1500)  # 150 per second over 10 s
    router.generation_tokens.labels("api").inc(500)
    router.prompt_tokens.labels("pool").inc(99_000)  # served by the pool: not the API's
    second = signals_of(await read(source, later(10), routers=(router.url,)))
    assert (second.router_api_prompt_tokens_per_second, second.router_api_generation_tokens_per_second) == (
        150.0, 50.0)
    assert tokens(second) == (None, None)  # vLLM's own rates stay vLLM's


async def test_the_router_pods_are_summed(router: FakeRouterMetrics, source: PodsSource) -> None:
    async with FakeRouterMetrics() as other:
        for pod, count in ((router, 10), (other, 30)):
            pod.requests.labels("pool", "ok").inc(count)
            pod.in_flight.labels("pool").set(count / 10)
        await read(source, T0, routers=(router.url, other.url))
        router.requests.labels("pool", "ok").inc(20)
        other.requests.labels("pool", "ok").inc(40)
        assert demand(signals_of(await read(source, later(10), routers=(router.url, other.url)))) == (6.0, 4.0, 0.0)


async def test_at_zero_replicas_the_router_is_the_reading(router: FakeRouterMetrics, source: PodsSource) -> None:
    router.in_flight.labels("api").set(2)
    router.requests.labels("api", "ok").inc(10)
    router.spills.labels("no_replicas").inc(10)
    first = signals_of(await read(source, T0, routers=(router.url,)))
    assert (first.queue_depth, first.running_requests, first.kv_cache_utilization) == (None, None, None)
    assert tokens(first) == (None, None) and first.replicas_reporting == 0
    assert demand(first) == (None, 2.0, None)
    router.requests.labels("api", "ok").inc(20)
    router.spills.labels("no_replicas").inc(20)
    assert demand(signals_of(await read(source, later(10), routers=(router.url,)))) == (2.0, 2.0, 2.0)


async def test_no_spills_yet_is_zero(router: FakeRouterMetrics, source: PodsSource) -> None:
    router.requests.labels("pool", "ok").inc(1)
    await read(source, T0, routers=(router.url,))
    router.requests.labels("pool", "ok").inc(9)
    assert demand(signals_of(await read(source, later(3), routers=(router.url,)))) == (3.0, 0.0, 0.0)


async def test_a_router_restart_gives_no_rate_this_time(router: FakeRouterMetrics, source: PodsSource) -> None:
    router.requests.labels("pool", "ok").inc(5)
    await read(source, T0, routers=(router.url,))
    router.restart()  # counters from zero; and new _created times even if they had grown past the old values
    router.requests.labels("pool", "ok").inc(50)
    assert demand(signals_of(await read(source, later(5), routers=(router.url,)))) == (None, 0.0, None)
    router.requests.labels("pool", "ok").inc(10)
    assert demand(signals_of(await read(source, later(10), routers=(router.url,))))[0] == 2.0


async def test_a_router_that_fails_leaves_its_figures_out_not_the_pool(
        fleet: FakeVLLMFleet, router: FakeRouterMetrics, source: PodsSource, caplog: pytest.LogCaptureFixture) -> None:
    replica = fleet.replicas[0]
    replica.set(waiting=4, prompt_tokens=10)
    await router.stop()
    with caplog.at_level(logging.WARNING, logger="controller.sources.metrics.pods"):
        signals = signals_of(await read(source, T0, (replica.url,), (router.url,)))
    assert signals.queue_depth == 4.0 and demand(signals) == (None, None, None)
    assert source.last_round.failed_requests == 1
    assert "1 of 1 router pods did not answer" in caplog.text


async def test_a_vllm_replica_listed_as_the_router_is_refused_as_the_routers(
        fleet: FakeVLLMFleet, source: PodsSource) -> None:
    replica = fleet.replicas[0]
    signals = signals_of(await read(source, T0, (replica.url,), (replica.url,)))
    assert demand(signals) == (None, None, None) and signals.replicas_reporting == 1
    assert source.last_round.requests == 2 and source.last_round.failed_requests == 1


async def test_zero_replicas_and_no_router_answer_is_no_ready_replicas(router: FakeRouterMetrics,
                                                                        source: PodsSource) -> None:
    await router.stop()
    problem = await read(source, T0, routers=(router.url,))
    assert isinstance(problem, MetricsProblem) and problem.kind is MetricsProblemKind.NO_READY_REPLICAS
    assert "router did not answer" in problem.message
    plain = await read(source, T0)
    assert isinstance(plain, MetricsProblem) and plain.kind is MetricsProblemKind.NO_READY_REPLICAS
    assert "router" not in plain.message


async def test_replicas_all_failing_stay_a_problem_even_with_a_router(
        fleet: FakeVLLMFleet, router: FakeRouterMetrics, source: PodsSource) -> None:
    replica = fleet.replicas[0]
    await replica.stop()
    problem = await read(source, T0, (replica.url,), (router.url,))
    assert isinstance(problem, MetricsProblem) and problem.kind is MetricsProblemKind.UNREACHABLE
