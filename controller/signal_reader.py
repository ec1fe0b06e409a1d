"""Read each pool's vLLM signals through the source its spec names.

``pods``: the pool's ready replicas are scraped directly, at every evaluation
(no scrape-interval lag). ``prometheus``: one round of queries serves every pool
that reads the same Prometheus, so the queries per round stay constant however
many pools there are. A pool asking within ``prometheus_round_seconds`` of the
last round gets that round's answer; the first one after it starts a new round
for all pools seen so far (single flight: concurrent askers share it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.api.spec import InferencePoolSpec
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolKey, PoolSignals
from controller.settings import OperatorSettings
from controller.sources.metrics.base import MetricsSource, PoolTarget
from controller.sources.metrics.pods import PodsSource
from controller.sources.metrics.prometheus import PrometheusSource

__all__ = ["SignalReader"]

Reading = PoolSignals | MetricsProblem


@dataclass
class _PrometheusRounds:
    """Shared rounds against one Prometheus URL."""

    source: MetricsSource
    pools: dict[PoolKey, PoolTarget] = field(default_factory=dict)
    results: dict[PoolKey, Reading] = field(default_factory=dict)
    finished_at: datetime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SignalReader:
    def __init__(self, settings: OperatorSettings,
                 prometheus_factory: Callable[[str, float], MetricsSource] | None = None) -> None:
        self._settings = settings
        self._pods_by_timeout: dict[float, PodsSource] = {}
        self._rounds: dict[str, _PrometheusRounds] = {}
        self._prometheus_factory = prometheus_factory or self._default_prometheus

    def _default_prometheus(self, url: str, timeout_seconds: float) -> MetricsSource:
        return PrometheusSource(url, timeout_seconds=timeout_seconds, namespaces=self._settings.namespaces)

    async def read(self, key: PoolKey, spec: InferencePoolSpec, endpoints: tuple[str, ...], *,
                   now: datetime) -> Reading:
        metrics = spec.metrics
        if metrics.source == "pods":
            source = self._pods_by_timeout.get(metrics.timeout_seconds)
            if source is None:
                source = self._pods_by_timeout[metrics.timeout_seconds] = PodsSource(
                    timeout_seconds=metrics.timeout_seconds)
            results = await source.read([PoolTarget(key=key, endpoints=endpoints)], now=now)
            return results[key]
        url = metrics.prometheus.url or self._settings.prometheus_url
        if not url:
            return MetricsProblem(MetricsProblemKind.UNREACHABLE,
                                  "metrics.source is prometheus, but neither spec.metrics.prometheus.url nor "
                                  "the operator's POOLPILOT_PROMETHEUS_URL is set", now)
        return await self._read_prometheus(url, metrics.timeout_seconds, PoolTarget(key=key, endpoints=endpoints),
                                           now=now)

    async def _read_prometheus(self, url: str, timeout_seconds: float, target: PoolTarget, *,
                               now: datetime) -> Reading:
        rounds = self._rounds.get(url)
        if rounds is None:
            rounds = self._rounds[url] = _PrometheusRounds(self._prometheus_factory(url, timeout_seconds))
        rounds.pools[target.key] = target
        async with rounds.lock:
            fresh = rounds.finished_at is not None and now - rounds.finished_at < timedelta(
                seconds=self._settings.prometheus_round_seconds)
            if not (fresh and target.key in rounds.results):
                rounds.results = dict(await rounds.source.read(list(rounds.pools.values()), now=now))
                rounds.finished_at = now
        return rounds.results[target.key]

    def expire_rounds(self) -> None:
        """The next read starts a new Prometheus round (for benchmarks that time whole rounds)."""
        for rounds in self._rounds.values():
            rounds.finished_at = None

    def forget(self, key: PoolKey) -> None:
        """A pool is gone: stop asking Prometheus about it."""
        for rounds in self._rounds.values():
            rounds.pools.pop(key, None)
            rounds.results.pop(key, None)

    async def close(self) -> None:
        for pods in self._pods_by_timeout.values():
            await pods.close()
        for rounds in self._rounds.values():
            await rounds.source.close()
