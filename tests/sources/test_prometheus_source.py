"""The Prometheus source against the REAL Prometheus scraping fake vLLM replicas every second.

One Prometheus and one fleet for the module (Prometheus applies target changes at most
every 5 s, so targets are set once up front and only the last test removes one). The
binary is required: without it these tests fail, with the reason, rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolKey, PoolSignals, ttft_quantile
from controller.sources.metrics.base import MetricsSource, PoolTarget, SourceResults
from controller.sources.metrics.prometheus import PrometheusQueries, PrometheusSource, build_queries
from devkube.fakevllm import CONTENT_TYPE, TTFT_BUCKETS, FakeVLLMFleet, FakeVLLMReplica, KVMetric
from devkube.prometheus import PrometheusNotInstalled, PrometheusServer, ScrapeTarget
from tests.support.router_metrics import FakeRouterMetrics

__all__: list[str] = []

TEAM_A, TEAM_B = "team-a", "team-b"
MANY = [(TEAM_A, f"pool-{i:02d}") for i in range(20)]
MIXED = (TEAM_A, "mixed")  # two replicas: one data parallel on the current KV name, one on the legacy name
ZERO = (TEAM_B, "idle")
GONE = (TEAM_B, "gone")  # its target is removed by the last test
RATES = (TEAM_A, "rates")  # two replicas whose token counters grow at known rates
GAUGES_ONLY = (TEAM_B, "gauges-only")  # a replica that exposes no token counters
ROUTED = (TEAM_B, "routed")  # no vLLM replica, a router (labelled poolpilot_io_router) that sees demand
TTFT = (TEAM_A, "ttft")  # two replicas that only the TTFT increase test gives requests to
TTFT_WHOLE = (TEAM_A, "ttft-whole")  # two more, for the quantile on Prometheus' whole counts
# Per second, what RATES' replicas count: (prompt, generation) each. The second has two engines.
RATES_PER_REPLICA = [(100.0, 20.0), (50.0, 10.0)]
TICK_SECONDS = 0.02
Reading = PoolSignals | MetricsProblem


@dataclass
class Cluster:
    prom: PrometheusServer
    fleet: FakeVLLMFleet
    replicas: dict[PoolKey, list[FakeVLLMReplica]]
    targets: list[ScrapeTarget]


def _now() -> datetime:
    return datetime.now(UTC)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _gauges_only_replica() -> Iterator[str]:
    """A replica exposing vLLM's queue gauge only (a build without the token counters): its address."""
    registry = CollectorRegistry()
    Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", ["model_name", "engine"],
          registry=registry).labels("m", "0").set(2)
    def classic(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # The text format, as vLLM serves it (prometheus_client's OpenMetrics would turn ':' into '_' here).
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [generate_latest(registry)]

    server = make_server("127.0.0.1", 0, classic, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def _counting(replicas: Sequence[FakeVLLMReplica]) -> Iterator[None]:
    """Drive the replicas' token counters at RATES_PER_REPLICA from the wall clock (every TICK_SECONDS)."""
    stop = threading.Event()
    started = time.time()

    def tick() -> None:
        while not stop.wait(TICK_SECONDS):
            elapsed = time.time() - started
            for replica, (prompt, generation) in zip(replicas, RATES_PER_REPLICA, strict=True):
                replica.set(prompt_tokens=10_000 + prompt * elapsed, generation_tokens=10_000 + generation * elapsed)

    thread = threading.Thread(target=tick, name="token-counters", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    layout = [*[(key, 1) for key in MANY], (MIXED, 2), (ZERO, 1), (GONE, 1), (RATES, 2), (TTFT, 2), (TTFT_WHOLE, 2)]
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(FakeVLLMFleet.in_thread(sum(count for _, count in layout)))
        routed = stack.enter_context(FakeRouterMetrics.in_thread())
        mixed_router = stack.enter_context(FakeRouterMetrics.in_thread())
        gauges_only = stack.enter_context(_gauges_only_replica())
        try:
            prom = PrometheusServer(scrape_interval_seconds=1)
            prom.start()
        except PrometheusNotInstalled as e:
            pytest.fail(str(e))
        try:
            free = iter(fleet.replicas)
            replicas = {key: [next(free) for _ in range(count)] for key, count in layout}
            for index, key in enumerate(MANY):
                replicas[key][0].set(waiting=index, running=2 * index, kv=index / 40)
            replicas[MIXED][0].set(waiting=7, running=3, engines=2, kv=[0.2, 0.6])  # replica KV 0.4
            replicas[MIXED][1].set(waiting=1, running=1, kv=0.8, kv_metric=KVMetric.LEGACY)
            replicas[ZERO][0].set(waiting=0, running=0, kv=0.0)
            replicas[GONE][0].set(waiting=5, kv=0.5)
            replicas[RATES][1].set(engines=2)
            stack.enter_context(_counting(replicas[RATES]))
            # The router at zero replicas: 3 + 1 answered and 0.5 spilled per second, 5 in flight.
            routed.grow("poolpilot_router_requests", {"backend": "pool", "outcome": "ok"}, 3.0)
            routed.grow("poolpilot_router_requests", {"backend": "api", "outcome": "ok"}, 1.0)
            routed.grow("poolpilot_router_spills", {"reason": "no_replicas"}, 0.5)
            # What it sent to the API: 30 prompt and 10 generated tokens per second; the pool's tokens do not count.
            routed.grow("poolpilot_router_prompt_tokens", {"backend": "api"}, 30.0)
            routed.grow("poolpilot_router_generation_tokens", {"backend": "api"}, 10.0)
            routed.grow("poolpilot_router_prompt_tokens", {"backend": "pool"}, 500.0)
            routed.in_flight.labels("pool").set(3)
            routed.in_flight.labels("api").set(2)
            # MIXED's router: 2 answered per second, never a spill (so no spills series), 1 in flight.
            mixed_router.grow("poolpilot_router_requests", {"backend": "pool", "outcome": "ok"}, 2.0)
            mixed_router.in_flight.labels("pool").set(1)
            targets = [
                ScrapeTarget(replica.address, {"namespace": key[0], "poolpilot_io_pool": key[1], "pod": replica.name})
                for key, members in replicas.items() for replica in members
            ]
            targets += [
                ScrapeTarget(gauges_only, {"namespace": GAUGES_ONLY[0], "poolpilot_io_pool": GAUGES_ONLY[1]}),
                # The router's pods carry poolpilot.io/router, relabelled so; a series with the pool label keeps it.
                ScrapeTarget(routed.address, {"namespace": ROUTED[0], "poolpilot_io_router": ROUTED[1]}),
                ScrapeTarget(mixed_router.address, {"namespace": MIXED[0], "poolpilot_io_pool": MIXED[1]}),
            ]
            prom.set_targets(targets)
            series = sum(replica.state.engines for replica in fleet.replicas) + 1  # one per engine, and gauges-only
            prom.wait_for_samples("vllm:num_requests_waiting", timeout=20, min_series=series)
            prom.wait_for_samples("poolpilot_router_in_flight", timeout=20, min_series=3)
            yield Cluster(prom, fleet, replicas, targets)
        finally:
            prom.stop()


@pytest.fixture
async def source(cluster: Cluster) -> AsyncIterator[PrometheusSource]:
    source = PrometheusSource(cluster.prom.url, timeout_seconds=2.0)
    yield source
    await source.close()


def _targets(keys: Sequence[PoolKey]) -> list[PoolTarget]:
    return [PoolTarget(key) for key in keys]


async def _read_until(source: MetricsSource, keys: Sequence[PoolKey], accept: Callable[[SourceResults], bool], *,
                      timeout: float = 8.0, interval: float = 0.1, now: Callable[[], datetime] = _now) -> SourceResults:
    """Read until ``accept`` holds (a scrape has to happen first); fail with the last answer."""
    deadline = time.monotonic() + timeout
    results = await source.read(_targets(keys), now=now())
    while not accept(results):
        if time.monotonic() > deadline:
            raise AssertionError(f"not accepted within {timeout} s; last: {results}")
        await asyncio.sleep(interval)
        results = await source.read(_targets(keys), now=now())
    return results


def _signals(reading: Reading) -> PoolSignals:
    assert isinstance(reading, PoolSignals), reading
    return reading


def _kind(reading: Reading) -> MetricsProblemKind | None:
    return reading.kind if isinstance(reading, MetricsProblem) else None


def _message(reading: Reading) -> str:
    assert isinstance(reading, MetricsProblem), reading
    return reading.message


# --- values -------------------------------------------------------------------------------

async def test_values_per_pool_match_the_fakes(source: PrometheusSource) -> None:
    results = await source.read(_targets([*MANY, MIXED, ZERO]), now=_now())
    for index, key in enumerate(MANY):
        signals = _signals(results[key])
        assert (signals.queue_depth, signals.running_requests, signals.replicas_reporting) == (index, 2 * index, 1)
        assert signals.kv_cache_utilization == pytest.approx(index / 40)
    mixed = _signals(results[MIXED])
    assert (mixed.queue_depth, mixed.running_requests, mixed.replicas_reporting) == (8.0, 4.0, 2)
    assert mixed.kv_cache_utilization == pytest.approx((0.4 + 0.8) / 2)  # per replica, then over replicas


async def test_queries_per_round_do_not_grow_with_pools(cluster: Cluster, source: PrometheusSource) -> None:
    counts = {}
    for pools in (MANY[:1], MANY):
        api_before, log_before = cluster.prom.api_query_count(), len(cluster.prom.queries_logged())
        results = await source.read(_targets(pools), now=_now())
        assert all(isinstance(results[key], PoolSignals) for key in pools)
        await asyncio.sleep(0.2)  # the query log is written after the answer
        counts[len(pools)] = (cluster.prom.api_query_count() - api_before,
                              len(cluster.prom.queries_logged()) - log_before, source.last_round.requests)
    assert counts == {1: (10, 10, 10), 20: (10, 10, 10)}
    assert set(cluster.prom.queries_logged()[-10:]) == set(source.queries.all().values())


async def test_zero_is_a_value_and_no_series_is_no_samples(source: PrometheusSource) -> None:
    results = await source.read(_targets([ZERO, (TEAM_B, "never-deployed"), ("elsewhere", "idle")]), now=_now())
    zero = _signals(results[ZERO])
    assert (zero.queue_depth, zero.running_requests, zero.kv_cache_utilization) == (0.0, 0.0, 0.0)
    assert _kind(results[TEAM_B, "never-deployed"]) is MetricsProblemKind.NO_SAMPLES
    assert _kind(results["elsewhere", "idle"]) is MetricsProblemKind.NO_SAMPLES


async def test_namespaces_scope_the_queries(cluster: Cluster) -> None:
    source = PrometheusSource(cluster.prom.url, timeout_seconds=2.0, namespaces=[TEAM_B, 'x"} or vector(1) #'])
    try:
        assert all('namespace=~"' in query for query in source.queries.all().values())
        results = await source.read(_targets([ZERO, MANY[1]]), now=_now())
    finally:
        await source.close()
    assert _signals(results[ZERO]).queue_depth == 0.0
    assert _kind(results[MANY[1]]) is MetricsProblemKind.NO_SAMPLES  # exists, but not in a watched namespace


async def test_nan_and_out_of_range_are_invalid_per_signal(cluster: Cluster, source: PrometheusSource) -> None:
    nan_pool, kv_pool = MANY[3], MANY[4]
    cluster.replicas[nan_pool][0].set(waiting=math.nan)
    cluster.replicas[kv_pool][0].set(kv=1.5)
    try:
        results = await _read_until(source, [nan_pool, kv_pool], lambda r: all(
            _kind(reading) is MetricsProblemKind.INVALID for reading in r.values()))
        assert "queue depth" in _message(results[nan_pool]) and "nan" in _message(results[nan_pool])
        assert "KV-cache utilization" in _message(results[kv_pool]) and "outside 0-1" in _message(results[kv_pool])
        assert _signals((await source.read(_targets([MANY[5]]), now=_now()))[MANY[5]])  # others unaffected
    finally:
        cluster.replicas[nan_pool][0].set(waiting=3)
        cluster.replicas[kv_pool][0].set(kv=0.1)
    await _read_until(source, [nan_pool, kv_pool], lambda r: all(isinstance(x, PoolSignals) for x in r.values()))


async def test_old_samples_are_stale(source: PrometheusSource) -> None:
    """Samples Prometheus still returns but older than the max age (the clock of the reader is ahead here)."""
    results = await source.read(_targets([ZERO]), now=datetime.fromtimestamp(time.time() + 120, UTC))
    assert _kind(results[ZERO]) is MetricsProblemKind.STALE
    assert "allowed: 60 s" in _message(results[ZERO])


# --- token rates and the router ------------------------------------------------------------

def _near(value: float | None, expected: float) -> bool:
    """Within 10%: the counters are driven from the wall clock in ticks, and scraped at Prometheus' times."""
    return value is not None and value == pytest.approx(expected, rel=0.1)


def demand_of(signals: PoolSignals) -> tuple[float | None, float | None, float | None]:
    return signals.router_arrivals_per_second, signals.router_in_flight, signals.router_spills_per_second


async def test_token_rates_and_router_demand_per_pool(cluster: Cluster) -> None:
    source = PrometheusSource(cluster.prom.url, timeout_seconds=2.0, rate_window_seconds=5)
    keys = [RATES, GAUGES_ONLY, ROUTED, MIXED, ZERO]
    prompt = sum(rates[0] for rates in RATES_PER_REPLICA)
    generation = sum(rates[1] for rates in RATES_PER_REPLICA)

    def settled(results: SourceResults) -> bool:
        rates, routed, mixed = (results[key] for key in (RATES, ROUTED, MIXED))
        return (isinstance(rates, PoolSignals) and _near(rates.prompt_tokens_per_second, prompt)
                and isinstance(routed, PoolSignals) and _near(routed.router_arrivals_per_second, 4.0)
                and isinstance(mixed, PoolSignals) and _near(mixed.router_arrivals_per_second, 2.0))

    try:
        assert "[5s]" in source.queries.prompt_rate
        results = await _read_until(source, keys, settled, timeout=15.0, interval=0.25)
    finally:
        await source.close()
    rates = _signals(results[RATES])
    assert _near(rates.generation_tokens_per_second, generation)
    assert rates.replicas_reporting == 2 and demand_of(rates) == (None, None, None)  # no router
    gauges_only = _signals(results[GAUGES_ONLY])
    assert gauges_only.queue_depth == 2.0
    assert (gauges_only.prompt_tokens_per_second, gauges_only.generation_tokens_per_second) == (None, None)
    zero = _signals(results[ZERO])  # counters that do not move: a rate of 0, not None
    assert (zero.prompt_tokens_per_second, zero.generation_tokens_per_second) == (0.0, 0.0)
    routed = _signals(results[ROUTED])  # no replicas: the router's figures are the reading, not NoSamples
    assert (routed.queue_depth, routed.running_requests, routed.kv_cache_utilization) == (None, None, None)
    assert routed.replicas_reporting == 0 and routed.from_router and routed.usable  # the router alone is usable
    assert (routed.prompt_tokens_per_second, routed.generation_tokens_per_second) == (None, None)
    assert routed.router_in_flight == 5.0 and _near(routed.router_spills_per_second, 0.5)
    # The API's tokens ride in the token-rate queries (no query of their own), told apart by their backend label.
    assert _near(routed.router_api_prompt_tokens_per_second, 30.0)
    assert _near(routed.router_api_generation_tokens_per_second, 10.0)
    assert (rates.router_api_prompt_tokens_per_second, rates.router_api_generation_tokens_per_second) == (None, None)
    mixed = _signals(results[MIXED])
    assert mixed.queue_depth == 8.0  # as ever
    assert mixed.router_in_flight == 1.0 and mixed.router_spills_per_second == 0.0  # no spill series: 0
    # Its router has no token series: unknown, not zero; and vLLM's own rates are not mixed with the router's.
    assert (mixed.router_api_prompt_tokens_per_second, mixed.router_api_generation_tokens_per_second) == (None, None)
    assert "or sum by (namespace, poolpilot_io_pool, backend)" in source.queries.prompt_rate


# --- time to first token -------------------------------------------------------------------

async def test_the_ttft_histogram_is_the_increase_over_the_rate_window(cluster: Cluster) -> None:
    source = PrometheusSource(cluster.prom.url, timeout_seconds=2.0, rate_window_seconds=5)
    a, b = cluster.replicas[TTFT]
    bounds = [*TTFT_BUCKETS, math.inf]

    def histogram_of(results: SourceResults) -> dict[float, float]:
        return dict(_signals(results[TTFT]).ttft_histogram or ())

    try:
        assert source.queries.ttft_buckets.startswith(
            "sum by (le, namespace, poolpilot_io_pool) (increase(vllm:time_to_first_token_seconds_bucket{")
        assert source.queries.ttft_buckets.endswith("[5s]))")
        # No request yet: every bucket counted 0 over the window (the series exist from the start); not read.
        quiet = histogram_of(await _read_until(source, [TTFT], lambda r: bool(histogram_of(r))))
        assert list(quiet) == bounds and set(quiet.values()) == {0.0}
        a.observe_ttft(*[3.0] * 20)
        b.observe_ttft(*[0.3] * 19, 3000.0)

        def both_counted(results: SourceResults) -> bool:
            counts = histogram_of(results)
            return counts[0.5] > 0 and counts[5.0] > counts[2.5] and counts[math.inf] > counts[2560.0]

        results = await _read_until(source, [TTFT, GAUGES_ONLY, ZERO], both_counted, timeout=15.0, interval=0.25)
    finally:
        await source.close()
    signals = _signals(results[TTFT])
    assert signals.ttft_histogram is not None and [bound for bound, _ in signals.ttft_histogram] == bounds
    counts = histogram_of(results)
    # increase() extrapolates to the window's end (each replica by its own factor, 1 to about 2: counts need not be
    # 19 and 20), but a replica's buckets share it, so p95 is exact: rank 0.95 * (20 fa + 20 fb) less b's 19 fb
    # below 2.5 s is 19 fa of a's 20 fa, in the (2.5, 5] bucket.
    assert 19 <= counts[0.5] <= 19 * 2.2 and 20 <= counts[5.0] - counts[2.5] <= 20 * 2.2
    assert ttft_quantile(signals.ttft_histogram, 95) == pytest.approx(2.5 + 2.5 * 19 / 20)
    assert ttft_quantile(signals.ttft_histogram, 99.9) == 2560.0  # b's 3000 s request is in +Inf
    assert _signals(results[GAUGES_ONLY]).ttft_histogram is None  # no TTFT series: not read, not zero
    zero = _signals(results[ZERO]).ttft_histogram
    assert zero is not None and ttft_quantile(zero, 95) is None


async def test_the_ttft_quantile_is_prometheus_histogram_quantile(cluster: Cluster) -> None:
    """On the same (whole, unextrapolated) counts, the core's figure is Prometheus' own."""
    a, b = cluster.replicas[TTFT_WHOLE]
    a.observe_ttft(0.0005, *[0.07] * 7, *[0.9] * 5, 12.0)
    b.observe_ttft(*[0.2] * 3, 45.0, 45.0, 3000.0)
    pool = 'sum by (le) (vllm:time_to_first_token_seconds_bucket{poolpilot_io_pool="ttft-whole"})'
    deadline = time.monotonic() + 15
    while True:
        rows = cluster.prom.query(pool)
        counts = tuple(sorted((float(row["metric"]["le"]), float(row["value"][1])) for row in rows))
        if counts and counts[-1][1] == 20:
            break
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.25)
    for percentile in (5, 25, 50, 90, 95, 99, 99.9):  # in the first bucket, within others, in +Inf
        (answer,) = cluster.prom.query(f"histogram_quantile({percentile / 100!r}, {pool})")
        assert ttft_quantile(counts, percentile) == pytest.approx(float(answer["value"][1]), rel=1e-12), percentile


def test_the_rate_window_is_whole_milliseconds_and_at_least_a_second() -> None:
    def queries(window: float) -> PrometheusQueries:
        return build_queries(pool_label="poolpilot_io_pool", namespace_label="namespace", rate_window_seconds=window)

    assert "[1500ms]" in queries(1.5).router_arrivals and "[120s]" in queries(120).prompt_rate
    assert "[1500ms]" in queries(1.5).ttft_buckets
    for bad in (0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="rate_window_seconds"):
            queries(bad)


async def test_bad_router_values_are_left_out_and_a_nan_token_rate_is_invalid() -> None:
    """A stand-in Prometheus answering each query by what it asks for (the real one never returns these)."""
    def row(value: str) -> list[dict[str, Any]]:
        return [{"metric": {"namespace": ZERO[0], "poolpilot_io_pool": ZERO[1]}, "value": [time.time(), value]}]

    answers = {"nan-tokens": {"vllm:prompt_tokens_total": "NaN"}, "bad-router": {"poolpilot_router_in_flight": "-1"}}
    api_row = {"metric": {"namespace": ZERO[0], "poolpilot_io_pool": ZERO[1], "backend": "api"},
               "value": [time.time(), "-3"]}
    mode = ["bad-router"]

    async def handler(request: web.Request) -> web.Response:
        query = (await request.post()).get("query") or request.query.get("query", "")
        assert isinstance(query, str)
        result: list[dict[str, Any]] = []
        if query.startswith("max by"):  # the freshness query
            result = [{"metric": {**row("0")[0]["metric"], "instance": "a"}, "value": [time.time(), str(time.time())]}]
        elif "vllm:num_requests_waiting" in query:
            result = row("1")
        else:
            for metric, value in answers[mode[0]].items():
                if metric in query:
                    result = row(value)
            if "poolpilot_router_generation_tokens_total" in query:  # the router's API row, bad: left out
                result = [*result, api_row]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        source = PrometheusSource(f"http://127.0.0.1:{runner.addresses[0][1]}", timeout_seconds=2.0)
        try:
            signals = _signals((await source.read(_targets([ZERO]), now=_now()))[ZERO])
            assert signals.queue_depth == 1.0 and signals.router_in_flight is None
            assert signals.router_api_generation_tokens_per_second is None
            mode[0] = "nan-tokens"
            invalid = (await source.read(_targets([ZERO]), now=_now()))[ZERO]
        finally:
            await source.close()
    finally:
        await runner.cleanup()
    assert _kind(invalid) is MetricsProblemKind.INVALID
    assert "prompt tokens per second" in _message(invalid)


# --- failures -----------------------------------------------------------------------------

async def test_prometheus_stopped_is_unreachable_quickly() -> None:
    prom = PrometheusServer(scrape_interval_seconds=1)
    prom.start()
    source = PrometheusSource(prom.url, timeout_seconds=5.0)
    try:
        assert _kind((await source.read(_targets([ZERO]), now=_now()))[ZERO]) is MetricsProblemKind.NO_SAMPLES
        prom.pause()
        started = time.monotonic()
        results = await source.read(_targets([ZERO, GONE]), now=_now())
        assert time.monotonic() - started < 1.0
        assert {_kind(reading) for reading in results.values()} == {MetricsProblemKind.UNREACHABLE}
        assert "Connection refused" in _message(results[ZERO])
        assert source.last_round.failed_requests == 10  # every query of the round
        prom.resume()  # and back: the next round answers again
        assert _kind((await source.read(_targets([ZERO]), now=_now()))[ZERO]) is MetricsProblemKind.NO_SAMPLES
    finally:
        await source.close()
        prom.stop()


async def _serve(status: int, body: str, runners: list[web.AppRunner]) -> str:
    """A stand-in for Prometheus on 127.0.0.1 that answers everything with ``status`` and ``body``."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.mark.parametrize(("status", "body", "words"), [
    (503, '{"status":"error","error":"overloaded"}', "503"),
    (500, "oops", "500"),
    (200, "<html>a proxy's login page</html>", "unexpected answer"),
    (200, '{"status":"success","data":{"resultType":"vector","result":"nonsense"}}', "unexpected answer"),
])
async def test_errors_are_unreachable_and_never_raise(status: int, body: str, words: str) -> None:
    runners: list[web.AppRunner] = []
    try:
        source = PrometheusSource(await _serve(status, body, runners), timeout_seconds=2.0)
        results = await source.read(_targets([ZERO, GONE]), now=_now())
        await source.close()
    finally:
        for runner in runners:
            await runner.cleanup()
    assert {_kind(reading) for reading in results.values()} == {MetricsProblemKind.UNREACHABLE}
    assert words in _message(results[ZERO])


async def test_a_hanging_prometheus_is_a_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        source = PrometheusSource(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=0.5)
        started = time.monotonic()
        results = await source.read(_targets([ZERO]), now=_now())
        elapsed = time.monotonic() - started
        await source.close()
    assert _kind(results[ZERO]) is MetricsProblemKind.TIMEOUT
    assert 0.4 <= elapsed < 1.5


SECRET = "token=sk-live-7f3a9c0d2e1b4a5f"


@pytest.mark.parametrize(("status", "body"), [
    (500, f"upstream auth failed, {SECRET}"),
    (400, json.dumps({"status": "error", "errorType": "bad_data", "error": f"parse error near {SECRET}"})),
    (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": SECRET}})),
])
async def test_what_prometheus_answers_is_never_repeated(status: int, body: str) -> None:
    """The message goes into the pool's status and a Warning Event: the status code only, never the body."""
    runners: list[web.AppRunner] = []
    try:
        source = PrometheusSource(await _serve(status, body, runners), timeout_seconds=2.0)
        results = await source.read(_targets([ZERO]), now=_now())
        await source.close()
    finally:
        for runner in runners:
            await runner.cleanup()
    message = _message(results[ZERO])
    assert "sk-live" not in message and "token" not in message
    if status != 200:
        assert f"HTTP {status}" in message


def test_missing_binary_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLPILOT_PROMETHEUS_BINARY", "/nonexistent/prometheus")
    with pytest.raises(PrometheusNotInstalled, match="apt-get install prometheus"):
        PrometheusServer().start()


# --- last: changes the module's targets ---------------------------------------------------

async def test_stale_then_gone_after_the_target_is_removed(cluster: Cluster) -> None:
    """Prometheus keeps returning a removed target's last samples for about two intervals, then marks them
    stale: the source must call the first STALE (with a short max age) and the second NO_SAMPLES."""
    source = PrometheusSource(cluster.prom.url, timeout_seconds=2.0, max_sample_age_seconds=1.4)
    try:
        assert isinstance((await source.read(_targets([GONE]), now=_now()))[GONE], PoolSignals)
        gone_address = cluster.replicas[GONE][0].address
        cluster.prom.set_targets([t for t in cluster.targets if t.address != gone_address])
        seen: list[MetricsProblemKind | None] = []

        def record(results: SourceResults) -> bool:
            seen.append(_kind(results[GONE]))
            return seen[-1] is MetricsProblemKind.NO_SAMPLES

        await _read_until(source, [GONE], record, timeout=12.0, interval=0.05)
        assert MetricsProblemKind.STALE in seen, seen
        assert seen.index(MetricsProblemKind.STALE) < len(seen) - 1
        assert isinstance((await source.read(_targets([ZERO]), now=_now()))[ZERO], PoolSignals)
    finally:
        await source.close()
