"""One evaluation of one pool, top to bottom: observe -> plan -> apply -> conclude -> report.

``observe`` does every read (the pool and its objects come from Kopf's watch cache, the
signals from the pool's metrics source); ``plan`` and ``conclude`` (``controller/core/plan.py``)
make every decision and do no I/O; ``apply`` writes only what differs; ``report`` writes the
status only when it changed and hands the Events back to the caller, so an idle pool costs
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
from controller.core.plan import AppliedChange, Conclusion, Observation, Plan, Reporting, conclude, plan
from controller.core.pool import validate_pool
from controller.core.scaling import ScalingState
from controller.kube.apply import CachedLookup, apply_owned_objects
from controller.kube.client import KubeApi, NotFound
from controller.kube.diff import replacing_patch
from controller.kube.observe import observe_deployments
from controller.kube.render import PoolRef, render_owned_objects
from controller.signal_reader import SignalReader

__all__ = ["PoolSnapshot", "ReconcileResult", "Reporting", "observe", "parse_status", "reconcile_pool"]

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


def parse_status(raw_status: Mapping[str, Any] | None) -> InferencePoolStatus:
    """The status as last written; a status we cannot read is treated as empty and rewritten."""
    try:
        return InferencePoolStatus.model_validate(dict(raw_status or {}))
    except ValidationError:
        return InferencePoolStatus()


def _status_dump(status: InferencePoolStatus) -> Manifest:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


async def observe(reader: SignalReader, pool: PoolSnapshot, *, now: datetime) -> Observation:
    """Every read of one evaluation. Signals are read only for a valid pool whose Deployments exist."""
    spec = validate_pool(pool.ref.name, pool.raw_spec)
    deployments = observe_deployments(pool.deployments)
    observation = Observation(generation=pool.generation, spec=spec if isinstance(spec, InferencePoolSpec)
                              else tuple(spec), previous=parse_status(pool.raw_status), deployments=deployments)
    if not isinstance(spec, InferencePoolSpec) or deployments.total_replicas is None:
        return observation
    endpoints = tuple(f"http://{ip}:{spec.model.port}" for ip in pool.ready_pod_ips)
    signals = await reader.read((pool.ref.namespace, pool.ref.name), spec, endpoints, now=now)
    return Observation(generation=observation.generation, spec=spec, previous=observation.previous,
                       deployments=deployments, source=spec.metrics.source, signals=signals)


async def apply(api: KubeApi, pool: PoolSnapshot, planned: Plan) -> list[AppliedChange]:
    """Bring the owned objects to the plan; nothing is written for an invalid spec."""
    if planned.spec is None or planned.split is None:
        return []
    owned = render_owned_objects(pool.ref, planned.spec, planned.split)
    return await apply_owned_objects(api, pool.ref.namespace, pool.ref.uid, owned, pool.cached)


async def report(api: KubeApi, pool: PoolSnapshot, observation: Observation, conclusion: Conclusion) -> bool | None:
    """Write the status if it changed: whether it was written, None if the pool is gone."""
    wanted = _status_dump(conclusion.status)
    previous = _status_dump(observation.previous)
    if wanted == previous:
        return False
    try:
        patch = replacing_patch(pool.raw_status or previous, wanted)
        await api.patch_pool_status(pool.ref.namespace, pool.ref.name, patch)
    except NotFound:
        return None  # deleted while we evaluated it: nothing left to report on, and Kopf stops this loop
    return True


async def reconcile_pool(api: KubeApi, reader: SignalReader, pool: PoolSnapshot, *, now: datetime,
                         reporting: Reporting | None = None) -> ReconcileResult:
    observation = await observe(reader, pool, now=now)
    planned = plan(observation, pool.scaling_state, now=now)
    applied = await apply(api, pool, planned)
    conclusion = conclude(observation, planned, applied, now=now, reporting=reporting)
    written = await report(api, pool, observation, conclusion)
    if written is None:
        return ReconcileResult(events=[], status_written=False, spec=None)
    return ReconcileResult(events=list(conclusion.events), status_written=written, spec=planned.spec,
                           scaling_state=planned.memory)
