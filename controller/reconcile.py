"""One evaluation of one pool, top to bottom: observe -> plan -> apply -> conclude -> report.

``observe`` does every read (the pool and its objects come from Kopf's watch cache, the
signals from the pool's metrics source); ``plan`` and ``conclude`` (``controller/core/plan.py``)
make every decision and do no I/O; ``apply`` writes only what differs; ``report`` writes the
status only when it changed and hands the Events back to the caller, so an idle pool costs
no writes at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core import events
from controller.core.capacity import CapacityType
from controller.core.drain import EvictionResult
from controller.core.notices import InterruptionNotice
from controller.core.plan import AppliedChange, Conclusion, Observation, Plan, Reporting, conclude, plan
from controller.core.pool import SpecProblem, validate_pool
from controller.core.replicas import ReplicaPod
from controller.core.rollout import UpgradeGate
from controller.core.scaling import ScalingState
from controller.kube.apply import CachedLookup, VerifiedObjects, apply_owned_objects
from controller.kube.client import KubeApi, NotFound
from controller.kube.diff import last_applied, replacing_patch
from controller.kube.drain import delete_retired, evict_pods, release_pods
from controller.kube.httproute import set_route_weights
from controller.kube.observe import observe_deployments, observe_pods
from controller.kube.render import (
    CAPACITY_TYPE_LABEL,
    DEFAULT_ROUTER_IMAGE,
    ROUTER_PORT,
    TEMPLATE_GENERATION_ANNOTATION,
    OwnedObject,
    PoolRef,
    render_owned_objects,
    rendered_template_fingerprints,
    router_enabled,
    with_template_generation,
)
from controller.signal_reader import SignalReader
from controller.sources.metrics.urls import replica_metrics_base_url

__all__ = ["PoolSnapshot", "ReconcileResult", "Reporting", "UpgradeSlots", "observe", "parse_status",
           "reconcile_pool"]

Manifest = dict[str, Any]
logger = logging.getLogger(__name__)


@dataclass
class ParsedSpec:
    """The pool's spec as validated, and the pod templates it renders, for one (uid, generation).

    The API server bumps a custom resource's generation on every change outside metadata and status,
    so while the generation stays, so does the spec: a steady pool validates and renders it once,
    not every few seconds.
    """

    made_for: tuple[str, int] | None = None
    spec: InferencePoolSpec | tuple[SpecProblem, ...] = ()
    templates: Mapping[CapacityType, str] = field(default_factory=dict)

    def get(self, pool: PoolRef, generation: int,
            raw_spec: Mapping[str, Any] | None) -> tuple[InferencePoolSpec | tuple[SpecProblem, ...],
                                                         Mapping[CapacityType, str]]:
        if self.made_for != (pool.uid, generation) or not generation:
            validated = validate_pool(pool.name, raw_spec)
            self.spec = validated if isinstance(validated, InferencePoolSpec) else tuple(validated)
            self.templates = (rendered_template_fingerprints(pool, self.spec)
                              if isinstance(self.spec, InferencePoolSpec) else {})
            self.made_for = (pool.uid, generation)
        return self.spec, self.templates


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
    ready_router_ips: tuple[str, ...] = ()  # the pool's ready router pods, scraped for the demand they see
    pods: tuple[Mapping[str, Any], ...] = ()  # the replica pods (trimmed)
    # The reclaim notices for one node: its taints, and what the SQS queue said about its instance.
    notices_for_node: Callable[[str], tuple[InterruptionNotice, ...]] = lambda node: ()
    scaling_state: ScalingState = field(default_factory=ScalingState)
    # Remembered across evaluations (like scaling_state, in memory): objects found as wanted, by version,
    # and the spec as parsed and rendered for its generation.
    verified: VerifiedObjects = field(default_factory=VerifiedObjects)
    parsed: ParsedSpec = field(default_factory=ParsedSpec)
    router_image: str = DEFAULT_ROUTER_IMAGE  # the operator's setting (fallback.route: router)


@dataclass(frozen=True)
class ReconcileResult:
    events: list[events.PoolEvent]
    status_written: bool
    spec: InferencePoolSpec | None
    scaling_state: ScalingState = field(default_factory=ScalingState)
    retry_after: float | None = None  # an eviction retry is due this soon
    written_status: Manifest | None = None  # the status this evaluation wrote, if it wrote one
    written_version: str | None = None  # the pool's resourceVersion that write made
    # The status before and after (what metrics and decision logs report); None when the pool went away.
    previous: InferencePoolStatus | None = None
    status: InferencePoolStatus | None = None


@dataclass
class UpgradeSlots:
    """The fleet's upgrade slots (remembered across pools, in memory): which pools roll for an upgrade.

    Read right before a pool's plan and recorded right after it, with no await in between, so two
    pools evaluated concurrently cannot both take the last slot. After a restart the set starts
    empty; a pool still rolling then simply takes a slot again on its first evaluation.
    """

    limit: int = 2
    holders: set[tuple[str, str]] = field(default_factory=set)

    def gate_for(self, key: tuple[str, str]) -> UpgradeGate:
        return UpgradeGate(limit=self.limit, rolling_elsewhere=len(self.holders - {key}), held=key in self.holders)

    def record(self, key: tuple[str, str], holds: bool) -> None:
        if holds:
            self.holders.add(key)
        else:
            self.holders.discard(key)


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
    spec, rendered = pool.parsed.get(pool.ref, pool.generation, pool.raw_spec)
    deployments = observe_deployments(pool.deployments)
    previous = parse_status(pool.raw_status)
    if not isinstance(spec, InferencePoolSpec):
        return Observation(generation=pool.generation, spec=spec, previous=previous, deployments=deployments)
    if deployments.total_replicas is None:
        return Observation(generation=pool.generation, spec=spec, previous=previous, deployments=deployments,
                           rendered_templates=rendered)
    pods = observe_pods(pool.pods)
    notices = _notices_for(pods, spec, pool.notices_for_node)
    endpoints = _endpoints(pool.ready_pod_ips, spec.model.port)
    routers = _endpoints(pool.ready_router_ips, ROUTER_PORT) if router_enabled(spec) else ()
    signals = await reader.read((pool.ref.namespace, pool.ref.name), spec, endpoints, now=now,
                                router_addresses=routers)
    return Observation(generation=pool.generation, spec=spec, previous=previous, deployments=deployments,
                       source=spec.metrics.source, signals=signals, rendered_templates=rendered, pods=pods,
                       notices=notices)


def _notices_for(pods: Iterable[ReplicaPod], spec: InferencePoolSpec,
                 notices_for_node: Callable[[str], tuple[InterruptionNotice, ...]]) -> tuple[InterruptionNotice, ...]:
    """The notices for the nodes the pool's replicas run on; taints count only with interruption.nodeTaints."""
    nodes = sorted({pod.node for pod in pods if pod.node})
    found = (notice for node in nodes for notice in notices_for_node(node))
    return tuple(n for n in found if spec.interruption.node_taints or n.source != "node-taint")


