"""Read each pool's vLLM signals through the source its spec names.

``pods``: the pool's ready replicas are scraped directly, at every evaluation
(no scrape-interval lag). ``prometheus``: one round of queries serves every pool
that reads the same Prometheus, so the queries per round stay constant however
many pools there are. A pool asking within ``prometheus_round_seconds`` of the
last round gets that round's answer; the first one after it starts a new round
for all pools seen so far (single flight: concurrent askers share it).

A pool's own ``metrics.prometheus.url`` is written by whoever may edit pools: it is
queried only if the operator's admin allowed it (``allowed_prometheus_urls``, plus
the operator's ``prometheus_url``), so a pool cannot point the operator at any
address it can reach. State is kept per allowed URL only, at most
``max_prometheus_urls`` of them (least recently used dropped first).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.api.spec import InferencePoolSpec
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolKey, PoolSignals
from controller.settings import OperatorSettings
from controller.sources.metrics.base import MetricsSource, PoolTarget
from controller.sources.metrics.pods import PodsSource
from controller.sources.metrics.prometheus import PrometheusSource
from controller.sources.metrics.urls import normalized_prometheus_url

__all__ = ["SignalReader"]

Reading = PoolSignals | MetricsProblem
DEFAULT_MAX_PROMETHEUS_URLS = 64
MAX_PODS_SOURCES = 8  # distinct spec.metrics.timeoutSeconds values with an HTTP session kept


@dataclass
class _PrometheusRounds:
    """Shared rounds against one Prometheus URL."""

    source: MetricsSource
    pools: dict[PoolKey, PoolTarget] = field(default_factory=dict)
    results: dict[PoolKey, Reading] = field(default_factory=dict)
    finished_at: datetime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    readers: int = 0  # reads under way: an entry in use is never dropped (its source would close under them)


class SignalReader:
    def __init__(self, settings: OperatorSettings,
                 prometheus_factory: Callable[[str, float], MetricsSource] | None = None, *,
                 max_prometheus_urls: int = DEFAULT_MAX_PROMETHEUS_URLS) -> None:
        if max_prometheus_urls < 1:
            raise ValueError("max_prometheus_urls must be at least 1")
        self._settings = settings
        self._allowed_prometheus_urls = settings.allowed_prometheus_url_set()
        self._max_prometheus_urls = max_prometheus_urls
        # One pods source (an HTTP session) per timeout the pools ask for; the spec sets it, so the
        # number kept is capped, least recently used closed first.
        self._pods_by_timeout: OrderedDict[float, PodsSource] = OrderedDict()
        self._rounds: OrderedDict[str, _PrometheusRounds] = OrderedDict()  # by normalised URL, oldest use first
        self._prometheus_factory = prometheus_factory or self._default_prometheus

    async def _pods_source(self, timeout_seconds: float) -> PodsSource:
        source = self._pods_by_timeout.get(timeout_seconds)
        if source is None:
            source = self._pods_by_timeout[timeout_seconds] = PodsSource(timeout_seconds=timeout_seconds)
            while len(self._pods_by_timeout) > MAX_PODS_SOURCES:
                _, oldest = self._pods_by_timeout.popitem(last=False)
                await oldest.close()
        self._pods_by_timeout.move_to_end(timeout_seconds)
        return source

    @property
    def pods_source_timeouts(self) -> tuple[float, ...]:
        """The timeouts with a pods source kept, least recently used first."""
        return tuple(self._pods_by_timeout)

    @property
    def tracked_prometheus_urls(self) -> tuple[str, ...]:
        """The Prometheus URLs with state kept, least recently used first."""
        return tuple(self._rounds)

    def _default_prometheus(self, url: str, timeout_seconds: float) -> MetricsSource:
        return PrometheusSource(url, timeout_seconds=timeout_seconds, namespaces=self._settings.namespaces)

    async def read(self, key: PoolKey, spec: InferencePoolSpec, endpoints: tuple[str, ...], *,
                   now: datetime, router_addresses: tuple[str, ...] = ()) -> Reading:
        """``endpoints``: the ready replicas' base URLs; ``router_addresses``: the ready router pods' (the
        pods source scrapes both; Prometheus finds both by the pool's labels)."""
        metrics = spec.metrics
        target = PoolTarget(key=key, endpoints=endpoints, router_addresses=router_addresses)
        if metrics.source == "pods":
            source = await self._pods_source(metrics.timeout_seconds)
            results = await source.read([target], now=now)
            return results[key]
        url = metrics.prometheus.url or self._settings.prometheus_url
        if not url:
            return MetricsProblem(MetricsProblemKind.UNREACHABLE,
                                  "metrics.source is prometheus, but neither spec.metrics.prometheus.url nor "
                                  "the operator's POOLPILOT_PROMETHEUS_URL is set", now)
        refusal = self._refusal(url)
        if refusal:
            return MetricsProblem(MetricsProblemKind.URL_NOT_ALLOWED, refusal, now)
        return await self._read_prometheus(normalized_prometheus_url(url), metrics.timeout_seconds, target, now=now)

    def _refusal(self, url: str) -> str | None:
        """Why the operator will not query ``url`` (a pool's), or None if it may."""
        shown = url if len(url) <= 200 else url[:200] + "..."
        try:
            if normalized_prometheus_url(url) in self._allowed_prometheus_urls:
                return None
        except ValueError as e:
            return f"spec.metrics.prometheus.url is not usable: {e}"
        return (f"spec.metrics.prometheus.url {shown!r} is not in the operator's POOLPILOT_ALLOWED_PROMETHEUS_URLS "
                f"(nor its POOLPILOT_PROMETHEUS_URL); the operator's admin may add it, or drop the field to use "
                f"the operator's Prometheus")

    async def _read_prometheus(self, url: str, timeout_seconds: float, target: PoolTarget, *,
                               now: datetime) -> Reading:
        rounds = self._rounds.get(url)
        if rounds is None:
            await self._make_room()
            rounds = self._rounds[url] = _PrometheusRounds(self._prometheus_factory(url, timeout_seconds))
        self._rounds.move_to_end(url)
        rounds.pools[target.key] = target
        rounds.readers += 1
        try:
            async with rounds.lock:
                fresh = rounds.finished_at is not None and now - rounds.finished_at < timedelta(
                    seconds=self._settings.prometheus_round_seconds)
                if not (fresh and target.key in rounds.results):
                    rounds.results = dict(await rounds.source.read(list(rounds.pools.values()), now=now))
                    rounds.finished_at = now
            return rounds.results[target.key]
        finally:
            rounds.readers -= 1

    async def _make_room(self) -> None:
        """Drop the least recently used idle URLs until one more fits."""
        idle = [url for url, rounds in self._rounds.items() if rounds.readers == 0]
        while len(self._rounds) >= self._max_prometheus_urls and idle:
            dropped = self._rounds.pop(idle.pop(0))
            await dropped.source.close()

    def expire_rounds(self) -> None:
        """The next read starts a new Prometheus round (for benchmarks that time whole rounds)."""
        for rounds in self._rounds.values():
            rounds.finished_at = None

    def forget(self, key: PoolKey) -> None:
        """A pool is gone: stop asking Prometheus about it, drop its counters' samples."""
        for pods in self._pods_by_timeout.values():
            pods.forget(key)
        for rounds in self._rounds.values():
            rounds.pools.pop(key, None)
            rounds.results.pop(key, None)

    async def close(self) -> None:
        for pods in self._pods_by_timeout.values():
            await pods.close()
        for rounds in self._rounds.values():
            await rounds.source.close()
