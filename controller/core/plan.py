"""One evaluation of one pool, decided: the observation, the remembered state and ``now`` in; what to do out.

The evaluation is a pipeline you can read top to bottom (``controller/reconcile.py``)::

    observe (every read)  ->  plan (this module, pure)  ->  apply  ->  conclude (this module, pure)  ->  report

``plan`` makes every decision that does not depend on what the API server answers: whether the spec
is valid, how many replicas, how they split over spot and on-demand, which Events to post about the
signals and the scaling. The apply step then brings the owned objects to the planned counts; what the
server answered (created, updated, somebody else's object, refused) goes through ``conclude``, which
turns it into the status and the remaining Events. Both functions are pure and free of Kubernetes
types, so the simulator drives the very same decisions with simulated observations and a simulated clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core import events
from controller.core.capacity import CapacitySplit, CapacityType, split_replicas
from controller.core.cheaper import CheaperDecision, decide_prefer_cheaper, override_scaling
from controller.core.conditions import find_condition
from controller.core.drain import DrainPlan, EvictionResult, plan_drains, record_evictions
from controller.core.fallback import FallbackDecision, decide_fallback
from controller.core.notices import InterruptionNotice
from controller.core.pool import (
    PoolObservation,
    SpecProblem,
    compute_status,
    describe_problems,
    desired_replicas,
    invalid_spec_needs_warning,
)
from controller.core.replicas import ReplicaPod, count_by_readiness
from controller.core.rollout import RolloutDecision, UpgradeGate, decide_rollout
from controller.core.scaling import ScalingDecision, ScalingInputs, ScalingState, decide_replicas
from controller.core.scaling_report import ScalingOutcome, metrics_events
from controller.core.signals import MetricsProblem, PoolSignals
from controller.core.spot import SpotDecision, decide_spot, shift_split

__all__ = ["AppliedChange", "Conclusion", "Observation", "Plan", "Reporting", "conclude", "plan"]


@dataclass(frozen=True)
class Reporting:
    """The operator's settings that shape the status."""

    signals_refresh_seconds: float = 15.0


