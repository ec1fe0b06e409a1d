"""vLLM load signals as the decisions see them: what each metric source produces.

A source turns its raw input (PromQL results, a replica's /metrics text) into
either ``PoolSignals`` or a ``MetricsProblem`` per pool at its edge. "No data" is
never a zero: a signal that could not be read is ``None``, and a pool with no
usable signal at all is a problem, on which the scaler holds (never scales down
blind).

Time to first token comes as a histogram (vLLM's ``vllm:time_to_first_token_seconds``: the requests
whose first token came within the source's window, per bucket), not as a percentile: the percentile
is the pool's own (``spec.slo.ttftPercentile``), and both sources share :func:`ttft_quantile`, which
reads a histogram as Prometheus' ``histogram_quantile`` does (promql/quantile.go).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["MIN_TTFT_OBSERVATIONS", "VLLM_METRICS", "VLLM_TTFT_BUCKETS", "Histogram", "MetricsProblem",
           "MetricsProblemKind", "PoolKey", "PoolSignals", "SignalsByPool", "ttft_observations", "ttft_quantile"]

PoolKey = tuple[str, str]  # (namespace, pool name)
# A cumulative histogram: (upper bound ``le``, observations <= it), by ascending bound, +Inf as math.inf.
Histogram = tuple[tuple[float, float], ...]

# Fewer requests than this in the window and the TTFT percentile is not read: a p95 of a quiet pool's
# two requests is one request's luck, not what its users feel; 10 is the smallest count at which a p95
# is not simply the slowest request (rank 9.5 of 10).
MIN_TTFT_OBSERVATIONS = 10
# vLLM's bucket bounds for vllm:time_to_first_token_seconds (vllm/v1/metrics/loggers.py), +Inf not included.
VLLM_TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)


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
    # Time to first token (vllm:time_to_first_token_seconds): per bucket bound, how many of the requests whose
    # first token came within the window took at most that long, summed over the pool's replicas
    # (Prometheus: increase() over its rate window; pods: the change between two scrapes of each replica).
    # None when not read, or not formable yet. Counts need not be whole numbers (Prometheus extrapolates).
    ttft_histogram: Histogram | None = None

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


def ttft_observations(histogram: Histogram | None) -> float:
    """How many requests the histogram counts (its +Inf bucket; 0 without one)."""
    if not histogram or histogram[-1][0] != math.inf:
        return 0.0
    return max(count for _, count in histogram)


def ttft_quantile(histogram: Histogram | None, percentile: float,
                  min_observations: float = MIN_TTFT_OBSERVATIONS) -> float | None:
    """The ``percentile`` (above 0, up to 100) of a cumulative histogram, in its unit, as Prometheus'
    ``histogram_quantile`` computes it; None when there is nothing to read.

    Linear within the bucket the rank falls in (from the bucket below's bound, 0 for the first bucket);
    a rank in the +Inf bucket gives the highest finite bound. Counts that go down from one bound to the
    next (replicas with different bucket layouts, Prometheus' extrapolation) are raised to the running
    maximum first, as Prometheus does. None: no histogram, no +Inf bucket, no finite bound, or fewer than
    ``min_observations`` requests.
    """
    if not histogram or not 0 < percentile <= 100:
        return None
    buckets = sorted(histogram)
    if buckets[-1][0] != math.inf or len(buckets) < 2:
        return None
    bounds: list[float] = []
    counts: list[float] = []
    for bound, count in buckets:
        counts.append(max(count, counts[-1]) if counts else count)
        bounds.append(bound)
    observations = counts[-1]
    if not observations >= min_observations or observations <= 0:
        return None
    rank = percentile / 100 * observations
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if index == len(counts) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (bounds[index - 1], counts[index - 1]) if index > 0 else (0.0, 0.0)
    # In Prometheus' order of operations, so that the same counts give the same float.
    return start + (bounds[index] - start) * ((rank - below) / (counts[index] - below))
