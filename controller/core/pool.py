"""One reconcile of a pool, as values: validate, decide the replica split, compute the status.

Nothing here reads a clock or talks to an API; the handler passes ``now`` and
what it observed, and applies what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from controller.api.crd import POOL_NAME_RULES
from controller.api.spec import InferencePoolSpec
from controller.api.status import (
    ConditionStatus,
    InferencePoolStatus,
    InterruptionRecord,
    ReplicaCounts,
    Signals,
    SpotStatus,
)
from controller.core.capacity import CapacitySplit, CapacityType, split_replicas
from controller.core.cheaper import CheaperDecision
from controller.core.conditions import find_condition, set_condition
from controller.core.cost import pool_cost
from controller.core.fallback import FallbackDecision
from controller.core.scaling import effective_min_replicas
from controller.core.scaling_report import (
    ScalingOutcome,
    decision_status,
    metrics_condition,
    refreshed_signals,
)

__all__ = [
    "DeploymentState",
    "PoolObservation",
    "SpecProblem",
    "compute_status",
    "describe_problems",
    "desired_replicas",
    "invalid_spec_needs_warning",
    "validate_pool",
]


@dataclass(frozen=True)
class SpecProblem:
    """One reason a pool's spec cannot be acted on, with the field it is about."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _field_path(location: Sequence[int | str], extra: str) -> str:
    parts = ["spec"]
    for item in location:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    path = "".join(parts)
    return f"{path}.{extra}" if extra else path


def validate_pool(name: str, raw_spec: Mapping[str, Any] | None) -> InferencePoolSpec | list[SpecProblem]:
    """The parsed spec, or every problem found in it (the name's problems included)."""
    problems = [SpecProblem(rule.field_path, rule.message) for rule in POOL_NAME_RULES if not rule.check(name)]
    try:
        spec = InferencePoolSpec.model_validate(dict(raw_spec or {}))
    except ValidationError as error:
        for detail in error.errors(include_url=False):
            context = detail.get("ctx") or {}
            extra = str(context.get("field", "")) if detail["type"] == "cross_field" else ""
            problems.append(SpecProblem(_field_path(detail["loc"], extra), detail["msg"]))
        return problems
    return problems or spec


def describe_problems(problems: Sequence[SpecProblem]) -> str:
    return "; ".join(str(problem) for problem in problems)


@dataclass(frozen=True)
class DeploymentState:
    """What one owned Deployment looks like now."""

    replicas: int
    ready: int
    template: str | None = None  # fingerprint of the pod template last applied to it
    template_generation: int | None = None  # the pool generation that template was rolled for
    rolling: bool = False  # its pods are being replaced with a new template


@dataclass(frozen=True)
class PoolObservation:
    """What the operator sees of a pool's owned Deployments, by capacity type."""

    deployments: Mapping[CapacityType, DeploymentState]

    @property
    def total_replicas(self) -> int | None:
        if not self.deployments:
            return None
        return sum(state.replicas for state in self.deployments.values())

    @property
    def ready_total(self) -> int:
        return sum(state.ready for state in self.deployments.values())

    def ready(self, capacity_type: CapacityType) -> int:
        state = self.deployments.get(capacity_type)
        return state.ready if state else 0

    def replicas(self, capacity_type: CapacityType) -> int:
        state = self.deployments.get(capacity_type)
        return state.replicas if state else 0


def desired_replicas(spec: InferencePoolSpec, observation: PoolObservation) -> int:
    """Keep what runs now, within the spec's bounds; a new pool starts at its minimum.

    The floor is the scaler's: ``min: 0`` counts only when the API fallback can serve meanwhile.
    """
    floor = effective_min_replicas(spec)
    current = observation.total_replicas
    wanted = floor if current is None else current
    return max(floor, min(spec.replicas.max, wanted))


def invalid_spec_needs_warning(previous: InferencePoolStatus, generation: int) -> bool:
    """Warn once per invalid generation: not on every loop, and not again after a restart."""
    condition = find_condition(previous.conditions, "SpecValid")
    return not (condition and condition.status == "False" and condition.observed_generation == generation)


