"""Kopf wiring only: settings at start-up, watch caches, one evaluation loop per pool.

Level-based: each pool's daemon evaluates the pool on a timer and at once when
the pool or one of its objects changes (an ``on.event`` wakes it). No Kopf
create/update handlers, so Kopf keeps no per-object progress state and a
restart costs no writes: the loop simply finds everything as it should be.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from controller.api.spec import API_GROUP, API_VERSION, PLURAL
from controller.core.notices import InterruptionNotice, Verdict, instance_id_from_provider_id
from controller.core.scaling import ScalingState
from controller.kube.apply import VerifiedObjects
from controller.kube.client import KubeApi, build_api_client, user_agent
from controller.kube.kopf_session import session_for
from controller.kube.observe import trimmed_pod
from controller.kube.render import (
    COMPONENT_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    POOL_LABEL,
    ROUTER_LABEL,
    SERVING_LABEL,
    PoolRef,
)
from controller.leadership import Leadership
from controller.notice_feed import NoticeFeed
from controller.reconcile import ParsedSpec, PoolSnapshot, Reporting, UpgradeSlots, reconcile_pool
from controller.settings import OperatorSettings
from controller.signal_reader import SignalReader
from controller.sources.interruptions.kube_objects import parse_node, parse_pod
from controller.sources.interruptions.sqs import SqsNoticeSource
from controller.telemetry import metrics
from controller.telemetry.logs import log_decisions

__all__ = ["Runtime"]

OWNED = {MANAGED_BY_LABEL: MANAGER}
# The kinds the operator watches that others have too: watched with OWNED as a server-side selector.
OWNED_RESOURCES = (("apps", "v1", "deployments"), ("v1", "services"), ("policy", "v1", "poddisruptionbudgets"),
                   ("v1", "pods"), ("v1", "serviceaccounts"), ("rbac.authorization.k8s.io", "v1", "roles"),
                   ("rbac.authorization.k8s.io", "v1", "rolebindings"))
PoolKey = tuple[str, str]  # (namespace, pool name)

# After a failed evaluation, retry after 1, 2, 4, ... seconds, at most this long: quick after a blip,
# gentle on an API server that is down. Every failure is logged with its cause.
MAX_ERROR_BACKOFF_SECONDS = 30.0


def error_backoff_seconds(consecutive_failures: int) -> float:
    return float(min(MAX_ERROR_BACKOFF_SECONDS, 2 ** max(0, consecutive_failures - 1)))


@dataclass
class PoolMemory:
    """What one pool's loop remembers between evaluations, in memory, dropped with the loop. A restart
    costs one full evaluation, and a scale-down waits one more window."""

    scaling_state: ScalingState = field(default_factory=ScalingState)  # the scaler's recent recommendations
    # What a steady evaluation need not redo: owned objects found as wanted, the spec parsed and rendered.
    verified: VerifiedObjects = field(default_factory=VerifiedObjects)
    parsed: ParsedSpec = field(default_factory=ParsedSpec)
    # The generation last evaluated: a pool's event wakes its loop only for a new one (a spec change),
    # not for the loop's own status writes.
    evaluated_generation: int | None = None
    # The status the loop last wrote, and the pool's resourceVersion that write made. Until the watch
    # brings that version back, the next evaluation starts from what was written, not from the cache: an
    # Event about a drain that finished must not be posted twice. The cache can lag by more than one write
    # (it may show the write before last), so any other version counts as older: the operator is the
    # status' only writer, and what it wrote last is the status.
    written_status: tuple[str | None, dict[str, Any]] | None = None

    def status_after_writes(self, resource_version: str | None, cached: Any) -> Any:
        if self.written_status is None:
            return cached
        written_version, written = self.written_status
        if written_version is not None and resource_version == written_version:
            self.written_status = None  # the watch caught up: the cache is our write
            return cached
        return written


@dataclass
class Runtime:
    """What every handler shares: built once at start-up, kept in Kopf's memo."""

    api: KubeApi
    reader: SignalReader
    settings: OperatorSettings
    wakeups: dict[PoolKey, asyncio.Event] = field(default_factory=dict)
    memories: dict[PoolKey, PoolMemory] = field(default_factory=dict)
    # Bounds how many evaluations run at once (settings.max_concurrent_evaluations).
    evaluation_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    # Which pools roll for an operator upgrade now: at most settings.max_concurrent_upgrades.
    upgrades: UpgradeSlots = field(default_factory=UpgradeSlots)
    urgent: set[PoolKey] = field(default_factory=set)  # pools woken by a reclaim notice: no debounce
    notice_feed: NoticeFeed | None = None  # the operator's SQS interruption queue, when configured
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def wakeup_for(self, key: PoolKey) -> asyncio.Event:
        return self.wakeups.setdefault(key, asyncio.Event())

    def wake_for_generation(self, key: PoolKey, generation: int) -> None:
        memory = self.memories.get(key)
        if memory is None or memory.evaluated_generation != generation:
            self.wake(key)

    def wake(self, key: PoolKey, *, urgent: bool = False) -> None:
        """Evaluate the pool now; ``urgent`` (a reclaim notice) skips the debounce that batches a burst."""
        event = self.wakeups.get(key)
        if event is not None:
            if urgent:
                self.urgent.add(key)
            event.set()

    # Set at start-up to Kopf's indexes (the handlers below fill them).
    pods_index: kopf.Index[PoolKey, dict[str, Any]] | None = None
    instances_index: kopf.Index[str, str] | None = None

    def wake_pools_on_node(self, node: str) -> None:
        """A reclaim notice for a node: the pools with replicas there are evaluated at once."""
        for key, pods in (self.pods_index.items() if self.pods_index is not None else ()):
            if any((pod.get("spec") or {}).get("nodeName") == node for pod in pods):
                self.wake(key, urgent=True)

    def node_of_instance(self, instance_id: str) -> str | None:
        if self.instances_index is None:
            return None
        return next(iter(self.instances_index.get(instance_id, [])), None)

    def notices_for_node(self, taints: kopf.Index[str, Any], node: str) -> tuple[InterruptionNotice, ...]:
        from_taints = tuple(notice for notices in taints.get(node, []) for notice in notices)
        return from_taints + (self.notice_feed.for_node(node) if self.notice_feed else ())


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.PermanentError("the operator did not start properly: no runtime in memo")
    return runtime