def _endpoints(pod_ips: Iterable[str], port: int) -> tuple[str, ...]:
    """Where the pods source scrapes; a pod IP that is not an address is left out (and logged), not fatal."""
    found = []
    for ip in pod_ips:
        try:
            found.append(replica_metrics_base_url(ip, port))
        except ValueError as error:
            logger.warning("not scraping a replica: %s", error)
    return tuple(found)


async def apply(api: KubeApi, pool: PoolSnapshot, planned: Plan) -> tuple[list[AppliedChange], list[EvictionResult]]:
    """Bring the pods and owned objects to the plan; nothing is written for an invalid spec.

    Doomed replicas are released (replaced, out of routing) before anything else is written, and
    evicted after the Deployments are applied.
    """
    if planned.spec is None or planned.split is None:
        return [], []
    changes = await release_pods(api, pool.ref, planned.drain)
    owned = [_as_planned(o, pool, planned) for o in render_owned_objects(pool.ref, planned.spec, planned.split,
                                                                            router_image=pool.router_image)]
    changes += await apply_owned_objects(api, pool.ref.namespace, pool.ref.uid, owned, pool.cached, pool.verified)
    if planned.spec.fallback.route == "httpRoute" and planned.fallback is not None:
        # The Gateway's weights follow the mode before the status says it (the router reads the status).
        routed = await set_route_weights(api, pool.ref, planned.spec, planned.fallback.mode)
        changes += [routed] if routed is not None else []
    await delete_retired(api, pool.ref, pool.cached, planned.spec)
    return changes, await evict_pods(api, pool.ref.namespace, planned.drain)


