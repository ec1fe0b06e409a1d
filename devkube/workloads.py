"""
A fake Deployment controller: keeps Pods in step with each Deployment and reports the rollout.

For every Deployment whose Pods or status do not reflect its spec, ``delay`` seconds after
the change it does what the Deployment and ReplicaSet controllers, the scheduler and the
kubelet would do together — in-process, so the writes never appear in the write log, but
they bump resourceVersions and emit ADDED/MODIFIED/DELETED events like real writes:

* Pods: ``spec.replicas`` Pods named ``<deployment>-<pod-template-hash>-<5 chars>``, with the
  template's labels plus ``pod-template-hash``, its annotations, its spec plus ``nodeName`` and a
  controller ``ownerReference`` to the Deployment.
* Scheduling (:mod:`.scheduling`): a pod is bound to a Node that matches its ``nodeSelector`` and
  required ``nodeAffinity``, is not cordoned, and whose ``NoSchedule``/``NoExecute`` taints it
  tolerates; the node with the fewest pods wins, then the first by name. If none fits, the pod stays
  ``Pending`` without ``nodeName`` or IP, with ``PodScheduled=False``, reason ``Unschedulable`` and
  the real scheduler's message (``0/4 nodes are available: ...``), and is bound as soon as a node is
  added or changes so that it fits. ``node_name(namespace, pod, deployment)`` instead binds every pod
  to the node it names (existing or not), without scheduling.
* A bound pod's status: ``phase: Running``, ``podIP``/``podIPs``
  (``pod_ip(namespace, pod, deployment)``; by default a unique loopback address from 127.244.0.0/16,
  which is never reused while the range lasts), ``startTime``, the ``PodScheduled``,
  ``Initialized``, ``ContainersReady`` and ``Ready`` conditions and ``containerStatuses``.
  Both callbacks run on the cluster's event loop; a callback may hand out the same address to
  several Pods (e.g. one fake server behind all replicas): nothing checks that addresses are unique.
* Readiness: a Pod becomes Ready ``ready_delay`` seconds after it started (at once by default).
  ``set_ready(ns, name, ready=N)`` caps how many of a Deployment's Pods are Ready (the N oldest
  ones; the rest stay Running but not Ready); ``set_pod_ready(ns, pod, ready)`` forces one Pod
  either way and changes no other Pod (so the Ready count may go beyond or below the cap;
  ``None`` hands the Pod back to the automatic rules).
* Scaling down deletes Pods in the real ReplicaSet controller's order of preference: unscheduled
  before scheduled, Pending before Running, not Ready before Ready, a lower
  ``controller.kubernetes.io/pod-deletion-cost`` first, newer before older.
* A Pod that is being deleted (``deletionTimestamp`` set: a graceful delete, an eviction; the
  kubelet, :mod:`.kubelet`, ends it) no longer counts and is replaced at once, as a ReplicaSet does;
  so is a Pod that goes away (``kubectl delete pod``, ``DevCluster.kill_pod``); a Pod
  whose labels stop matching the Deployment's selector is released (its ownerReference is
  removed) and replaced, as a ReplicaSet does; deleting the Deployment deletes its Pods
  (the store's ownerReference garbage collection).
* The Deployment's status: ``observedGeneration``, ``replicas``, ``updatedReplicas``,
  ``readyReplicas``, ``availableReplicas``, ``unavailableReplicas`` — counted from its Pods —
  and the ``Available``/``Progressing`` conditions. Zero counts are omitted, as the real
  controller's ``omitempty`` fields are.

With ``pods=False`` no Pods exist and the status is computed from the spec alone (all
replicas ready unless capped by ``set_ready``).

Differences from a real cluster (cover them in e2e tests on a real cluster):

* No ReplicaSets: Pods are owned by the Deployment directly, so ``ownerReferences`` name the
  Deployment, not ``<deployment>-<hash>``, and nothing adopts orphaned Pods that match a
  selector. The ``pod-template-hash`` is a hash of the stored template, but not the same
  value a real cluster computes (``collisionCount`` is ignored).
* Rollouts are instantaneous: a template change replaces all Pods at once (new ones created,
  then all old ones deleted), ignoring ``strategy``, ``maxSurge``/``maxUnavailable``,
  ``minReadySeconds``, ``paused`` and ``progressDeadlineSeconds``; there is no revision history.
* Scheduled pods skip ``Pending`` and start ``Running`` once created (the ADDED event has no status; the
  next MODIFIED has the running status). Containers never crash or restart (``restartCount``
  stays 0); probes are not run: readiness follows ``ready_delay`` and the test helpers. No
  ``hostIP``, ``qosClass``, init container statuses, and no Pod defaults (``serviceAccountName``,
  tolerations, ``enableServiceLinks`` ...).
* Scheduling ignores resources (``nvidia.com/gpu`` requests fit anywhere), inter-pod affinity,
  topology spread and preemption (see :mod:`.scheduling`); no ``Binding`` object is written (the pod's
  ``spec.nodeName`` is set in-process), and only the Deployments' pods are scheduled: a Pod created
  by anyone else keeps the ``nodeName`` it was created with, or none.
* Every reaction (also to a deleted Pod or a test helper) comes ``delay`` seconds after its
  cause; a burst of Deployment changes within ``delay`` is handled once.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import ipaddress
import itertools
import json
import logging
import math
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from devkube import errors
from devkube.resources import Resource
from devkube.scheduling import Placement, place
from devkube.store import ObjectStore, WatchEvent, now_utc, timestamp

logger = logging.getLogger(__name__)

DeploymentKey = tuple[str, str]  # namespace, name
PodKey = tuple[str, str]  # namespace, name
PodAddressFn = Callable[[str, str, str], str]  # (namespace, pod name, deployment name) -> IP address
NodeNameFn = Callable[[str, str, str], str]  # (namespace, pod name, deployment name) -> node name

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# Loopback, on purpose: the operator scrapes pod IPs, and tests may only ever send traffic to this machine.
# Nothing listens on these addresses unless a test starts a fake vLLM replica there.
DEFAULT_POD_NETWORK = "127.244.0.0/16"

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the real name generator: no vowels, no 0/1/3
_MAX_GENERATED_NAME_PREFIX = 58  # 63 minus the random suffix, as the real name generator


class FakeDeploymentController:
    def __init__(
        self,
        store: ObjectStore,
        *,
        delay: float = 0.0,
        pods: bool = True,
        pod_ip: PodAddressFn | None = None,
        node_name: NodeNameFn | None = None,
        ready_delay: float = 0.0,
    ) -> None:
        # ``node_name`` binds every pod to the node it names, existing or not, instead of scheduling.
        self.store = store
        self.delay = delay
        self.pods = pods
        self.ready_delay = ready_delay
        self.ready_overrides: dict[DeploymentKey, int] = {}
        self.pod_overrides: dict[PodKey, bool] = {}
        self.errors: list[Exception] = []  # failures of reconciliations (e.g. a callback that raised)
        self._pod_ip = pod_ip or self._default_pod_ip
        self._node_name = node_name
        self._node_of: dict[PodKey, str] = {}  # every bound pod's node, from the store's events
        self._pods_on: collections.Counter[str] = collections.Counter()  # node -> pods bound to it
        self._waiting_for_nodes: set[DeploymentKey] = set()  # Deployments with pods no node takes
        self._addresses = PodAddresses(DEFAULT_POD_NETWORK)
        self._sequence = itertools.count()
        self._created: dict[PodKey, int] = {}  # creation order of our pods (timestamps have 1s resolution)
        self._started: dict[PodKey, float] = {}  # loop time of our pods' start, for ready_delay
        self._timers: dict[DeploymentKey, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconciling = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for pod in self.store.list_stored(self._pods()):
            self._addresses.track(_pod_key(pod), _pod_ip_of(pod))
            self._track_node(_pod_key(pod), pod)
        for obj in self.store.list_stored(self._deployments()):
            self._schedule((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._loop = None

    # --- test controls -----------------------------------------------------------------------

    def set_ready(self, namespace: str, name: str, ready: int | None) -> None:
        """Cap the ready replicas of one Deployment; ``None`` makes all of them ready again."""
        if ready is None:
            self.ready_overrides.pop((namespace, name), None)
        else:
            self.ready_overrides[(namespace, name)] = ready
        self._schedule((namespace, name))

    def set_pod_ready(self, namespace: str, pod_name: str, ready: bool | None) -> None:
        """Force one Pod Ready or not Ready (whatever the cap); ``None`` returns it to the automatic rules."""
        if not self.pods:
            raise RuntimeError("the fake workload controller runs without pods in this cluster")
        pod = self.store.get(self._pods(), namespace, pod_name)  # 404 if there is no such pod
        owner = _controller_ref(pod)
        if owner is None:
            raise ValueError(f"pod {namespace}/{pod_name} is not owned by a Deployment")
        if ready is None:
            self.pod_overrides.pop((namespace, pod_name), None)
        else:
            self.pod_overrides[(namespace, pod_name)] = ready
        self._schedule((namespace, owner), debounce=False)

    # --- events and timers -------------------------------------------------------------------

    def _deployments(self) -> Resource:
        return self.store.resolve("apps", "v1", "deployments")

    def _pods(self) -> Resource:
        return self.store.resolve("", "v1", "pods")

    def _on_event(self, event: WatchEvent) -> None:
        group_plural = (event.resource.group, event.resource.plural)
        if group_plural == ("apps", "deployments"):
            key = (event.object["metadata"]["namespace"], event.object["metadata"]["name"])
            if event.type == "DELETED":
                self._cancel(key)
                self.ready_overrides.pop(key, None)
            elif not self._reconciling:  # our own status writes need no second look
                self._schedule(key)
        elif group_plural == ("", "pods") and self.pods:
            self._on_pod_event(event)
        elif group_plural == ("", "nodes") and event.type != "DELETED":
            # A node appeared or changed (a taint removed, uncordoned): pending pods may fit now.
            for key in list(self._waiting_for_nodes):
                self._schedule(key, debounce=False)

    def _on_pod_event(self, event: WatchEvent) -> None:
        namespace, name = event.object["metadata"]["namespace"], event.object["metadata"]["name"]
        if event.type == "DELETED":
            self._addresses.forget((namespace, name))
            self._track_node((namespace, name), None)
        else:
            self._addresses.track((namespace, name), _pod_ip_of(event.object))
            self._track_node((namespace, name), event.object)
        if event.type == "DELETED":
            self.pod_overrides.pop((namespace, name), None)
            self._created.pop((namespace, name), None)
            self._started.pop((namespace, name), None)
        if self._reconciling:
            return  # our own writes
        states = [event.object] if event.old is None else [event.object, event.old]
        for owner in {owner for state in states if (owner := _controller_ref(state)) is not None}:
            self._schedule((namespace, owner), debounce=False)

    def _track_node(self, pod: PodKey, state: Mapping[str, Any] | None) -> None:
        """Count the pods bound to each node (the scheduler spreads by it) without scanning the store."""
        previous = self._node_of.pop(pod, None)
        if previous is not None:
            self._pods_on[previous] -= 1
        node = None if state is None else (state.get("spec") or {}).get("nodeName")
        if node:
            self._node_of[pod] = node
            self._pods_on[node] += 1

    def _schedule(self, key: DeploymentKey, *, after: float | None = None, debounce: bool = True) -> None:
        """
        Reconcile ``after`` (default: ``delay``) seconds from now. Never write from inside a store
        event: the write would nest into the current commit. ``debounce`` postpones a pending
        reconciliation (a burst of changes is handled once); otherwise the earlier one is kept.
        """
        if self._loop is None:
            return
        when = self._loop.time() + (self.delay if after is None else after)
        pending = self._timers.get(key)
        if pending is not None:
            if not debounce and pending.when() <= when:
                return
            pending.cancel()
        self._timers[key] = self._loop.call_at(when, self._reconcile, key)

    def _cancel(self, key: DeploymentKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # --- reconciliation ----------------------------------------------------------------------

    def _reconcile(self, key: DeploymentKey) -> None:
        self._timers.pop(key, None)
        self._reconciling = True
        try:
            self._reconcile_deployment(key)
        except errors.ApiError as e:
            # E.g. the namespace is being terminated: no new pods there, and no retry needed.
            logger.debug("The fake workload controller could not reconcile %s/%s: %s", *key, e)
        except Exception as e:
            logger.exception("The fake workload controller failed on %s/%s", *key)
            self.errors.append(e)
        finally:
            self._reconciling = False

    def _reconcile_deployment(self, key: DeploymentKey) -> None:
        resource = self._deployments()
        obj = self.store.find_stored(resource, *key)  # read-only: writes go through the store
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        desired = _desired_replicas(obj)
        if self.pods:
            replicas, updated, ready = self._reconcile_pods(key, obj, desired)
        else:
            cap = self.ready_overrides.get(key)
            replicas, updated = desired, desired
            ready = desired if cap is None else max(0, min(cap, desired))
        status = deployment_status(obj, replicas=replicas, updated=updated, ready=ready)
        self.store.write_status(resource, key[0], key[1], status)  # a no-op if nothing changes

    def _reconcile_pods(
        self, key: DeploymentKey, deployment: Mapping[str, Any], desired: int
    ) -> tuple[int, int, int]:
        """Create, delete and update the Deployment's pods; returns (replicas, updated, ready)."""
        namespace = key[0]
        pods_resource = self._pods()
        template = (deployment.get("spec") or {}).get("template") or {}
        pod_hash = template_hash(template)
        selector = (deployment.get("spec") or {}).get("selector") or {}
        owned = self._owned_pods(namespace, deployment["metadata"]["uid"])
        for pod in [pod for pod in owned if not selector_matches(selector, pod)]:
            self._release(pod, deployment["metadata"]["uid"])
            owned.remove(pod)
        current = [pod for pod in owned if _labels(pod).get(POD_TEMPLATE_HASH_LABEL) == pod_hash]
        outdated = [pod for pod in owned if _labels(pod).get(POD_TEMPLATE_HASH_LABEL) != pod_hash]
        for _ in range(desired - len(current)):
            current.append(self._create_pod(deployment, pod_hash))
        if len(current) > desired:
            doomed = sorted(current, key=self._deletion_rank)[: len(current) - desired]
            for pod in doomed:
                self.store.delete(pods_resource, namespace, pod["metadata"]["name"])
            current = [pod for pod in current if pod not in doomed]
        for pod in outdated:  # an instant rollout: the old pods go once the new ones exist
            self.store.delete(pods_resource, namespace, pod["metadata"]["name"])

        pending = {name for pod in current if (name := pod["metadata"]["name"]) and not self._bind(pod)}
        if pending:
            self._waiting_for_nodes.add(key)
        else:
            self._waiting_for_nodes.discard(key)
        readiness, warm_up = self._readiness(key, [pod for pod in current if pod["metadata"]["name"] not in pending])
        for pod in current:
            name = pod["metadata"]["name"]
            if name in pending:
                continue  # its Pending status was written by _bind
            ip = ((pod.get("status") or {}).get("podIP")) or self._pod_ip(namespace, name, key[1])
            status = pod_status(pod, ready=readiness[name], ip=ip)
            self.store.write_status(pods_resource, namespace, name, status)
        if warm_up is not None:
            self._schedule(key, after=warm_up, debounce=False)
        return len(current), len(current), sum(readiness.values())

    def _placement(self, namespace: str, pod_name: str, deployment: str, spec: Mapping[str, Any]) -> Placement:
        if self._node_name is not None:
            return Placement(self._node_name(namespace, pod_name, deployment))
        nodes = self.store.list_stored(self.store.resolve("", "v1", "nodes"))
        return place(spec, nodes, self._pods_on)

    def _bind(self, pod: Mapping[str, Any]) -> bool:
        """Schedule a pod that has no node yet (True once it has one); else mark it Unschedulable."""
        if (pod.get("spec") or {}).get("nodeName"):
            return True
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        placement = self._placement(namespace, name, _controller_ref(pod) or "", pod.get("spec") or {})
        pods = self._pods()
        if placement.node is None:
            self.store.write_status(pods, namespace, name, pending_pod_status(pod, placement.message))
            return False
        # What the scheduler's Binding does: spec.nodeName is set once, then the kubelet starts the pod.
        self.store.patch(pods, namespace, name, "application/merge-patch+json", {"spec": {"nodeName": placement.node}})
        if self._loop is not None:
            self._started[(namespace, name)] = self._loop.time()
        return True

    def _owned_pods(self, namespace: str, uid: str) -> list[Mapping[str, Any]]:
        """Through the store's owner index, as the ReplicaSet controller uses its informer's (read-only)."""
        return [
            pod
            for pod in self.store.list_dependents_stored(self._pods(), uid)
            if pod["metadata"]["namespace"] == namespace
            if not pod["metadata"].get("deletionTimestamp") and _controller_uid(pod) == uid
        ]

    def _release(self, pod: Mapping[str, Any], owner_uid: str) -> None:
        """A pod that no longer matches the selector is orphaned, as a ReplicaSet does (and replaced)."""
        refs = [ref for ref in pod["metadata"].get("ownerReferences") or [] if ref.get("uid") != owner_uid]
        patch = {"metadata": {"ownerReferences": refs or None}}
        self.store.patch(
            self._pods(),
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            "application/merge-patch+json",
            patch,
        )

    def _create_pod(self, deployment: Mapping[str, Any], pod_hash: str) -> dict[str, Any]:
        meta = deployment["metadata"]
        namespace, deployment_name = meta["namespace"], meta["name"]
        template = (deployment.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        prefix = f"{deployment_name}-{pod_hash}-"
        name = self._new_pod_name(namespace, prefix)
        pod_meta: dict[str, Any] = {
            "name": name,
            "generateName": prefix,
            "namespace": namespace,
            "labels": {**(template_meta.get("labels") or {}), POD_TEMPLATE_HASH_LABEL: pod_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment_name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = copy.deepcopy(template_meta["annotations"])
        spec = copy.deepcopy(template.get("spec") or {})
        spec.pop("nodeName", None)
        placement = self._placement(namespace, name, deployment_name, spec)
        if placement.node is not None:
            spec["nodeName"] = placement.node
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
        created = self.store.create(self._pods(), namespace, body)
        self._created[(namespace, name)] = next(self._sequence)
        if self._loop is not None:
            self._started[(namespace, name)] = self._loop.time()
        return created

    def _new_pod_name(self, namespace: str, prefix: str) -> str:
        base = prefix[:_MAX_GENERATED_NAME_PREFIX]
        while True:
            name = base + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.store.find_stored(self._pods(), namespace, name) is None:
                return name

    def _default_pod_ip(self, namespace: str, pod_name: str, deployment: str) -> str:
        return self._addresses.allocate((namespace, pod_name))

    def _age_key(self, pod: Mapping[str, Any]) -> tuple[str, int]:
        """Sorts oldest first."""
        meta = pod["metadata"]
        return meta.get("creationTimestamp") or "", self._created.get((meta["namespace"], meta["name"]), -1)

    def _deletion_rank(self, pod: Mapping[str, Any]) -> tuple[int, int, int, int, tuple[tuple[int, ...], int]]:
        """Sorts the pods to delete first first: as the real ReplicaSet controller's preferences
        (pkg/controller/controller_utils.go, ActivePodsWithRanks): unscheduled before scheduled,
        Pending before Running, not Ready before Ready, a lower deletion cost, newer before older."""
        assigned = int(bool((pod.get("spec") or {}).get("nodeName")))
        status = pod.get("status") or {}
        running = int(status.get("phase") == "Running")
        cost = _deletion_cost(pod)
        age = self._age_key(pod)
        newest_first = (_invert(age[0]), -age[1])
        return assigned, running, int(is_pod_ready(pod)), cost, newest_first

    def _readiness(
        self, key: DeploymentKey, pods: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, bool], float | None]:
        """Which pods are Ready, and in how many seconds the next one warms up (if any does)."""
        namespace = key[0]
        now = self._loop.time() if self._loop is not None else 0.0
        cap = self.ready_overrides.get(key)
        readiness: dict[str, bool] = {}
        warm_up: float | None = None
        for rank, pod in enumerate(sorted(pods, key=self._age_key)):  # the oldest get the capped slots
            name = pod["metadata"]["name"]
            forced = self.pod_overrides.get((namespace, name))
            started = self._started.get((namespace, name), -math.inf)
            remaining = started + self.ready_delay - now
            if forced is not None:
                readiness[name] = forced
                continue
            if remaining > 0:
                warm_up = remaining if warm_up is None else min(warm_up, remaining)
            readiness[name] = remaining <= 0 and (cap is None or rank < cap)
        return readiness, warm_up


# --- pods -----------------------------------------------------------------------------------------


class PodAddresses:
    """The pod network's addresses: which pods hold which, and the next free one in O(1) (amortized).

    Every pod's ``podIP`` is tracked from the store's events (whoever set it), so an address in use is
    never handed out again, and a freed one is reused only after the whole range went round, as a
    node's IPAM hands out addresses in turn. A scan of all pods per new pod made a fleet quadratic.
    """

    def __init__(self, network: str) -> None:
        self._cycle: Iterator[str] = itertools.cycle(str(a) for a in ipaddress.ip_network(network).hosts())
        self._size = ipaddress.ip_network(network).num_addresses - 2
        self._holders: dict[str, set[PodKey]] = {}  # address -> pods that show it
        self._held: dict[PodKey, str] = {}  # pod -> its address
        # Handed out, not yet in the pod's status: only between an allocation and the status write after it.
        self._reserved: dict[PodKey, str] = {}

    def track(self, pod: PodKey, address: str | None) -> None:
        """The pod's address as the store now shows it (None: none yet)."""
        previous = self._held.pop(pod, None)
        if previous is not None:
            self._release(previous, pod)
        if address is not None:
            self._reserved.pop(pod, None)
            self._held[pod] = address
            self._holders.setdefault(address, set()).add(pod)

    def forget(self, pod: PodKey) -> None:
        """The pod is gone: its address is free (and comes round again only after the whole range)."""
        self.track(pod, None)
        self._reserved.pop(pod, None)

    def allocate(self, pod: PodKey) -> str:
        kept = self._held.get(pod) or self._reserved.get(pod)
        if kept is not None:
            return kept
        for _ in range(self._size):
            address = next(self._cycle)
            if address not in self._holders and address not in self._reserved.values():
                self._reserved[pod] = address
                return address
        raise RuntimeError(f"the pod network is full: {self._size} addresses in use")

    def _release(self, address: str, pod: PodKey) -> None:
        holders = self._holders.get(address)
        if holders is not None:
            holders.discard(pod)
            if not holders:
                del self._holders[address]


def _pod_key(pod: Mapping[str, Any]) -> PodKey:
    return pod["metadata"]["namespace"], pod["metadata"]["name"]


def _pod_ip_of(pod: Mapping[str, Any]) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    return str(ip) if ip else None



def template_hash(template: Mapping[str, Any]) -> str:
    """A 10-character hash of a pod template, in the alphabet of the real ``pod-template-hash``."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    return "".join(_NAME_ALPHABET[byte % len(_NAME_ALPHABET)] for byte in digest[:10])


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_status(pod: Mapping[str, Any], *, ready: bool, ip: str) -> dict[str, Any]:
    """A running pod's status; the timestamps of the previous status are kept while nothing changes."""
    previous = pod.get("status") or {}
    stamp = timestamp(now_utc())
    started = previous.get("startTime") or stamp
    old_conditions = previous.get("conditions") or []
    containers = sorted(
        ((pod.get("spec") or {}).get("containers") or []),
        key=lambda container: str(container.get("name", "")),
    )
    unready = (
        ""
        if ready
        else f"containers with unready status: [{' '.join(c.get('name', '') for c in containers)}]"
    )
    return {
        "phase": "Running",
        "conditions": [
            _pod_condition(old_conditions, "Initialized", True, stamp),
            _pod_condition(old_conditions, "Ready", ready, stamp, unready),
            _pod_condition(old_conditions, "ContainersReady", ready, stamp, unready),
            _pod_condition(old_conditions, "PodScheduled", True, stamp),
        ],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "containerStatuses": [
            {
                "name": container.get("name", ""),
                "image": container.get("image", ""),
                "imageID": "",
                "containerID": "containerd://"
                + hashlib.sha256(
                    f"{pod['metadata'].get('uid')}/{container.get('name')}".encode()
                ).hexdigest(),
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
                "lastState": {},
            }
            for container in containers
        ],
    }


def pending_pod_status(pod: Mapping[str, Any], message: str) -> dict[str, Any]:
    """An unschedulable pod's status, as the scheduler writes it: Pending, ``PodScheduled=False``."""
    previous = (pod.get("status") or {}).get("conditions") or []
    scheduled = _pod_condition(previous, "PodScheduled", False, timestamp(now_utc()), message, "Unschedulable")
    return {"phase": "Pending", "conditions": [scheduled]}


def _pod_condition(
    previous: Sequence[Mapping[str, Any]],
    kind: str,
    ok: bool,
    stamp: str,
    unready_message: str = "",
    reason: str = "ContainersNotReady",
) -> dict[str, Any]:
    new: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok:
        new.update(reason=reason, message=unready_message)
    old = next((c for c in previous if c.get("type") == kind), None)
    kept = old.get("lastTransitionTime") if old is not None and old.get("status") == new["status"] else None
    new["lastTransitionTime"] = kept or stamp
    return new


def selector_matches(selector: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """A ``metav1.LabelSelector`` (``matchLabels``, ``matchExpressions``) against an object's labels."""
    labels = _labels(obj)
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and key in labels and labels[key] in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _controller_reference(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Deployment" and ref.get("apiVersion") == "apps/v1":
            return dict(ref)
    return None


def _controller_ref(pod: Mapping[str, Any]) -> str | None:
    ref = _controller_reference(pod)
    return None if ref is None else str(ref.get("name"))


def _controller_uid(pod: Mapping[str, Any]) -> str | None:
    ref = _controller_reference(pod)
    return None if ref is None else str(ref.get("uid"))


def _deletion_cost(pod: Mapping[str, Any]) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0  # the real API server refuses such values; the controller would see cost 0


def _invert(text: str) -> tuple[int, ...]:
    """A sort key that orders strings in reverse (for same-length ISO timestamps)."""
    return tuple(-ord(char) for char in text)


# --- the Deployment's status ----------------------------------------------------------------------


def _desired_replicas(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def deployment_status(obj: Mapping[str, Any], *, replicas: int, updated: int, ready: int) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    desired = _desired_replicas(obj)
    counts = {
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,  # minReadySeconds is ignored
        "unavailableReplicas": max(0, desired - ready),
    }
    status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
    status.update({field: count for field, count in counts.items() if count})
    previous = (obj.get("status") or {}).get("conditions") or []
    available = ready >= desired - _max_unavailable(spec, desired)
    replica_set = f'ReplicaSet "{obj["metadata"]["name"]}-{template_hash(spec.get("template") or {})}"'
    done = ready == desired and updated == desired and replicas == desired
    status["conditions"] = [
        _condition(
            previous,
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        ),
        _condition(
            previous,
            "Progressing",
            True,
            "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
            f"{replica_set} has successfully progressed." if done else f"{replica_set} is progressing.",
        ),
    ]
    return status


def _max_unavailable(spec: Mapping[str, Any], desired: int) -> int:
    value = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)


def _condition(
    previous: list[Mapping[str, Any]], kind: str, ok: bool, reason: str, message: str
) -> dict[str, Any]:
    # Keep the old timestamps while nothing changes, or every reconciliation would be a write.
    old = next((dict(c) for c in previous if c.get("type") == kind), None)
    new = {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}
    if old is not None and all(old.get(field) == value for field, value in new.items()):
        return copy.deepcopy(old)
    stamp = timestamp(now_utc())
    transitioned = old is None or old.get("status") != new["status"]
    return {
        **new,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp if transitioned else old.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
    }