def _replica_counts(desired: CapacitySplit, observation: PoolObservation) -> ReplicaCounts:
    spot_ready = observation.ready(CapacityType.SPOT)
    on_demand_ready = observation.ready(CapacityType.ON_DEMAND)
    return ReplicaCounts(
        desired=desired.total,
        ready=spot_ready + on_demand_ready,
        spot_desired=desired.spot,
        spot_ready=spot_ready,
        on_demand_desired=desired.on_demand,
        on_demand_ready=on_demand_ready,
    )


def _readiness(counts: ReplicaCounts) -> tuple[bool, str, str]:
    detail = (
        f"spot {counts.spot_ready}/{counts.spot_desired}, on-demand {counts.on_demand_ready}/{counts.on_demand_desired}"
    )
    if counts.desired == 0:
        return True, "ScaledToZero", "no replicas wanted"
    if counts.ready >= counts.desired:
        return True, "ReplicasReady", f"{counts.ready}/{counts.desired} replicas ready ({detail})"
    return False, "ReplicasNotReady", f"{counts.ready}/{counts.desired} replicas ready ({detail})"


def _spot_disrupted(records: Sequence[InterruptionRecord],
                    spot: SpotStatus | None) -> tuple[ConditionStatus, str, str]:
    """The SpotDisrupted condition: replicas being drained, spot capacity missing, or neither."""
    draining = [r for r in records if r.outcome in ("Replacing", "Draining")]
    parts = [f"{r.pod} ({r.kind} on {r.node or '?'}, {r.outcome.lower()}, deadline {r.deadline})" for r in draining]
    spot_text = (f"spot capacity missing since {spot.unavailable_since}: {spot.moved_replicas} replica(s) run on "
                 f"on-demand instead, probe {spot.probe_attempts}" if spot else "")
    if draining:
        text = f"{len(draining)} replica(s) being replaced or drained: {', '.join(parts)}"
        return "True", "ReplicasDraining", f"{text}; {spot_text}" if spot_text else text
    if spot:
        return "True", "SpotCapacityUnavailable", spot_text
    drained = [r for r in records if r.outcome == "Drained"]
    last = f"; last drained: {drained[-1].pod} at {drained[-1].drained_time}" if drained else ""
    return "False", "NoDisruption", f"no replica is being drained and spot capacity is available{last}"


