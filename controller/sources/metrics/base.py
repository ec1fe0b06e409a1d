"""The one interface both metrics sources implement, and what they report about a round.

The reconcile loop asks a source about many pools at once (one round), so a source
can answer all of them with a constant number of requests (Prometheus) or bounded
parallel scrapes (pods). A source never raises for a failing backend or bad data:
each pool gets ``PoolSignals`` or a ``MetricsProblem`` saying what went wrong, so one
broken pool or an unreachable Prometheus is a condition on the pool, not a crash.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from controller.core.signals import MetricsProblem, PoolKey, PoolSignals

__all__ = ["MetricsSource", "PoolTarget", "ReadStats", "RouterFigures", "SourceResults", "invalid_signals"]

SourceResults = dict[PoolKey, PoolSignals | MetricsProblem]


@dataclass(frozen=True)
class PoolTarget:
    """What a source needs to know about one pool."""

    key: PoolKey
    # Base URLs of the pool's READY replicas, e.g. "http://10.1.2.3:8000" (used by the pods source).
    endpoints: tuple[str, ...] = ()
    # Base URLs of the pool's ready router pods, e.g. "http://10.1.2.9:8080" (pods source; empty without a
    # router). The router is scraped like a replica: its arrivals, in-flight requests and spills are demand.
    router_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouterFigures:
    """What both sources read from a pool's router, summed over its pods; None: not known (yet)."""

    arrivals_per_second: float | None = None
    in_flight: float | None = None
    spills_per_second: float | None = None
    api_prompt_tokens_per_second: float | None = None  # sent to the hosted API (backend="api")
    api_generation_tokens_per_second: float | None = None

    @property
    def known(self) -> bool:
        return any(value is not None for value in (self.arrivals_per_second, self.in_flight, self.spills_per_second,
                                                   self.api_prompt_tokens_per_second,
                                                   self.api_generation_tokens_per_second))

    def into(self, signals: PoolSignals) -> PoolSignals:
        """``signals`` with the router's fields filled from these."""
        return dataclasses.replace(
            signals, router_arrivals_per_second=self.arrivals_per_second, router_in_flight=self.in_flight,
            router_spills_per_second=self.spills_per_second,
            router_api_prompt_tokens_per_second=self.api_prompt_tokens_per_second,
            router_api_generation_tokens_per_second=self.api_generation_tokens_per_second)


@dataclass(frozen=True)
class ReadStats:
    """One round's cost and outcome, for the logs and the benchmark."""

    pools: int = 0  # pools asked about
    requests: int = 0  # HTTP requests made: PromQL queries, or /metrics scrapes
    failed_requests: int = 0  # of those, how many failed (refused, timed out, 5xx, unparseable)
    problems: int = 0  # pools answered with a MetricsProblem
    seconds: float = 0.0  # wall time of the round


class MetricsSource(Protocol):
    @property
    def last_round(self) -> ReadStats:
        """Stats of the most recent completed ``read`` (all zero before the first)."""
        ...

    async def read(self, pools: Sequence[PoolTarget], *, now: datetime) -> SourceResults:
        """Signals or a problem for every pool in ``pools``, observed at ``now``. Never raises for I/O."""
        ...

    async def close(self) -> None: ...


def invalid_signals(*, queue: float | None, running: float | None, kv: float | None,
                    counts: Mapping[str, float | None] | None = None) -> list[str]:
    """What is wrong with a set of signals, in words (empty if nothing): the rules both sources apply.

    Counts must be finite and >= 0; KV use is a fraction in 0-1 (vLLM's ``_perc`` is not percent).
    ``counts`` are more of them (token counters, their rates), by what they are called in a message.
    ``None`` (not reported) is not invalid.
    """
    problems = []
    checked = [("queue depth (vllm:num_requests_waiting)", queue, False),
               ("running requests (vllm:num_requests_running)", running, False),
               ("KV-cache utilization (vllm:kv_cache_usage_perc / vllm:gpu_cache_usage_perc)", kv, True)]
    checked += [(what, value, False) for what, value in (counts or {}).items()]
    for what, value, fraction in checked:
        if value is None:
            continue
        if not math.isfinite(value) or value < 0:
            problems.append(f"{what} is {value}")
        elif fraction and value > 1:
            problems.append(f"{what} is {value}, outside 0-1")
    return problems