def _leadership(memo: kopf.Memo, settings: OperatorSettings) -> Leadership:
    """The election's part (``poolpilot run`` puts it in the memo); without one, this process writes freely."""
    leadership = memo.get("leadership")
    return leadership if isinstance(leadership, Leadership) else Leadership(identity=settings.reporting_instance)


@kopf.on.login()
async def login(logger: kopf.Logger, memo: kopf.Memo, settings: kopf.OperatorSettings,
                **_: Any) -> kopf.AiohttpSession | None:
    """Kopf's own login (the kubernetes client's configuration), with a session whose User-Agent names this
    replica and whose writes stop when the lead is lost (controller/kube/kopf_session.py)."""
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        return None
    leadership = _leadership(memo, OperatorSettings())
    return session_for(info, agent=user_agent(leadership.identity), write_gate=leadership.write_gate)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    operator_settings = OperatorSettings()
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Keep whatever Kopf stores in our own annotations, never in the status we own.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    settings.posting.reporting_component = MANAGER
    settings.posting.reporting_instance = operator_settings.reporting_instance
    settings.posting.event_name_prefix = f"{MANAGER}-"
    # Every request Kopf makes has a deadline too; watches are ended by the server and, if they go
    # silent (a half-open connection), by the client.
    timeout = operator_settings.api_timeout_seconds
    settings.networking.request_timeout = timeout
    settings.networking.connect_timeout = timeout
    settings.watching.connect_timeout = timeout
    settings.watching.server_timeout = operator_settings.watch_timeout_seconds
    settings.watching.client_timeout = operator_settings.watch_timeout_seconds + timeout
    # Only our own objects leave the API server: Kopf's `labels=` filters would apply after a whole
    # cluster's pods arrived. Initial lists come in pages.
    owned_selector = ",".join(f"{key}={value}" for key, value in OWNED.items())
    for resource in OWNED_RESOURCES:
        settings.watching.label_selectors[resource] = owned_selector
    settings.watching.chunk_size = operator_settings.list_chunk_size
    leadership = _leadership(memo, operator_settings)
    api_client = build_api_client(operator_settings.kubeconfig, agent=user_agent(leadership.identity))
    memo["runtime"] = Runtime(api=KubeApi(api_client, timeout_seconds=timeout, write_gate=leadership.write_gate),
                              reader=SignalReader(operator_settings), settings=operator_settings,
                              upgrades=UpgradeSlots(limit=operator_settings.max_concurrent_upgrades),
                              evaluation_slots=asyncio.Semaphore(operator_settings.max_concurrent_evaluations))
    runtime = memo["runtime"]
    if operator_settings.sqs_queue_url:
        source = SqsNoticeSource(operator_settings.sqs_queue_url, region=operator_settings.sqs_region,
                                 wait_seconds=operator_settings.sqs_wait_seconds)
        runtime.notice_feed = NoticeFeed(source, node_of_instance=runtime.node_of_instance,
                                         on_notice=runtime.wake_pools_on_node)
        runtime.background.append(asyncio.create_task(runtime.notice_feed.run(), name="sqs-interruption-queue"))
        logger.info("reading interruption notices from %s", operator_settings.sqs_queue_url)
    logger.info("PoolPilot started; watching %s", ", ".join(operator_settings.namespaces) or "all namespaces")


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    stop_flag = memo.get("stop_flag")
    if isinstance(stop_flag, asyncio.Event):
        # Stopped by a signal, Kopf leaves the task waiting for its stop_flag pending, then waits 5 s for
        # it as a hung task: set, the flag ends it, and the Lease is released 5 s sooner.
        stop_flag.set()
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        for task in runtime.background:
            task.cancel()
        await runtime.reader.close()
        runtime.api.close()