def compute_status(
    previous: InferencePoolStatus,
    *,
    generation: int,
    spec: InferencePoolSpec | Sequence[SpecProblem],
    observation: PoolObservation,
    conflicts: Sequence[str] = (),
    apply_failures: Sequence[str] = (),
    scaling: ScalingOutcome | None = None,
    signals_refresh_seconds: float = 15.0,
    now: datetime,
    upgrade_waiting: bool = False,
    upgrade_limit: int = 2,
    split: CapacitySplit | None = None,
    interruptions: Sequence[InterruptionRecord] | None = None,
    spot: SpotStatus | None = None,
    fallback: FallbackDecision | None = None,
    prefer_cheaper: CheaperDecision | None = None,
) -> InferencePoolStatus:
    """The whole status as a value; the caller writes it only when it differs from the previous one.

    ``conflicts`` names objects the pool should own but somebody else does ("Service llama");
    ``apply_failures`` the objects the API server refused, with its message.
    ``scaling`` is this evaluation's reading and decision; without one (a new pool) the pool
    keeps its replicas within bounds. ``split`` is the planned one (the spec's, or shifted to on-demand
    while spot is missing, ``spot``); ``interruptions`` the drain records (None: as they were).
    ``fallback`` brings the Saturated and FallbackActive conditions and the mode (None: as they were);
    ``prefer_cheaper`` the preferCheaper timers in ``cost`` (None: as they were).
    """
    conditions = list(previous.conditions)
    updates: dict[str, object] = {}
    if isinstance(spec, InferencePoolSpec):
        total = scaling.decision.desired if scaling else desired_replicas(spec, observation)
        wanted = split_replicas(total, spec.capacity)
        split = split or wanted
        counts = _replica_counts(split, observation)
        ready, reason, message = _readiness(counts)
        if conflicts:
            ready, reason = False, "ObjectConflict"
            message = f"{', '.join(conflicts)} already exist and belong to somebody else; {message}"
        if apply_failures:
            ready, reason = False, "ApplyFailed"
            message = f"the API server refused {'; '.join(apply_failures)}; {message}"
        if upgrade_waiting:
            message = (f"{message}; an operator upgrade waits to roll its pods: at most {upgrade_limit} pools "
                       "roll at a time (POOLPILOT_MAX_CONCURRENT_UPGRADES)")
        conditions = set_condition(conditions, "SpecValid", "True", "Valid",
                                   f"generation {generation} is valid", generation=generation, now=now)
        conditions = set_condition(conditions, "Ready", "True" if ready else "False", reason, message,
                                   generation=generation, now=now)
        if scaling is not None:
            previous_metrics = find_condition(previous.conditions, "MetricsAvailable")
            metrics_status, metrics_reason, metrics_message = metrics_condition(scaling.reading, scaling.source)
            conditions = set_condition(conditions, "MetricsAvailable", metrics_status, metrics_reason,
                                       metrics_message, generation=generation, now=now)
            # A signal that went missing (or came back) shows at once, not after the refresh interval.
            flipped = previous_metrics is None or (previous_metrics.status, previous_metrics.reason) != (
                metrics_status, metrics_reason)
            updates["signals"] = refreshed_signals(previous.signals, scaling, metrics_flipped=flipped, now=now,
                                                   refresh_seconds=signals_refresh_seconds)
            updates["last_decision"] = decision_status(previous.last_decision, scaling.decision, now)
        records = list(previous.interruptions if interruptions is None else interruptions)
        spot_now = spot.model_copy(update={"moved_replicas": max(0, wanted.spot - split.spot)}) if spot else None
        updates["interruptions"] = records
        updates["spot"] = spot_now
        conditions = set_condition(conditions, "SpotDisrupted", *_spot_disrupted(records, spot_now),
                                   generation=generation, now=now)
        if fallback is not None:
            for decided in fallback.conditions:  # set against the same previous ones: the same transitions
                conditions = set_condition(conditions, decided.type, decided.status, decided.reason,
                                           decided.message, generation=generation, now=now)
            updates["fallback"] = fallback.status
        # The cost follows the signals shown (refreshed at most every signals_refresh_seconds) and the
        # replicas the Deployments ask for now: what is being paid for.
        shown = updates.get("signals", previous.signals)
        assert shown is None or isinstance(shown, Signals)
        cost = pool_cost(
            spec.cost, spot_replicas=observation.replicas(CapacityType.SPOT),
            on_demand_replicas=observation.replicas(CapacityType.ON_DEMAND),
            prompt_tokens_per_second=shown.prompt_tokens_per_second if shown else None,
            generation_tokens_per_second=shown.generation_tokens_per_second if shown else None)
        if prefer_cheaper is None and cost is not None and previous.cost is not None:
            prefer_cheaper = CheaperDecision(api_cheaper_since=previous.cost.api_cheaper_since,
                                             on_api_since=previous.cost.on_api_since,
                                             pool_cheaper_since=previous.cost.pool_cheaper_since)
        updates["cost"] = prefer_cheaper.stamp(cost) if prefer_cheaper is not None else cost
    else:
        # Nothing is changed on an invalid spec: report the replicas as they are.
        as_is = CapacitySplit(spot=observation.replicas(CapacityType.SPOT),
                              on_demand=observation.replicas(CapacityType.ON_DEMAND))
        counts = _replica_counts(as_is, observation)
        problems = describe_problems(spec)
        conditions = set_condition(conditions, "SpecValid", "False", "InvalidSpec", problems,
                                   generation=generation, now=now)
        conditions = set_condition(
            conditions, "Ready", "False", "InvalidSpec",
            f"the spec is invalid, so running replicas are left as they are ({counts.ready}/{counts.desired} "
            "ready); fix the spec (see SpecValid)",
            generation=generation, now=now,
        )
    return previous.model_copy(update={
        "observed_generation": generation,
        "conditions": conditions,
        "replicas": counts,
        **updates,
    })
