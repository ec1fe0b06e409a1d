"""The operator in the simulated world: observe -> ``plan`` -> apply -> ``conclude``, as ``controller/reconcile.py``.

Every decision is the operator's own: ``controller.core.plan.plan`` decides the replica split, the spot
shift, the drains and the fallback mode from an :class:`~controller.core.plan.Observation` built here out of
the world's pods, notices and Prometheus scrapes, and ``conclude`` writes the status the next evaluation
remembers (the fallback's timers and the spot state live there, as on a cluster). What differs from a
cluster is only where the observation comes from and where the apply step writes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core.capacity import CapacityType, split_replicas
from controller.core.drain import EvictionResult
from controller.core.fallback import replica_budget
from controller.core.notices import InterruptionNotice, NoticeKind
from controller.core.plan import Observation, Plan, Reporting, conclude, plan
from controller.core.pool import DeploymentState, PoolObservation
from controller.core.replicas import ReplicaPod
from controller.core.scaling import ScalingState, effective_min_replicas
from controller.core.signals import Histogram, MetricsProblem, MetricsProblemKind, PoolSignals
from controller.kube.render import router_enabled
from controller.sim.policy import Policy, PoolView
from controller.sim.world import EPOCH, TTFT_BUCKETS, NoticeHandling, Scrape, World

__all__ = ["EPOCH", "BaselineController", "PoolPilotController", "at"]

def at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def _rate(new: float, old: float, seconds: float) -> float:
    return max(0.0, new - old) / seconds if seconds > 0 else 0.0


def signals_from_scrapes(spec: InferencePoolSpec, world: World, now: float) -> PoolSignals | MetricsProblem | None:
    """What the Prometheus source would read: the gauges of the last scrape, rates over the window."""
    latest = world.latest_scrape()
    if latest is None:
        return None
    window = world.config.rate_window_seconds
    start = world.scrape_before(latest.at - window) or latest
    seconds = latest.at - start.at
    routed = router_enabled(spec)
    if latest.reporting == 0 and not routed:
        return MetricsProblem(MetricsProblemKind.NO_SAMPLES, "no ready replica reports vLLM's metrics",
                              observed_at=at(latest.at))
    rates_formed = seconds > 0
    reported = latest.reporting > 0
    return PoolSignals(
        queue_depth=float(latest.waiting) if reported else None,
        running_requests=float(latest.running) if reported else None,
        kv_cache_utilization=latest.kv if reported else None,
        replicas_reporting=latest.reporting,
        observed_at=at(latest.at),
        prompt_tokens_per_second=_rate(latest.prompt_tokens, start.prompt_tokens, seconds) if rates_formed else None,
        generation_tokens_per_second=(_rate(latest.generation_tokens, start.generation_tokens, seconds)
                                      if rates_formed else None),
        router_arrivals_per_second=(_rate(latest.router_arrivals, start.router_arrivals, seconds)
                                    if routed and rates_formed else None),
        router_in_flight=float(latest.router_in_flight) if routed else None,
        router_spills_per_second=(_rate(latest.router_spills, start.router_spills, seconds)
                                  if routed and rates_formed else None),
        router_api_prompt_tokens_per_second=(_rate(latest.api_prompt_tokens, start.api_prompt_tokens, seconds)
                                             if routed and rates_formed else None),
        router_api_generation_tokens_per_second=(
            _rate(latest.api_generation_tokens, start.api_generation_tokens, seconds)
            if routed and rates_formed else None),
        ttft_histogram=_ttft_histogram(latest, start) if reported and rates_formed else None,
    )


def _ttft_histogram(latest: Scrape, start: Scrape) -> Histogram:
    """vLLM's TTFT histogram over the window, cumulative per bucket, as the sources deliver it."""
    running = 0.0
    cumulative: list[tuple[float, float]] = []
    for bound, new, old in zip(TTFT_BUCKETS, latest.ttft_counts, start.ttft_counts, strict=True):
        running += new - old
        cumulative.append((bound, running))
    return tuple(cumulative)


