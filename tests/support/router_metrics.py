"""A stand-in for ``poolpilot router``'s ``/metrics``, for the metrics sources' tests.

The real router is its own piece of work; what the sources read from it is only the fixed contract
of its metric names. This serves those names from a prometheus_client registry of its own (as the
router does), over aiohttp on a loopback address::

    async with FakeRouterMetrics() as router:
        router.requests.labels("pool", "ok").inc(30)
        router.in_flight.labels("api").set(2)
        router.restart()  # a new process: counters from zero, new _created times

Counters can also grow with the clock (``grow(...)``): their value is computed when scraped, so a
Prometheus ``rate()`` over them is exact whatever the scrape times. ``in_thread()`` runs it on a loop
of its own for sync fixtures (the Prometheus tests).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Self

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from devkube.fakevllm import CONTENT_TYPE
from devkube.loopthread import in_thread

__all__ = ["FakeRouterMetrics", "Growth"]


@dataclass(frozen=True)
class Growth:
    """A counter series that grows at ``per_second`` from when ``grow`` was called."""

    metric: str  # poolpilot_router_requests, _spills, _prompt_tokens or _generation_tokens (without _total)
    labels: dict[str, str]
    per_second: float
    since: float
    base: float = 1000.0  # well above 0, so Prometheus' extrapolation never clips at zero


class _GrowingCounters:
    def __init__(self, router: FakeRouterMetrics) -> None:
        self._router = router

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        by_metric: dict[str, list[Growth]] = {}
        for growth in self._router.growing:
            by_metric.setdefault(growth.metric, []).append(growth)
        for metric, growths in by_metric.items():
            family = CounterMetricFamily(metric, f"{metric} (growing with the clock)",
                                         labels=sorted(growths[0].labels))
            for growth in growths:
                family.add_metric([growth.labels[name] for name in sorted(growth.labels)],
                                  growth.base + growth.per_second * (now - growth.since), created=growth.since)
            yield family


class FakeRouterMetrics:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port: int | None = None
        self.scrapes = 0
        self.growing: list[Growth] = []
        self._runner: web.AppRunner | None = None
        self.restart()

    def restart(self) -> None:
        """A new router process: a fresh registry, every counter from zero, new ``_created`` times."""
        self.registry = CollectorRegistry()
        self.requests = Counter("poolpilot_router_requests", "Requests answered, by backend and outcome.",
                                ["backend", "outcome"], registry=self.registry)
        self.in_flight = Gauge("poolpilot_router_in_flight", "Requests in flight, by backend.", ["backend"],
                               registry=self.registry)
        self.spills = Counter("poolpilot_router_spills", "Requests sent to the API instead of the pool, by reason.",
                              ["reason"], registry=self.registry)
        self.prompt_tokens = Counter("poolpilot_router_prompt_tokens", "Prompt tokens, from the answers' usage.",
                                     ["backend"], registry=self.registry)
        self.generation_tokens = Counter("poolpilot_router_generation_tokens",
                                         "Generated tokens, from the answers' usage.", ["backend"],
                                         registry=self.registry)
        self.growing = []

    def grow(self, metric: str, labels: dict[str, str], per_second: float) -> None:
        """Serve a counter series that grows with the clock. From the first call on, the counters are the growing
        ones only (``requests``, ``spills`` and the token counters are no longer served)."""
        self.growing.append(Growth(metric, labels, per_second, since=time.time()))
        if len(self.growing) == 1:
            for counter in (self.requests, self.spills, self.prompt_tokens, self.generation_tokens):
                self.registry.unregister(counter)
            self.registry.register(_GrowingCounters(self))

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        assert self.port is not None, "not started"
        return f"{self.host}:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE})

    async def start(self, sock: socket.socket | None = None) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if sock is None:
            sock = socket.socket()
            sock.bind((self.host, 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, host: str = "127.0.0.1") -> Iterator[FakeRouterMetrics]:
        with in_thread(cls(host), name="fake-router-metrics") as router:
            yield router
