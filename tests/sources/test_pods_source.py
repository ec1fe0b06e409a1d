"""The pods source, over real HTTP to fake vLLM replicas."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bench.parse_cost import parse_everything, vllm_body
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals
from controller.sources.metrics.base import MetricsSource, PoolTarget
from controller.sources.metrics.pods import InvalidExposition, PodsSource, parse_vllm_metrics, signal_lines
from devkube.fakevllm import CONTENT_TYPE, Failure, FakeVLLMFleet, FakeVLLMReplica, KVMetric

__all__: list[str] = []

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POOL = ("llm", "chat")


@pytest.fixture
async def fleet() -> AsyncIterator[FakeVLLMFleet]:
    async with FakeVLLMFleet(3) as fleet:
        yield fleet


async def _read_one(source: PodsSource, endpoints: tuple[str, ...]) -> PoolSignals | MetricsProblem:
    return (await source.read([PoolTarget(POOL, endpoints)], now=NOW))[POOL]


def _signals(result: PoolSignals | MetricsProblem) -> PoolSignals:
    assert isinstance(result, PoolSignals), result
    return result


def _problem(result: PoolSignals | MetricsProblem, kind: MetricsProblemKind) -> MetricsProblem:
    assert isinstance(result, MetricsProblem), result
    assert result.kind is kind, result
    return result


# --- parsing ------------------------------------------------------------------------------

def test_parse_matches_names_exactly_in_any_label_order() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m",engine="0"} 12.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 100.0\n'
        'vllm:num_requests_waiting_total{engine="0"} 1000.0\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 0.0\n'
    )
    reading = parse_vllm_metrics(text)
    assert (reading.waiting, reading.running, reading.kv) == (15.0, 0.0, None)  # 0 is a value; no KV is None


def test_parse_prefers_the_current_kv_name_and_falls_back_to_the_legacy_one() -> None:
    both = 'vllm:gpu_cache_usage_perc{engine="0"} 0.9\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
    assert parse_vllm_metrics(both).kv == 0.25
    legacy = 'vllm:gpu_cache_usage_perc{engine="0"} 0.5\nvllm:gpu_cache_usage_perc{engine="1"} 0.7\n'
    assert parse_vllm_metrics(legacy).kv == pytest.approx(0.6)


@pytest.mark.parametrize(("text", "match"), [
    ("<html>502 Bad Gateway</html>\n", "not the Prometheus text format"),
    ("process_cpu_seconds_total 3.0\n", "none of vLLM's load metrics"),
    ('vllm:num_requests_waiting{engine="0"} NaN\n', "queue depth"),
    ('vllm:num_requests_running{engine="0"} -1\n', "running requests"),
    ('vllm:kv_cache_usage_perc{engine="0"} 83\n', "outside 0-1"),
    ('vllm:num_requests_waiting{engine="0",engine="1"} 1\n', "not the Prometheus text format"),
])
def test_parse_refuses_bad_bodies(text: str, match: str) -> None:
    with pytest.raises(InvalidExposition, match=match):
        parse_vllm_metrics(text)


# --- over HTTP ----------------------------------------------------------------------------

async def test_sums_over_engines_and_replicas_and_averages_kv(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, c = fleet.replicas
    a.set(waiting=13, running=4, kv=[0.2, 0.6], engines=2)  # replica KV 0.4
    b.set(waiting=2, running=1, kv=0.5, engines=1)
    c.set(waiting=[1, 1, 1, 1], running=8, kv=0.9, engines=4)
    signals = _signals(await _read_one(source, fleet.endpoints))
    assert (signals.queue_depth, signals.running_requests, signals.replicas_reporting) == (19.0, 13.0, 3)
    assert signals.kv_cache_utilization == pytest.approx((0.4 + 0.5 + 0.9) / 3)
    assert signals.observed_at == NOW
    assert source.last_round.requests == 3 and source.last_round.failed_requests == 0


async def test_both_kv_names_across_replicas(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, c = fleet.replicas
    a.set(kv=0.2, kv_metric=KVMetric.CURRENT)
    b.set(kv=0.4, kv_metric=KVMetric.LEGACY)
    c.set(kv=0.6, kv_legacy=0.99, kv_metric=KVMetric.BOTH)  # the new name wins on this replica
    signals = _signals(await _read_one(source, fleet.endpoints))
    assert signals.kv_cache_utilization == pytest.approx(0.4)


async def test_zero_is_a_value(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    fleet.replicas[0].set(waiting=0, running=0, kv=0.0)
    signals = _signals(await _read_one(source, fleet.endpoints[:1]))
    assert (signals.queue_depth, signals.running_requests, signals.kv_cache_utilization) == (0.0, 0.0, 0.0)


async def test_one_replica_down_is_skipped_and_counted(fleet: FakeVLLMFleet, source: PodsSource,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    for replica in fleet.replicas:
        replica.set(waiting=5, kv=0.5)
    endpoints = fleet.endpoints
    await fleet.replicas[1].stop()
    with caplog.at_level(logging.WARNING, logger="controller.sources.metrics.pods"):
        signals = _signals(await _read_one(source, endpoints))
    assert (signals.queue_depth, signals.replicas_reporting) == (10.0, 2)
    assert source.last_round.failed_requests == 1
    assert "1 of 3 replicas skipped" in caplog.text


async def test_all_down_is_unreachable(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    endpoints = fleet.endpoints
    await fleet.stop()
    problem = _problem(await _read_one(source, endpoints), MetricsProblemKind.UNREACHABLE)
    assert "none of the 3 ready replicas answered" in problem.message


async def test_http_500_is_unreachable(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    fleet.replicas[0].set(failure=Failure.HTTP_500)
    problem = _problem(await _read_one(source, fleet.endpoints[:1]), MetricsProblemKind.UNREACHABLE)
    assert "HTTP 500" in problem.message


async def test_garbage_is_invalid_for_that_replica_only(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    fleet.replicas[0].set(failure=Failure.GARBAGE)
    fleet.replicas[1].set(waiting=3)
    signals = _signals(await _read_one(source, fleet.endpoints[:2]))
    assert (signals.queue_depth, signals.replicas_reporting) == (3.0, 1)
    problem = _problem(await _read_one(source, fleet.endpoints[:1]), MetricsProblemKind.INVALID)
    assert "not the Prometheus text format" in problem.message


async def test_nan_and_out_of_range_are_invalid(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    fleet.replicas[0].set(waiting=math.nan)
    fleet.replicas[1].set(kv=1.5)
    first = _problem(await _read_one(source, fleet.endpoints[:1]), MetricsProblemKind.INVALID)
    second = _problem(await _read_one(source, fleet.endpoints[1:2]), MetricsProblemKind.INVALID)
    assert "queue depth" in first.message and "outside 0-1" in second.message


async def test_timeout_is_bounded(fleet: FakeVLLMFleet) -> None:
    source = PodsSource(timeout_seconds=0.3)
    try:
        for replica in fleet.replicas:
            replica.set(failure=Failure.HANG)
        started = time.monotonic()
        problem = _problem(await _read_one(source, fleet.endpoints), MetricsProblemKind.TIMEOUT)
        assert time.monotonic() - started < 1.5
        assert "no answer within 0.3 s" in problem.message
        fleet.replicas[0].set(failure=Failure.NONE, delay_seconds=1.0)  # slow, not hanging: still too slow
        fleet.replicas[1].set(failure=Failure.HTTP_500)
        mixed = _problem(await _read_one(source, fleet.endpoints), MetricsProblemKind.UNREACHABLE)
        assert "timed out" in mixed.message and "unreachable" in mixed.message
    finally:
        await source.close()


async def test_no_endpoints_is_no_ready_replicas(source: PodsSource) -> None:
    _problem(await _read_one(source, ()), MetricsProblemKind.NO_READY_REPLICAS)
    assert source.last_round.requests == 0


async def test_several_pools_in_one_round(fleet: FakeVLLMFleet, source: PodsSource) -> None:
    a, b, c = fleet.replicas
    a.set(waiting=1)
    b.set(waiting=2)
    c.set(waiting=4)
    results = await source.read([
        PoolTarget(("ns", "one"), (a.url,)),
        PoolTarget(("ns", "two"), (b.url, c.url)),
        PoolTarget(("other", "empty"), ()),
    ], now=NOW)
    assert _signals(results["ns", "one"]).queue_depth == 1.0
    assert _signals(results["ns", "two"]).queue_depth == 6.0
    _problem(results["other", "empty"], MetricsProblemKind.NO_READY_REPLICAS)
    assert source.last_round.pools == 3 and source.last_round.problems == 1


async def test_concurrency_bound_is_respected() -> None:
    async with FakeVLLMFleet(12) as fleet:
        for replica in fleet.replicas:
            replica.set(delay_seconds=0.2)
        source = PodsSource(timeout_seconds=2.0, max_concurrency=3)
        try:
            started = time.monotonic()
            signals = _signals(await _read_one(source, fleet.endpoints))
            elapsed = time.monotonic() - started
        finally:
            await source.close()
        assert signals.replicas_reporting == 12
        assert fleet.max_in_flight == 3
        assert elapsed >= 0.8  # 12 scrapes, 3 at a time, 0.2 s each
        fleet.reset_max_in_flight()
        wide = PodsSource(timeout_seconds=2.0)
        try:
            await _read_one(wide, fleet.endpoints)
        finally:
            await wide.close()
        assert fleet.max_in_flight == 12


async def test_one_session_from_the_factory_for_all_rounds(fleet: FakeVLLMFleet) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    source = PodsSource(timeout_seconds=1.0, session_factory=factory)
    as_protocol: MetricsSource = source  # PodsSource implements the interface (mypy checks this line)
    for _ in range(3):
        _signals(await _read_one(source, fleet.endpoints))
    await as_protocol.close()
    assert len(made) == 1 and made[0].closed


async def test_scrape_time_of_many_replicas() -> None:
    """Not a benchmark, a bound: 100 replicas in one round, well under a second on loopback."""
    async with FakeVLLMFleet(100) as fleet:
        for index, replica in enumerate(fleet.replicas):
            replica.set(waiting=1, engines=1 + index % 2)
        source = PodsSource(timeout_seconds=2.0)
        try:
            await _read_one(source, fleet.endpoints)  # connections warm
            signals = _signals(await _read_one(source, fleet.endpoints))
        finally:
            await source.close()
    assert (signals.queue_depth, signals.replicas_reporting) == (100.0, 100)
    assert source.last_round.seconds < 2.0


def test_only_the_signal_lines_are_parsed_and_they_give_what_the_whole_body_gives() -> None:
    body = vllm_body(70) + 'vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 99\n'
    kept = signal_lines(body)
    # Of the histograms only TTFT's buckets (four engines of 23 here) are kept, without HELP, TYPE, _count, _sum.
    assert len(kept) < len(body) / 5
    assert "_by_reason" not in kept and "inter_token_latency" not in kept and "e2e_request_latency" not in kept
    assert {line.split("{")[0] for line in kept.splitlines() if "_bucket" in line} == {
        "vllm:time_to_first_token_seconds_bucket"}
    assert "# TYPE vllm:time_to_first_token_seconds histogram" not in kept and "_seconds_count" not in kept
    reading = parse_vllm_metrics(body)
    assert reading.waiting == parse_everything(body) == 7
    assert reading.ttft_buckets == whole_body_ttft(body)


def whole_body_ttft(text: str) -> tuple[tuple[float, float], ...]:
    """TTFT's buckets summed over engines, through the parser with the whole body (its HELP and TYPE too)."""
    summed: dict[float, float] = {}
    for family in prometheus_client.parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:time_to_first_token_seconds_bucket":
                bound = float(sample.labels["le"])
                summed[bound] = summed.get(bound, 0.0) + sample.value
    return tuple(sorted(summed.items()))


