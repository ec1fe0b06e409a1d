"""What a baseline policy sees and decides, so every policy runs on the same simulated world.

``poolpilot`` is not a :class:`Policy`: the world drives the operator's own ``plan`` for it. The
baselines (``controller/sim/baselines.py``) are other autoscalers, modelled after their documented
defaults, deciding from what their own metrics pipeline would give them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.api.spec import InferencePoolSpec
from controller.api.status import FallbackMode

__all__ = ["ABLATIONS", "POLICY_NAMES", "Policy", "PolicyContext", "PoolView", "Target"]

# Every policy a simulation can compare: the baselines, the API alone, PoolPilot, and the hindsight oracle.
POLICY_NAMES = ("static-ondemand", "keda", "keda-spot", "skyserve", "api-only", "poolpilot", "oracle")
# Asked for by name only: PoolPilot without a signal, to show what the signal changes (an ablation).
ABLATIONS = ("poolpilot-no-ttft", "poolpilot-no-throughput")


@dataclass(frozen=True, slots=True)
class PoolView:
    """The pool at one decision of a baseline: replica counts and the load its pipeline reports."""

    now: float  # seconds from the start of the trace
    spot_replicas: int  # asked for (running, starting or pending)
    on_demand_replicas: int
    ready_spot: int
    ready_on_demand: int
    spot_pending: int  # spot replicas asked for that found no spot capacity (no node)
    queue_depth: float  # requests waiting in vLLM, summed over the ready replicas (vllm:num_requests_waiting)
    running: float  # requests running, summed (vllm:num_requests_running)
    kv_cache_utilization: float | None  # averaged over the ready replicas; None with none ready
    arrivals_per_second: float  # requests arriving at the load balancer, over the last 60 s


@dataclass(frozen=True, slots=True)
class Target:
    """What the policy asks for: replicas by capacity type, and where traffic goes."""

    spot: int
    on_demand: int
    fallback: FallbackMode = "Off"  # Off: the pool only; Overflow: spill past the pool's budget; Full: all to the API


@dataclass(frozen=True)
class PolicyContext:
    """What a policy is configured with before the run.

    The hindsight fields (``demand_per_window``, ``reclaims``, ``spot_missing``) are for the oracle only;
    an online policy that read them would be cheating.
    """

    spec: InferencePoolSpec
    replica_requests_per_second: float  # what one replica serves within the SLO on this trace's mix
    cold_start_seconds: float  # from asking for a replica to its first served request
    peak_requests_per_second: float  # the trace's highest 60 s arrival rate (after --rate-scale)
    duration_seconds: float
    spot_hourly: float
    on_demand_hourly: float
    api_input_per_million: float
    api_output_per_million: float
    window_seconds: float = 60.0
    demand_per_window: Sequence[float] = field(default_factory=tuple)  # arrivals per second, window by window
    reclaims: Sequence[float] = field(default_factory=tuple)  # when spot replicas get their notices
    spot_missing: Sequence[tuple[float, float]] = field(default_factory=tuple)  # spans with no spot capacity


class Policy(Protocol):
    """A baseline autoscaler. ``decide`` runs every ``interval_seconds`` of simulated time."""

    name: str
    interval_seconds: float
    # On a reclaim notice: True drains the replica gracefully (replacement first, in-flight requests finish
    # until the deadline); False is what a plain Deployment gets (the pod is evicted at the notice and
    # vLLM's default --shutdown-timeout 0 aborts what it holds).
    drains_on_notice: bool

    def decide(self, view: PoolView) -> Target: ...
