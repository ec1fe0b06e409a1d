"""Which Prometheus a pool may make the operator query, and how much the reader remembers per URL.

``spec.metrics.prometheus.url`` is written by whoever may edit pools; the operator queries only the URLs
its admin allowed (``POOLPILOT_ALLOWED_PROMETHEUS_URLS``, plus its own ``POOLPILOT_PROMETHEUS_URL``).
A stand-in Prometheus on 127.0.0.1 counts the requests it gets.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from controller.api.spec import InferencePoolSpec
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals
from controller.settings import OperatorSettings
from controller.signal_reader import MAX_PODS_SOURCES, SignalReader
from controller.sources.metrics.urls import normalized_prometheus_url
from tests.support.router_metrics import FakeRouterMetrics

__all__: list[str] = []

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POOL = ("llm", "chat")
EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[str, Counter[str]]]:
    """A stand-in Prometheus that answers every query with no series, and counts requests per path."""
    hits: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.json_response(EMPTY_VECTOR)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening, so nothing else takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _spec(url: str | None) -> InferencePoolSpec:
    metrics: dict[str, Any] = {"source": "prometheus", "timeoutSeconds": 1}
    if url is not None:
        metrics["prometheus"] = {"url": url}
    return InferencePoolSpec.model_validate({"model": {"name": "m"}, "replicas": {"min": 1, "max": 2},
                                             "metrics": metrics})


async def _read(reader: SignalReader, url: str | None) -> MetricsProblem:
    reading = await reader.read(POOL, _spec(url), (), now=NOW)
    assert isinstance(reading, MetricsProblem), reading
    return reading


async def test_a_pool_url_that_is_not_allowed_is_refused_without_a_request(
        prometheus: tuple[str, Counter[str]], refusing_port: int) -> None:
    url, hits = prometheus
    reader = SignalReader(OperatorSettings(prometheus_url=f"http://127.0.0.1:{refusing_port}"))
    try:
        problem = await _read(reader, f"{url}/")
    finally:
        await reader.close()
    assert problem.kind is MetricsProblemKind.URL_NOT_ALLOWED
    assert str(problem.kind) == "PrometheusUrlNotAllowed"
    assert "POOLPILOT_ALLOWED_PROMETHEUS_URLS" in problem.message and url in problem.message
    assert sum(hits.values()) == 0
    assert reader.tracked_prometheus_urls == ()


async def test_without_an_operator_url_every_pool_url_is_refused(prometheus: tuple[str, Counter[str]]) -> None:
    url, hits = prometheus
    reader = SignalReader(OperatorSettings())
    try:
        assert (await _read(reader, url)).kind is MetricsProblemKind.URL_NOT_ALLOWED
    finally:
        await reader.close()
    assert sum(hits.values()) == 0


async def test_the_operators_own_url_and_the_allowed_ones_are_queried(prometheus: tuple[str, Counter[str]],
                                                                      refusing_port: int) -> None:
    url, hits = prometheus
    port = url.rsplit(":", 1)[1]
    for settings, pool_url in [
        (OperatorSettings(prometheus_url=url), None),  # the pool names none: the operator's
        (OperatorSettings(prometheus_url=f"{url}/"), url),  # the operator's, spelled otherwise
        # allowed, spelled otherwise: the scheme and host are case-blind, a trailing slash is no difference
        (OperatorSettings(prometheus_url=f"http://127.0.0.1:{refusing_port}",
                          allowed_prometheus_urls=[f"HTTP://127.0.0.1:{port}/"]), url),
    ]:
        hits.clear()
        reader = SignalReader(settings)
        try:
            problem = await _read(reader, pool_url)
        finally:
            await reader.close()
        assert problem.kind is MetricsProblemKind.NO_SAMPLES, problem  # it asked, and the answer was empty
        assert hits["/api/v1/query"] == 10
        assert reader.tracked_prometheus_urls == (url,)


async def test_a_thousand_refused_urls_leave_no_state(refusing_port: int) -> None:
    reader = SignalReader(OperatorSettings())
    try:
        for index in range(1000):
            await _read(reader, f"http://127.0.0.1:{refusing_port}/tenant-{index}")
    finally:
        await reader.close()
    assert reader.tracked_prometheus_urls == ()


async def test_state_per_allowed_url_is_capped(refusing_port: int) -> None:
    urls = [f"http://127.0.0.1:{refusing_port}/tenant-{index}" for index in range(1000)]
    reader = SignalReader(OperatorSettings(allowed_prometheus_urls=urls), max_prometheus_urls=8)
    try:
        for url in urls:
            assert (await _read(reader, url)).kind is MetricsProblemKind.UNREACHABLE
            assert len(reader.tracked_prometheus_urls) <= 8
        assert reader.tracked_prometheus_urls == tuple(urls[-8:])  # least recently used go first
    finally:
        await reader.close()


@pytest.mark.parametrize(("url", "normal"), [
    ("http://prom:9090", "http://prom:9090"),
    ("HTTP://Prom.Monitoring.svc:9090/", "http://prom.monitoring.svc:9090"),
    ("http://prom", "http://prom:80"),
    ("https://prom/", "https://prom:443"),
    ("http://prom:9090/tenant/a//", "http://prom:9090/tenant/a"),
    ("http://[FD00::1]:9090", "http://[fd00::1]:9090"),
])
def test_urls_compare_in_one_spelling(url: str, normal: str) -> None:
    assert normalized_prometheus_url(url) == normal


@pytest.mark.parametrize(("url", "words"), [
    ("prom:9090", r"not an http\(s\) URL"),
    ("ftp://prom", r"not an http\(s\) URL"),
    ("http://:9090", "has no host"),
    ("http://prom:99999", "port"),
    ("http://prom/?x=1", "query or fragment"),
])
def test_what_is_not_a_prometheus_url_is_refused(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        normalized_prometheus_url(url)


def test_a_bad_allowed_url_is_a_clear_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLPILOT_ALLOWED_PROMETHEUS_URLS", json.dumps(["http://prom:9090", "prom"]))
    with pytest.raises(ValueError, match="'prom' is not an http"):
        OperatorSettings()


async def test_an_allowed_prometheus_that_redirects_is_not_followed(prometheus: tuple[str, Counter[str]]) -> None:
    elsewhere, hits = prometheus  # a Prometheus nobody allowed

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{elsewhere}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    allowed = f"http://127.0.0.1:{runner.addresses[0][1]}"
    reader = SignalReader(OperatorSettings(prometheus_url=allowed))
    try:
        problem = await _read(reader, allowed)
    finally:
        await reader.close()
        await runner.cleanup()
    assert problem.kind is MetricsProblemKind.UNREACHABLE and "redirect" in problem.message
    assert sum(hits.values()) == 0


async def test_one_http_session_per_timeout_and_no_more_than_the_cap() -> None:
    reader = SignalReader(OperatorSettings())
    try:
        for tenths in range(1, 41):  # forty distinct timeouts, as forty pools might set
            spec = InferencePoolSpec.model_validate({"model": {"name": "m"}, "replicas": {"min": 1, "max": 2},
                                                     "metrics": {"source": "pods", "timeoutSeconds": tenths / 10}})
            await reader.read(POOL, spec, (), now=NOW)
            assert len(reader.pods_source_timeouts) <= MAX_PODS_SOURCES
        assert reader.pods_source_timeouts == tuple(t / 10 for t in range(33, 41))
    finally:
        await reader.close()


async def test_the_router_addresses_reach_the_pods_source_and_forget_drops_its_samples() -> None:
    spec = InferencePoolSpec.model_validate({"model": {"name": "m"}, "replicas": {"min": 0, "max": 2},
                                             "metrics": {"source": "pods", "timeoutSeconds": 1}})
    reader = SignalReader(OperatorSettings())
    try:
        async with FakeRouterMetrics() as router:
            router.requests.labels("api", "ok").inc(10)
            await reader.read(POOL, spec, (), now=NOW, router_addresses=(router.url,))
            router.requests.labels("api", "ok").inc(30)
            reading = await reader.read(POOL, spec, (), now=NOW + timedelta(seconds=10), router_addresses=(router.url,))
            assert isinstance(reading, PoolSignals) and reading.router_arrivals_per_second == 3.0
            reader.forget(POOL)
            router.requests.labels("api", "ok").inc(30)
            again = await reader.read(POOL, spec, (), now=NOW + timedelta(seconds=20), router_addresses=(router.url,))
            assert isinstance(again, PoolSignals) and again.router_arrivals_per_second is None  # a first sample again
    finally:
        await reader.close()