# --- content negotiation and redirects ------------------------------------------------------

@pytest.fixture
def prometheus_client_app() -> Iterator[tuple[str, list[str]]]:
    """vLLM's gauges in a real prometheus_client registry, served by prometheus_client's own WSGI app (which
    picks the format from the Accept header: OpenMetrics when asked for it). Yields the base URL and the
    Content-Type of every answer."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels,
                    registry=registry)
    running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", labels,
                    registry=registry)
    kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=registry)
    for engine, (queue, busy, used) in enumerate([(5, 2, 0.5), (2, 1, 0.7)]):
        waiting.labels("m", str(engine)).set(queue)
        running.labels("m", str(engine)).set(busy)
        kv.labels("m", str(engine)).set(used)
    prompt = prometheus_client.Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels,
                                       registry=registry)
    prompt.labels("m", "0").inc(10)  # a counter: _total and _created, rendered differently in OpenMetrics
    served: list[str] = []
    app = make_wsgi_app(registry)

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            served.extend(value for name, value in headers if name.lower() == "content-type")
            return start_response(status, headers, *args)
        return app(environ, start)

    server = make_server("127.0.0.1", 0, recording, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_the_accept_header_asks_prometheus_client_for_the_classic_text_format(
        prometheus_client_app: tuple[str, list[str]], source: PodsSource) -> None:
    url, served = prometheus_client_app
    signals = _signals(await _read_one(source, (url,)))
    assert (signals.queue_depth, signals.running_requests) == (7.0, 3.0)
    assert signals.kv_cache_utilization == pytest.approx(0.6)
    assert served == [CONTENT_TYPE_PLAIN_0_0_4], "prometheus_client answered another format than the classic one"


async def _redirecting_replica(runners: list[web.AppRunner], *, status: int, location: str | None = None,
                               absolute: bool = False, loop_back: bool = False) -> tuple[str, Counter[str]]:
    """A replica whose /metrics redirects to ``location``, by default /metrics/ (as old vLLM builds do; spelled
    with its own scheme, host and port if ``absolute``), which serves the exposition; with ``loop_back``,
    /metrics/ redirects to /metrics again. Counts the requests per path."""
    hits: Counter[str] = Counter()
    replica = FakeVLLMReplica("127.0.0.1", 0, name="old-vllm")
    replica.set(waiting=4, running=1, kv=0.3)

    async def metrics(request: web.Request) -> web.Response:
        hits[request.path] += 1
        own = f"http://{request.host}/metrics/" if absolute else "/metrics/"
        return web.Response(status=status, headers={"Location": location or own})

    async def metrics_slash(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if loop_back:
            return web.Response(status=status, headers={"Location": "/metrics"})
        return web.Response(body=replica.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/", metrics_slash)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", hits


@pytest.fixture
async def runners() -> AsyncIterator[list[web.AppRunner]]:
    started: list[web.AppRunner] = []
    yield started
    for runner in started:
        await runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_to_metrics_slash_is_followed(status: int, runners: list[web.AppRunner],
                                                       source: PodsSource) -> None:
    url, hits = await _redirecting_replica(runners, status=status)
    signals = _signals(await _read_one(source, (url,)))
    assert (signals.queue_depth, signals.running_requests, signals.kv_cache_utilization) == (4.0, 1.0, 0.3)
    assert hits == {"/metrics": 1, "/metrics/": 1}


async def test_an_absolute_redirect_to_the_same_host_is_followed(runners: list[web.AppRunner],
                                                                 source: PodsSource) -> None:
    url, hits = await _redirecting_replica(runners, status=307, absolute=True)
    assert _signals(await _read_one(source, (url,))).queue_depth == 4.0
    assert hits == {"/metrics": 1, "/metrics/": 1}


async def test_a_redirect_to_another_host_is_not_followed(runners: list[web.AppRunner], source: PodsSource) -> None:
    elsewhere, elsewhere_hits = await _redirecting_replica(runners, status=307)
    port = elsewhere.rsplit(":", 1)[1]
    url, _ = await _redirecting_replica(runners, status=307, location=f"http://localhost:{port}/metrics/")
    problem = _problem(await _read_one(source, (url,)), MetricsProblemKind.UNREACHABLE)
    assert "redirected to another host" in problem.message
    assert "localhost" not in problem.message  # where it points is the replica's text, not ours to repeat
    assert sum(elsewhere_hits.values()) == 0


async def test_a_redirect_loop_is_bounded(runners: list[web.AppRunner], source: PodsSource) -> None:
    url, hits = await _redirecting_replica(runners, status=307, loop_back=True)
    problem = _problem(await _read_one(source, (url,)), MetricsProblemKind.UNREACHABLE)
    assert "more than 3 redirects" in problem.message
    assert sum(hits.values()) == 4


# --- what a replica answers stays out of the status -------------------------------------------

SECRET = "token=sk-live-7f3a9c0d2e1b4a5f"


def test_a_parse_error_names_the_line_and_keeps_its_text_apart() -> None:
    text = ("# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            "process_cpu_seconds_total 3.0\n"
            f'vllm:num_requests_waiting{{engine="0"}} {SECRET}\n')
    with pytest.raises(InvalidExposition) as raised:
        parse_vllm_metrics(text)
    assert str(raised.value) == "line 4 is not the Prometheus text format"
    assert (raised.value.line_number, raised.value.line) == (4, f'vllm:num_requests_waiting{{engine="0"}} {SECRET}')


def test_a_body_that_is_no_exposition_at_all_names_its_first_bad_line() -> None:
    with pytest.raises(InvalidExposition) as raised:
        parse_vllm_metrics(f"# a comment\n<html>sign in again: {SECRET}</html>\n")
    assert str(raised.value) == "line 2 is not the Prometheus text format"
    assert raised.value.line == f"<html>sign in again: {SECRET}</html>"


@pytest.mark.parametrize(("status", "body", "words"), [
    (200, f"<html>sign in again: {SECRET}</html>\n", "line 1 is not the Prometheus text format"),
    (200, f'vllm:num_requests_waiting{{engine="0"}} {SECRET}\n', "line 1 is not the Prometheus text format"),
])
async def test_what_a_replica_answers_is_never_repeated(status: int, body: str, words: str,
                                                        runners: list[web.AppRunner], source: PodsSource) -> None:
    """The message goes into the pool's status and a Warning Event: what went wrong, never the body."""
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    result = await _read_one(source, (f"http://127.0.0.1:{runner.addresses[0][1]}",))
    assert isinstance(result, MetricsProblem)
    assert "sk-live" not in result.message and words in result.message