class PoolPilotController:
    """The operator's evaluation of one pool, in the world; its memory is the status and the scaler's state."""

    on_notice: NoticeHandling = "plan"

    def __init__(self, spec: InferencePoolSpec, *, without: str | None = None) -> None:
        """``without``: "ttft" or "throughput", a signal left out (an ablation: what that signal changes)."""
        if without not in (None, "ttft", "throughput"):
            raise ValueError(f"cannot leave out {without!r}: only ttft or throughput")
        self.without = without
        self.name = "poolpilot" if without is None else f"poolpilot-no-{without}"
        self.spec = spec
        self.interval_seconds = float(spec.scaling.evaluation_interval_seconds)
        self.status = InferencePoolStatus()
        self.memory = ScalingState()
        self.events: Counter[str] = Counter()
        self.evaluated = False
        self.reporting = Reporting(signals_refresh_seconds=15.0)

    def prepare(self, world: World) -> None:
        """The run starts warm: the pool exists, its Deployments at the spec's minimum (split as the spec says)."""
        split = split_replicas(effective_min_replicas(self.spec), self.spec.capacity)
        world.desired[CapacityType.SPOT] = split.spot
        world.desired[CapacityType.ON_DEMAND] = split.on_demand
        world.reconcile_replicas(0.0)
        self.evaluated = True

    def __call__(self, world: World, now: float) -> None:
        observation = self.observe(world, now)
        planned = plan(observation, self.memory, now=at(now))
        if self.without == "throughput":  # never learned, so never used
            planned = dataclasses.replace(planned, memory=dataclasses.replace(planned.memory,
                                                                              replica_tokens_per_second=None))
        evictions = self.apply(world, planned, now)
        conclusion = conclude(observation, planned, [], now=at(now), reporting=self.reporting, evictions=evictions)
        self.status = conclusion.status
        self.memory = planned.memory
        self.evaluated = True
        for event in conclusion.events:
            self.events[event.reason] += 1
            world.totals.events[event.reason] = world.totals.events.get(event.reason, 0) + 1

    def observe(self, world: World, now: float) -> Observation:
        spec = self.spec
        if not self.evaluated:  # the pool is new: its Deployments do not exist yet
            return Observation(generation=1, spec=spec, previous=self.status, deployments=PoolObservation({}))
        ready = {capacity_type: 0 for capacity_type in CapacityType}
        pods: list[ReplicaPod] = []
        nodes: set[str] = set()
        for pod in world.pods.values():
            if pod.live and pod.ready:
                ready[pod.capacity_type] += 1
            if pod.node is not None:
                nodes.add(pod.node)
            pods.append(ReplicaPod(
                name=pod.name, uid=pod.uid, capacity_type=pod.drain.capacity_type if pod.drain else pod.capacity_type,
                node=pod.node, phase="Running" if pod.node else "Pending", ready=pod.ready,
                created_at=at(pod.created_at),
                unschedulable_since=at(pod.unschedulable_since) if pod.unschedulable_since is not None else None,
                terminating=pod.terminating_until is not None, drain=pod.drain))
        deployments = PoolObservation({
            capacity_type: DeploymentState(replicas=world.desired[capacity_type], ready=ready[capacity_type])
            for capacity_type in CapacityType})
        notices = tuple(
            InterruptionNotice(kind=NoticeKind.SPOT_INTERRUPTION, source="aws-sqs", event_id=event_id, node=node,
                               deadline=at(terminates_at), detail="EC2 Spot Instance Interruption Warning")
            for node, (event_id, terminates_at) in sorted(world.notices.items()) if node in nodes)
        signals = signals_from_scrapes(spec, world, now)
        if self.without == "ttft" and isinstance(signals, PoolSignals):
            signals = dataclasses.replace(signals, ttft_histogram=None)
        return Observation(generation=1, spec=spec, previous=self.status, deployments=deployments,
                           source=spec.metrics.source, signals=signals, pods=tuple(pods), notices=notices)

    def apply(self, world: World, planned: Plan, now: float) -> list[EvictionResult]:
        if planned.split is None:
            return []
        for release in planned.drain.releases:
            if release.pod in world.pods:
                world.release(release.pod, release.mark, serving=release.serving)
        world.desired[CapacityType.SPOT] = planned.split.spot
        world.desired[CapacityType.ON_DEMAND] = planned.split.on_demand
        world.reconcile_replicas(now)
        world.mode = planned.fallback.mode if planned.fallback is not None else "Off"
        world.observe_budget(planned.fallback.status.in_flight_per_replica if planned.fallback is not None else None)
        results = []
        for eviction in planned.drain.evictions:
            if eviction.pod not in world.pods:
                results.append(EvictionResult(eviction.pod, "gone"))
                continue
            world.delete(eviction.pod, now, grace=float(eviction.grace_seconds))
            results.append(EvictionResult(eviction.pod, "evicted"))
        return results


class BaselineController:
    """A baseline policy in the world: its view each ``interval_seconds``, its target applied as a Deployment would."""

    def __init__(self, policy: Policy, spec: InferencePoolSpec) -> None:
        self.policy = policy
        self.name = policy.name
        self.interval_seconds = policy.interval_seconds
        self.on_notice: NoticeHandling = "drain" if policy.drains_on_notice else "evict"
        self.spec = spec
        self.budget: int | None = None

    def __call__(self, world: World, now: float) -> None:
        latest = world.latest_scrape()
        start = world.scrape_before(now - 60.0)
        arrivals = 0.0
        if start is not None and now > start.at:
            arrivals = _rate(world.router_arrivals, start.router_arrivals, now - start.at)
        spot = on_demand = ready_spot = ready_on_demand = pending = 0
        for pod in world.pods.values():
            if not pod.live:
                continue
            if pod.capacity_type is CapacityType.SPOT:
                spot += 1
                ready_spot += pod.ready
                pending += pod.node is None
            else:
                on_demand += 1
                ready_on_demand += pod.ready
        view = PoolView(now=now, spot_replicas=spot, on_demand_replicas=on_demand, ready_spot=ready_spot,
                        ready_on_demand=ready_on_demand, spot_pending=pending,
                        queue_depth=float(latest.waiting) if latest else 0.0,
                        running=float(latest.running) if latest else 0.0,
                        kv_cache_utilization=latest.kv if latest else None,
                        arrivals_per_second=arrivals)
        target = self.policy.decide(view)
        world.desired[CapacityType.SPOT] = max(0, target.spot)
        world.desired[CapacityType.ON_DEMAND] = max(0, target.on_demand)
        world.reconcile_replicas(now)
        world.mode = target.fallback
        # A policy that spills uses the same router as PoolPilot's, budget included (the operator's own rule).
        if target.fallback != "Off":
            self.budget = replica_budget(self.spec, signals_from_scrapes(self.spec, world, now),
                                         ready_spot + ready_on_demand, self.budget)
            world.observe_budget(self.budget)