def _as_planned(owned: OwnedObject, pool: PoolSnapshot, planned: Plan) -> OwnedObject:
    """A Deployment rolls for this generation, or keeps the template it was last applied with (held)."""
    labels = owned.manifest["metadata"]["labels"]
    if owned.kind != "Deployment" or CAPACITY_TYPE_LABEL not in labels:
        return owned  # the router's Deployment is no replica template: not gated by the rollout
    capacity_type = CapacityType(labels[CAPACITY_TYPE_LABEL])
    previous = last_applied(pool.cached(owned.kind, owned.name) or {})
    if capacity_type in planned.rollout.hold and previous is not None:
        recorded = previous.get("metadata", {}).get("annotations", {}).get(TEMPLATE_GENERATION_ANNOTATION)
        manifest = {**owned.manifest, "spec": {**owned.manifest["spec"], "template": previous["spec"]["template"]}}
        manifest = with_template_generation(manifest, recorded) if recorded is not None else manifest
        return OwnedObject(owned.api_version, owned.kind, owned.plural, owned.name, manifest)
    return OwnedObject(owned.api_version, owned.kind, owned.plural, owned.name,
                       with_template_generation(owned.manifest, pool.generation))


@dataclass(frozen=True)
class StatusWrite:
    written: bool
    resource_version: str | None = None  # the pool's, as the server answered the write


async def report(api: KubeApi, pool: PoolSnapshot, observation: Observation,
                 conclusion: Conclusion) -> StatusWrite | None:
    """Write the status if it changed; None if the pool is gone."""
    wanted = _status_dump(conclusion.status)
    previous = _status_dump(observation.previous)
    if wanted == previous:
        return StatusWrite(written=False)
    try:
        patch = replacing_patch(pool.raw_status or previous, wanted)
        answer = await api.patch_pool_status(pool.ref.namespace, pool.ref.name, patch)
    except NotFound:
        return None  # deleted while we evaluated it: nothing left to report on, and Kopf stops this loop
    return StatusWrite(written=True, resource_version=(answer.get("metadata") or {}).get("resourceVersion"))


async def reconcile_pool(api: KubeApi, reader: SignalReader, pool: PoolSnapshot, *, now: datetime,
                         reporting: Reporting | None = None, upgrades: UpgradeSlots | None = None) -> ReconcileResult:
    upgrades = upgrades if upgrades is not None else UpgradeSlots()
    key = (pool.ref.namespace, pool.ref.name)
    observed = await observe(reader, pool, now=now)
    # The fleet's slots are read and taken with no await in between (see UpgradeSlots).
    observation = dataclasses.replace(observed, upgrade_gate=upgrades.gate_for(key))
    planned = plan(observation, pool.scaling_state, now=now)
    upgrades.record(key, planned.rollout.holds_slot)
    applied, evictions = await apply(api, pool, planned)
    conclusion = conclude(observation, planned, applied, now=now, reporting=reporting, evictions=evictions)
    write = await report(api, pool, observation, conclusion)
    if write is None:
        return ReconcileResult(events=[], status_written=False, spec=None)
    return ReconcileResult(events=list(conclusion.events), status_written=write.written, spec=planned.spec,
                           scaling_state=planned.memory, retry_after=planned.drain.retry_after,
                           written_status=_status_dump(conclusion.status) if write.written else None,
                           written_version=write.resource_version,
                           previous=observation.previous, status=conclusion.status)
