"""vLLM load signals as the decisions see them: what each metric source produces.

A source turns its raw input (PromQL results, a replica's /metrics text) into
either ``PoolSignals`` or a ``MetricsProblem`` per pool at its edge. "No data" is
never a zero: a signal that could not be read is ``None``, and a pool with no
usable signal at all is a problem, on which the scaler holds (never scales down
blind).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["VLLM_METRICS", "MetricsProblem", "MetricsProblemKind", "PoolKey", "PoolSignals", "SignalsByPool"]

PoolKey = tuple[str, str]  # (namespace, pool name)


class VLLM_METRICS:  # a namespace of constants, named as the metrics are
    """vLLM's exact metric names (V1 engine; labels model_name and engine, summed over engine)."""

    WAITING = "vllm:num_requests_waiting"
    RUNNING = "vllm:num_requests_running"
    KV_CACHE = "vllm:kv_cache_usage_perc"  # a 0-1 fraction despite the name
    KV_CACHE_LEGACY = "vllm:gpu_cache_usage_perc"  # the name before vLLM 0.9.2, also 0-1


@dataclass(frozen=True)
class PoolSignals:
    """One pool's load, read at ``observed_at``."""

    queue_depth: float | None  # requests waiting, summed over the pool's ready replicas
    running_requests: float | None  # requests running, summed
    kv_cache_utilization: float | None  # 0-1, averaged over the replicas (and engines) that report it
    replicas_reporting: int  # how many replicas the numbers come from
    observed_at: datetime
    # Token throughput (vLLM's prompt and generation token counters, as rates): the cost figures' load.
    # None until a rate can be formed (the pods source needs two scrapes of a replica).
    prompt_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None
    # The router's view of demand (fallback.route router): requests arriving per second, in flight,
    # spilled to the API per second. None without a router. At zero replicas these are the only signals.
    router_arrivals_per_second: float | None = None
    router_in_flight: float | None = None
    router_spills_per_second: float | None = None
    # Tokens the router sent to the hosted API, per second (from the answers' usage): what the API charges
    # for, the pool's whole traffic while it is at zero. None without a router, or until a rate is formed.
    router_api_prompt_tokens_per_second: float | None = None
    router_api_generation_tokens_per_second: float | None = None

    @property
    def usable(self) -> bool:
        return self.queue_depth is not None or self.kv_cache_utilization is not None or self.from_router

    @property
    def from_router(self) -> bool:
        """Whether the router reported (a pool with fallback.route router, its router scraped)."""
        return self.router_arrivals_per_second is not None or self.router_in_flight is not None


class MetricsProblemKind(StrEnum):
    UNREACHABLE = "SourceUnreachable"  # connection refused, DNS, HTTP 5xx
    TIMEOUT = "SourceTimeout"
    NO_SAMPLES = "NoSamples"  # the source answered, but nothing for this pool
    STALE = "StaleSamples"  # samples exist but are older than allowed
    INVALID = "InvalidSamples"  # NaN, negative, or a KV fraction outside 0-1
    NO_READY_REPLICAS = "NoReadyReplicas"  # the pods source had nothing to scrape
    URL_NOT_ALLOWED = "PrometheusUrlNotAllowed"  # spec.metrics.prometheus.url is not one the operator may query


@dataclass(frozen=True)
class MetricsProblem:
    kind: MetricsProblemKind
    message: str  # in words, for the MetricsAvailable condition and the Warning Event
    observed_at: datetime


SignalsByPool = Mapping[PoolKey, PoolSignals | MetricsProblem]
