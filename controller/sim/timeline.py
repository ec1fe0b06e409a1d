"""What a run looked like over time, one sample per interval: the plot's and the report's input."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Sample", "Timeline"]


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds from the start of the trace
    arrivals_per_second: float  # requests that arrived during the interval, per second
    spot_replicas: int  # asked for (running or starting), spot
    on_demand_replicas: int
    ready_replicas: int
    queue_depth: float  # requests waiting in vLLM, summed over the replicas
    api_share: float  # share of the interval's arrivals sent to the hosted API (0-1)
    cost_per_hour: float  # replicas (spot and on-demand) plus the API's charge in the interval, per hour
    lost: int = 0  # requests lost during the interval


@dataclass
class Timeline:
    """One policy's run: its samples and the moments spot capacity was reclaimed."""

    policy: str
    interval_seconds: float
    samples: list[Sample] = field(default_factory=list)
    reclaims: list[float] = field(default_factory=list)  # times a spot replica got its notice