def _index_entry(body: kopf.Body, namespace: str | None, labels: kopf.Labels) -> dict[PoolKey, dict[str, Any]]:
    pool = labels.get(POOL_LABEL)
    if not pool or namespace is None:
        return {}
    return {(namespace, pool): copy.deepcopy(dict(body))}


@kopf.index("apps", "v1", "deployments", labels=OWNED)
def owned_deployments(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


@kopf.index("v1", "services", labels=OWNED)
def owned_services(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OWNED)
def owned_pdbs(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


# The bundled router's identity and grants (fallback.route: router).
@kopf.index("v1", "serviceaccounts", labels=OWNED)
def owned_service_accounts(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


@kopf.index("rbac.authorization.k8s.io", "v1", "roles", labels=OWNED)
def owned_roles(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


@kopf.index("rbac.authorization.k8s.io", "v1", "rolebindings", labels=OWNED)
def owned_role_bindings(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    return _index_entry(body, namespace, labels)


def _pod_is_ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@kopf.index("v1", "pods", labels=OWNED)
def ready_pod_ips(namespace: str | None, labels: kopf.Labels, status: kopf.Status, meta: kopf.Meta,
                  **_: Any) -> Any:
    """The pool's ready replicas that serve, where the pods source scrapes them (a draining one is not load)."""
    pool = labels.get(POOL_LABEL)
    ip = status.get("podIP")
    if (not pool or namespace is None or not ip or meta.get("deletionTimestamp") or not _pod_is_ready(status)
            or labels.get(SERVING_LABEL) == "false"):
        return {}
    return {(namespace, pool): ip}


@kopf.index("v1", "pods", labels={**OWNED, COMPONENT_LABEL: "router"})
def ready_router_ips(namespace: str | None, labels: kopf.Labels, status: kopf.Status, meta: kopf.Meta,
                     **_: Any) -> Any:
    """The pool's ready router pods (fallback.route: router): the pods source scrapes the demand they see."""
    pool = labels.get(ROUTER_LABEL)
    ip = status.get("podIP")
    if not pool or namespace is None or not ip or meta.get("deletionTimestamp") or not _pod_is_ready(status):
        return {}
    return {(namespace, pool): ip}


@kopf.index("v1", "pods", labels=OWNED)
def replica_pods(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> Any:
    """The pool's replica pods, only the fields the evaluation reads (controller/kube/observe.py)."""
    pool = labels.get(POOL_LABEL)
    if not pool or namespace is None:
        return {}
    return {(namespace, pool): trimmed_pod(body)}


@kopf.index("v1", "nodes")
def node_notices(body: kopf.Body, name: str | None, **_: Any) -> Any:
    """Reclaim notices the nodes carry as taints, by node; a node without one costs nothing here."""
    if not name:
        return {}
    result = parse_node(body)
    return {name: result.notices} if result.verdict is Verdict.NOTICE else {}


@kopf.index("v1", "nodes")
def node_instances(body: kopf.Body, name: str | None, **_: Any) -> Any:
    """EC2 instance id -> node name, from spec.providerID: how an SQS notice finds its node."""
    instance = instance_id_from_provider_id((body.get("spec") or {}).get("providerID"))
    return {instance: name} if instance and name else {}


@kopf.on.event("v1", "nodes")
async def wake_on_node_notice(body: kopf.Body, name: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A node that gets a reclaim taint wakes the pools with replicas on it, at once."""
    runtime = _runtime(memo)
    runtime.pods_index = kwargs["replica_pods"]
    runtime.instances_index = kwargs["node_instances"]
    if name and parse_node(body).verdict is Verdict.NOTICE:
        runtime.wake_pools_on_node(name)


@kopf.on.event("v1", "pods", labels=OWNED)
@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("v1", "services", labels=OWNED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
@kopf.on.event("v1", "serviceaccounts", labels=OWNED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=OWNED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=OWNED)
async def wake_on_owned_change(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, body: kopf.Body,
                               resource: kopf.Resource, **_: Any) -> None:
    # Async on purpose: Kopf runs sync handlers in worker threads, and asyncio.Event is not thread-safe
    # (set() from another thread schedules the waiter's wake-up without waking the loop).
    pool = labels.get(POOL_LABEL)
    if namespace and pool:
        # A replica's own DisruptionTarget condition is a reclaim notice: no debounce.
        urgent = resource.plural == "pods" and parse_pod(body).verdict is Verdict.NOTICE
        _runtime(memo).wake((namespace, pool), urgent=urgent)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def wake_on_pool_change(namespace: str | None, name: str | None, meta: kopf.Meta, memo: kopf.Memo,
                              **_: Any) -> None:
    if namespace and name:
        _runtime(memo).wake_for_generation((namespace, name), int(meta.get("generation") or 0))


def _first(index: kopf.Index[PoolKey, dict[str, Any]], key: PoolKey, name: str) -> dict[str, Any] | None:
    return next((obj for obj in index.get(key, []) if obj.get("metadata", {}).get("name") == name), None)


@dataclass
class _PoolCopy:
    """The pool's spec and status copied out of Kopf's live body (which changes under an await), reused
    while its resourceVersion stays: copying them was a steady evaluation's largest cost."""

    resource_version: str | None = None
    spec: Any = None
    status: Any = None

    def of(self, body: kopf.Body) -> tuple[Any, Any]:
        resource_version = body.get("metadata", {}).get("resourceVersion")
        if resource_version is None or resource_version != self.resource_version:
            self.resource_version = resource_version
            self.spec, self.status = copy.deepcopy(body.get("spec")), copy.deepcopy(body.get("status"))
        return self.spec, self.status


def _snapshot(body: kopf.Body, indexes: Mapping[str, Any], memory: PoolMemory, copied: _PoolCopy,
              notices_for_node: Callable[[kopf.Index[str, Any], str], tuple[InterruptionNotice, ...]],
              router_image: str) -> PoolSnapshot:
    meta = body.get("metadata", {})
    key: PoolKey = (meta["namespace"], meta["name"])
    raw_spec, raw_status = copied.of(body)
    raw_status = memory.status_after_writes(meta.get("resourceVersion"), raw_status)
    by_kind = {"Deployment": indexes["owned_deployments"], "Service": indexes["owned_services"],
               "PodDisruptionBudget": indexes["owned_pdbs"], "ServiceAccount": indexes["owned_service_accounts"],
               "Role": indexes["owned_roles"], "RoleBinding": indexes["owned_role_bindings"]}
    return PoolSnapshot(
        ref=PoolRef(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        raw_spec=raw_spec,
        raw_status=raw_status,
        deployments=list(indexes["owned_deployments"].get(key, [])),
        cached=lambda kind, name: _first(by_kind[kind], key, name),
        ready_pod_ips=tuple(sorted(indexes["ready_pod_ips"].get(key, []))),
        ready_router_ips=tuple(sorted(indexes["ready_router_ips"].get(key, []))),
        pods=tuple(indexes["replica_pods"].get(key, [])),
        notices_for_node=functools.partial(notices_for_node, indexes["node_notices"]),
        scaling_state=memory.scaling_state,
        verified=memory.verified,
        parsed=memory.parsed,
        router_image=router_image,
    )


async def _sleep_until_woken(wakeup: asyncio.Event, seconds: float) -> bool:
    """Whether an event woke the pool before its timer did."""
    # On deletion or shutdown, Kopf cancels this task; no need to watch `stopped` here as well.
    try:
        await asyncio.wait_for(wakeup.wait(), timeout=seconds)
    except TimeoutError:
        return False
    wakeup.clear()
    return True


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=5.0)
async def evaluate_pool_continuously(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Kopf passes the owned_* indexes in kwargs (by their function names)."""
    runtime = _runtime(memo)
    key: PoolKey = (body.metadata.namespace or "", body.metadata.name or "")
    wakeup = runtime.wakeup_for(key)
    indexes = {name: kwargs[name] for name in ("owned_deployments", "owned_services", "owned_pdbs",
                                               "owned_service_accounts", "owned_roles", "owned_role_bindings",
                                               "ready_pod_ips", "ready_router_ips", "replica_pods", "node_notices")}
    runtime.pods_index, runtime.instances_index = kwargs["replica_pods"], kwargs.get("node_instances")
    reporting = Reporting(signals_refresh_seconds=runtime.settings.signals_refresh_seconds)
    failures = 0
    copied = _PoolCopy()
    memory = runtime.memories.setdefault(key, PoolMemory())
    metrics.OPERATOR.pools.inc()
    try:
        while True:  # Kopf cancels this task when the pool is deleted or the operator stops
            wakeup.clear()
            runtime.urgent.discard(key)
            started = time.monotonic()
            try:
                async with runtime.evaluation_slots:
                    started = time.monotonic()  # the evaluation, not its wait for a slot
                    snapshot = _snapshot(body, indexes, memory, copied, runtime.notices_for_node,
                                         runtime.settings.router_image)
                    memory.evaluated_generation = snapshot.generation
                    now = datetime.now(UTC)
                    result = await reconcile_pool(runtime.api, runtime.reader, snapshot, now=now,
                                                  reporting=reporting, upgrades=runtime.upgrades)
            except Exception:
                # The loop must outlive a flaky API server.
                metrics.record_failed_evaluation(key, seconds=time.monotonic() - started)
                failures += 1
                interval = error_backoff_seconds(failures)
                logger.exception("evaluation of pool %s/%s failed (%d in a row); retrying in %.0f s",
                                 *key, failures, interval)
            else:
                failures = 0
                memory.scaling_state = result.scaling_state
                if result.written_status is not None:
                    memory.written_status = (result.written_version, result.written_status)
                for event in result.events:
                    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
                if result.status is not None and result.previous is not None:
                    metrics.record_evaluation(
                        key, result.previous, result.status, result.events, seconds=time.monotonic() - started,
                        now=now, interval_seconds=result.spec.scaling.evaluation_interval_seconds if result.spec
                        else None)
                    log_decisions(*key, result.events, result.status)
                interval = float(result.spec.scaling.evaluation_interval_seconds if result.spec
                                 else MAX_ERROR_BACKOFF_SECONDS)  # an invalid spec waits for its fix (an event)
                if result.retry_after is not None:  # an eviction to retry before the next round
                    interval = min(interval, max(0.1, result.retry_after))
            if await _sleep_until_woken(wakeup, interval) and key not in runtime.urgent:
                # A burst of events (a rollout) costs one evaluation, not one each.
                await asyncio.sleep(runtime.settings.wake_debounce_seconds)
    finally:
        metrics.OPERATOR.pools.dec()
        metrics.forget_pool(key)
        runtime.wakeups.pop(key, None)
        runtime.memories.pop(key, None)
        runtime.upgrades.record(key, holds=False)
        runtime.reader.forget(key)