@dataclass(frozen=True)
class Observation:
    """Everything one evaluation read, as values."""

    generation: int
    spec: InferencePoolSpec | tuple[SpecProblem, ...]  # the parsed spec, or every problem with it
    previous: InferencePoolStatus  # the status as last written
    deployments: PoolObservation
    source: str = "pods"  # where the signals came from: "pods" or "prometheus"
    # None when nothing was read: an invalid spec, or a pool whose Deployments do not exist yet.
    signals: PoolSignals | MetricsProblem | None = None
    # The pod template this operator version renders for the spec, per Deployment (a fingerprint).
    rendered_templates: Mapping[CapacityType, str] = field(default_factory=dict)
    upgrade_gate: UpgradeGate = field(default_factory=UpgradeGate)
    # The replica pods (None: not observed, counts come from the Deployments alone), and the
    # interruption notices for the nodes they run on.
    pods: tuple[ReplicaPod, ...] | None = None
    notices: tuple[InterruptionNotice, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What to do: the replica split to apply (None: write nothing), the scaler's memory, Events so far."""

    spec: InferencePoolSpec | None
    split: CapacitySplit | None
    scaling: ScalingOutcome | None
    memory: ScalingState
    events: tuple[events.PoolEvent, ...] = ()
    # Deployments that keep their current pod template for now (an upgrade waiting for a slot).
    rollout: RolloutDecision = field(default_factory=lambda: RolloutDecision(frozenset(), False, False, False))
    drain: DrainPlan = field(default_factory=DrainPlan)
    spot: SpotDecision = field(default_factory=lambda: SpotDecision(state=None, spot_cap=None))
    fallback: FallbackDecision | None = None  # where traffic goes; None on an invalid spec
    prefer_cheaper: CheaperDecision | None = None  # fallback.preferCheaper's state; None on an invalid spec


@dataclass(frozen=True)
class AppliedChange:
    """What the API server did with one owned object the apply step brought to the plan."""

    kind: str
    name: str
    action: Literal["created", "updated", "conflict", "failed"]
    fields: tuple[str, ...] = ()
    message: str = ""  # the API server's, for "failed"
    detail: str = ""  # for "created": what it holds ("3 replicas")

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Conclusion:
    status: InferencePoolStatus
    events: tuple[events.PoolEvent, ...] = ()


def plan(observation: Observation, memory: ScalingState, *, now: datetime) -> Plan:
    """Decide the pool's replicas and the Events about its spec, signals and scaling."""
    spec = observation.spec
    previous = observation.previous
    if not isinstance(spec, InferencePoolSpec):
        # Nothing changes on an invalid spec; warn once per generation.
        warn = invalid_spec_needs_warning(previous, observation.generation)
        return Plan(spec=None, split=None, scaling=None, memory=memory,
                    events=(events.spec_invalid(describe_problems(spec)),) if warn else ())

    pool_events: list[events.PoolEvent] = []
    previous_valid = find_condition(previous.conditions, "SpecValid")
    if previous_valid is not None and previous_valid.status == "False":
        pool_events.append(events.spec_accepted(observation.generation))

    pods = observation.pods or ()
    spot = decide_spot(pods, previous.spot, spec.capacity, now=now)
    deployments = observation.deployments
    # preferCheaper (off by default) may replace the scaler's target: 0 while the API is cheaper, back up after.
    cheaper = decide_prefer_cheaper(spec, previous, observation.signals,
                                    spot_replicas=deployments.replicas(CapacityType.SPOT),
                                    on_demand_replicas=deployments.replicas(CapacityType.ON_DEMAND),
                                    ready=deployments.ready_total, spot_cap=spot.spot_cap, now=now)
    pool_events += cheaper.events
    scaling: ScalingOutcome | None = None
    decision: ScalingDecision | None = None
    current = observation.deployments.total_replicas
    if current is None or observation.signals is None:
        # A new pool starts at its minimum; its signals are read once its Deployments exist.
        total = desired_replicas(spec, observation.deployments) if cheaper.replicas is None else cheaper.replicas
    else:
        ready = observation.deployments.ready_total
        inputs = ScalingInputs(signals=observation.signals, current_replicas=current, ready_replicas=ready,
                               starting_replicas=_starting(observation, spec, current, ready, now),
                               in_flight_per_replica=previous.fallback.in_flight_per_replica
                               if previous.fallback else None)
        decision, memory = decide_replicas(spec, inputs, memory, now=now)
        decision = override_scaling(decision, cheaper, spec)
        scaling = ScalingOutcome(reading=observation.signals, source=observation.source, decision=decision)
        pool_events += metrics_events(find_condition(previous.conditions, "MetricsAvailable"),
                                      observation.signals, observation.source)
        if decision.desired != decision.current:
            pool_events.append(events.scaled(decision.current, decision.desired, decision.message))
        total = decision.desired
    rollout = decide_rollout(observation.generation, observation.deployments.deployments,
                             observation.rendered_templates, observation.upgrade_gate)
    if rollout.started:
        pool_events.append(events.upgrade_started(observation.upgrade_gate.limit))
    drain = plan_drains(pods, observation.notices, previous.interruptions, observation.deployments,
                        spec.interruption, now=now)
    fallback = decide_fallback(spec, previous, observation.signals, decision,
                               ready=observation.deployments.ready_total, generation=observation.generation, now=now,
                               cheaper=cheaper)
    return Plan(spec=spec, split=shift_split(split_replicas(total, spec.capacity), spot.spot_cap), scaling=scaling,
                memory=memory, events=(*pool_events, *spot.events, *drain.events, *fallback.events),
                rollout=rollout, drain=drain, spot=spot, fallback=fallback, prefer_cheaper=cheaper)


def _starting(observation: Observation, spec: InferencePoolSpec, current: int, ready: int, now: datetime) -> int:
    """Replicas asked for and not ready yet that still count as capacity on its way.

    With the pods observed, only those younger than ``startupSeconds``; a replica stuck past it (or
    pending with no node) no longer does, so the scaler says ``CapacityNotReady`` instead of waiting.
    """
    if observation.pods is None:
        return max(0, current - ready)
    startup = spec.scaling.startup_seconds
    starting = sum(count_by_readiness(observation.pods, capacity_type, now=now, startup_seconds=startup)[1]
                   for capacity_type in CapacityType)
    return min(starting, max(0, current - ready))


def conclude(observation: Observation, planned: Plan, applied: Sequence[AppliedChange], *, now: datetime,
             reporting: Reporting | None = None, evictions: Sequence[EvictionResult] = ()) -> Conclusion:
    """The status and the Events after the apply step: what the server did is reported, once."""
    reporting = reporting or Reporting()
    previous = observation.previous
    conflicts = [c for c in applied if c.action == "conflict"]
    failures = [c for c in applied if c.action == "failed"]
    status = compute_status(
        previous, generation=observation.generation,
        spec=planned.spec if planned.spec is not None else _problems(observation.spec),
        observation=observation.deployments, conflicts=[c.what for c in conflicts],
        apply_failures=[f"{c.what} ({c.message})" for c in failures], scaling=planned.scaling,
        signals_refresh_seconds=reporting.signals_refresh_seconds, now=now,
        upgrade_waiting=planned.rollout.waiting, upgrade_limit=observation.upgrade_gate.limit,
        split=planned.split, interruptions=record_evictions(planned.drain.records, evictions, now=now),
        spot=planned.spot.state, fallback=planned.fallback, prefer_cheaper=planned.prefer_cheaper,
    )
    pool_events = list(planned.events)
    for change in applied:
        if change.action == "created":
            pool_events.append(events.object_created(change.kind, change.name, change.detail))
        elif change.action == "updated":
            pool_events.append(events.object_updated(change.kind, change.name, change.fields))
    previous_ready = find_condition(previous.conditions, "Ready")
    if conflicts and not (previous_ready and previous_ready.reason == "ObjectConflict"):
        pool_events += [events.object_conflict(c.kind, c.name) for c in conflicts]
    # One Warning per refused object while the refusal lasts (the Ready message keeps saying so).
    already_reported = previous_ready.message if previous_ready and previous_ready.reason == "ApplyFailed" else ""
    pool_events += [events.apply_failed(c.what, c.message) for c in failures if f"{c.what} (" not in already_reported]
    return Conclusion(status=status, events=(*pool_events,))


def _problems(spec: InferencePoolSpec | tuple[SpecProblem, ...]) -> Sequence[SpecProblem]:
    return () if isinstance(spec, InferencePoolSpec) else spec

