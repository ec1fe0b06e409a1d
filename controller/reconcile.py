"""One evaluation of one pool: observe, decide, apply, report.

The decisions are the core's; this module wires them to the API. It returns the
Events to post and writes the status only when it differs, so an idle pool costs
no writes at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core import events
from controller.core.capacity import split_replicas
from controller.core.conditions import find_condition
from controller.core.pool import (
    PoolObservation,
    compute_status,
    describe_problems,
    desired_replicas,
    invalid_spec_needs_warning,
    validate_pool,
)
from controller.core.scaling import ScalingInputs, ScalingState, decide_replicas
from controller.core.scaling_report import ScalingOutcome, metrics_events
from controller.kube.apply import AppliedChange, CachedLookup, apply_owned_objects
from controller.kube.client import KubeApi, NotFound
from controller.kube.observe import observe_deployments
from controller.kube.render import PoolRef, render_owned_objects
from controller.signal_reader import SignalReader
from controller.sources.metrics.urls import replica_metrics_base_url

__all__ = ["PoolSnapshot", "ReconcileResult", "Reporting", "parse_status", "reconcile_pool"]

Manifest = dict[str, Any]


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool and its owned objects as the operator sees them at the start of an evaluation."""

    ref: PoolRef
    generation: int
    raw_spec: Mapping[str, Any] | None
    raw_status: Mapping[str, Any] | None
    deployments: Iterable[Mapping[str, Any]]
    cached: CachedLookup
    ready_pod_ips: tuple[str, ...] = ()  # where the pods source scrapes
    scaling_state: ScalingState = field(default_factory=ScalingState)


@dataclass(frozen=True)
class ReconcileResult:
    events: list[events.PoolEvent]
    status_written: bool
    spec: InferencePoolSpec | None
    scaling_state: ScalingState = field(default_factory=ScalingState)


@dataclass(frozen=True)
class Reporting:
    """How the status reports: the operator's settings that shape it."""

    signals_refresh_seconds: float = 15.0


def parse_status(raw_status: Mapping[str, Any] | None) -> InferencePoolStatus:
    """The status as last written; a status we cannot read is treated as empty and rewritten."""
    try:
        return InferencePoolStatus.model_validate(dict(raw_status or {}))
    except ValidationError:
        return InferencePoolStatus()


def _change_events(changes: list[AppliedChange], detail: Mapping[str, str]) -> list[events.PoolEvent]:
    result = []
    for change in changes:
        if change.action == "created":
            result.append(events.object_created(change.kind, change.name, detail.get(change.name, "")))
        elif change.action == "updated":
            result.append(events.object_updated(change.kind, change.name, change.fields))
    return result


def _replicas_phrase(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"


def _status_dump(status: InferencePoolStatus) -> Manifest:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


async def _scale(reader: SignalReader, pool: PoolSnapshot, spec: InferencePoolSpec, observation: PoolObservation,
                 *, now: datetime) -> tuple[ScalingOutcome | None, ScalingState]:
    """Read the signals and decide; a pool with no Deployments yet starts at its minimum instead."""
    current = observation.total_replicas
    if current is None:
        return None, pool.scaling_state
    endpoints = tuple(replica_metrics_base_url(ip, spec.model.port) for ip in pool.ready_pod_ips)
    key = (pool.ref.namespace, pool.ref.name)
    reading = await reader.read(key, spec, endpoints, now=now)
    ready = observation.ready_total
    inputs = ScalingInputs(signals=reading, current_replicas=current, ready_replicas=ready,
                           starting_replicas=max(0, current - ready))
    decision, state = decide_replicas(spec, inputs, pool.scaling_state, now=now)
    return ScalingOutcome(reading=reading, source=spec.metrics.source, decision=decision), state


async def reconcile_pool(api: KubeApi, reader: SignalReader, pool: PoolSnapshot, *, now: datetime,
                         reporting: Reporting | None = None) -> ReconcileResult:
    reporting = reporting or Reporting()
    previous = parse_status(pool.raw_status)
    observation = observe_deployments(pool.deployments)
    spec = validate_pool(pool.ref.name, pool.raw_spec)
    pool_events: list[events.PoolEvent] = []
    conflicts: list[AppliedChange] = []
    failures: list[AppliedChange] = []
    scaling: ScalingOutcome | None = None
    scaling_state = pool.scaling_state

    if isinstance(spec, InferencePoolSpec):
        scaling, scaling_state = await _scale(reader, pool, spec, observation, now=now)
        total = scaling.decision.desired if scaling else desired_replicas(spec, observation)
        if scaling is not None:
            pool_events += metrics_events(find_condition(previous.conditions, "MetricsAvailable"),
                                          scaling.reading, scaling.source)
            if scaling.decision.desired != scaling.decision.current:
                pool_events.append(events.scaled(scaling.decision.current, scaling.decision.desired,
                                                 scaling.decision.message))
        split = split_replicas(total, spec.capacity)
        owned = render_owned_objects(pool.ref, spec, split)
        changes = await apply_owned_objects(api, pool.ref.namespace, pool.ref.uid, owned, pool.cached)
        replicas_by_name = {o.name: _replicas_phrase(o.manifest["spec"]["replicas"]) for o in owned
                            if o.kind == "Deployment"}
        pool_events += _change_events(changes, replicas_by_name)
        conflicts = [c for c in changes if c.action == "conflict"]
        failures = [c for c in changes if c.action == "failed"]
        previous_valid = find_condition(previous.conditions, "SpecValid")
        if previous_valid is not None and previous_valid.status == "False":
            pool_events.append(events.spec_accepted(pool.generation))
    elif invalid_spec_needs_warning(previous, pool.generation):
        pool_events.append(events.spec_invalid(describe_problems(spec)))

    status = compute_status(previous, generation=pool.generation, spec=spec, observation=observation,
                            conflicts=[c.what for c in conflicts],
                            apply_failures=[f"{c.what} ({c.message})" for c in failures], scaling=scaling,
                            signals_refresh_seconds=reporting.signals_refresh_seconds, now=now)
    previous_ready = find_condition(previous.conditions, "Ready")
    if conflicts and not (previous_ready and previous_ready.reason == "ObjectConflict"):
        pool_events += [events.object_conflict(c.kind, c.name) for c in conflicts]
    # One Warning per refused object while the refusal lasts (the Ready message keeps saying so).
    already_reported = previous_ready.message if previous_ready and previous_ready.reason == "ApplyFailed" else ""
    pool_events += [events.apply_failed(c.what, c.message) for c in failures if f"{c.what} (" not in already_reported]

    status_written = _status_dump(status) != _status_dump(previous)
    if status_written:
        try:
            await api.patch_pool_status(pool.ref.namespace, pool.ref.name, _status_dump(status))
        except NotFound:
            # Deleted while we evaluated it: nothing left to report on, and Kopf is stopping this loop.
            return ReconcileResult(events=[], status_written=False, spec=None)
    return ReconcileResult(
        events=pool_events,
        status_written=status_written,
        spec=spec if isinstance(spec, InferencePoolSpec) else None,
        scaling_state=scaling_state,
    )
