"""
A stand-in EndpointSlice controller, and the reader kube-proxy would be.

For every Service with a selector, ``delay`` seconds after a change of the Service, of a Pod it
selects (or selected), of a Node or of one of its slices, it does in-process what the real
controller (kubernetes ``staging/src/k8s.io/endpointslice``: ``reconciler.go``, ``utils.go``)
does; the writes bump resourceVersions and emit watch events but are not in the write log:

* Slices: ``generateName: <service>-``, the Service's labels (without the reserved ones) plus
  ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by:
  endpointslice-controller.k8s.io`` (and ``service.kubernetes.io/headless`` for ``clusterIP:
  None``), a controller ownerReference to the Service (so deleting the Service deletes them: the
  store's garbage collection), at most ``max_endpoints_per_slice`` (100) endpoints each. Pods whose
  resolved ports differ go into different slices, as the real ``PortMapKey`` grouping does.
* ``ports``: one per Service port, ``targetPort`` resolved per pod (``getEndpointPorts``/``FindPort``):
  a number as is, a name looked up in the pod's container ports of the same protocol; a port whose
  name no container has is left out for that pod.
* Endpoints (``podToEndpoint``): one per selected pod that has an IP and is not terminal
  (``ShouldPodBeInEndpoints(pod, includeTerminating=true)``): ``addresses`` (the pod IPs of the
  slice's family), ``conditions`` (``serving`` = pod Ready; ``terminating`` = deletionTimestamp
  set; ``ready`` = serving and not terminating, or the Service's ``publishNotReadyAddresses``),
  ``nodeName``, ``zone`` (the Node's ``topology.kubernetes.io/zone`` label, when the Node exists),
  ``hostname`` (``ShouldSetHostname``) and ``targetRef`` (kind Pod, namespace, name, uid).
* An endpoint stays in the slice it is in; new ones go to the fullest slice with room
  (``getSliceToFill``), then to new slices; a slice left empty is deleted. A Service with no
  endpoints keeps one placeholder slice (``ports``/``endpoints`` null), as the reconciler does.
* A slice is written only when its content changes; ``ExternalName`` Services get no slices.

:func:`ready_endpoints` reads the slices as kube-proxy does (``pkg/proxy/topology.go``
``CategorizeEndpoints``): the ready endpoints, or, when none is ready, the serving and terminating
ones (a best effort not to drop connections while every backend drains).

Differences from the real controller (cover them in e2e tests on a real cluster):

* The address family of a slice comes from the pod IPs: the real controller uses the Service's
  ``spec.ipFamilies`` (defaulted from the cluster's service CIDRs), but the embedded server
  defaults every Service to IPv4 whatever the pod network, and fake pods may sit on ``::1``.
  A Service with no endpoints gets one placeholder of its first IP family only.
* No ``endpoints.kubernetes.io/last-change-trigger-time`` annotation, no topology hints
  (``service.kubernetes.io/topology-mode``, ``trafficDistribution``), no sidecar (restartable
  init) container ports, no EndpointSlice mirroring for selector-less Services, no
  ``endpoints`` (v1 Endpoints) objects, no rate limiting or ``maxEndpointsPerSlice`` flag
  beyond the constructor argument; endpoints within a slice are sorted by pod, not kept in
  insertion order.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from devkube import errors
from devkube.resources import Resource
from devkube.store import ObjectStore, WatchEvent

logger = logging.getLogger(__name__)

__all__ = [
    "CONTROLLER_NAME",
    "MANAGED_BY_LABEL",
    "SERVICE_NAME_LABEL",
    "Endpoint",
    "FakeEndpointSliceController",
    "ready_endpoints",
    "usable_endpoints",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
HEADLESS_LABEL = "service.kubernetes.io/headless"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100  # the kube-controller-manager default (--max-endpoints-per-slice)
_RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)

ServiceKey = tuple[str, str]  # namespace, name
PortsKey = tuple[tuple[tuple[str, Any], ...], ...]  # a slice's ports, hashable
GroupKey = tuple[str, PortsKey]  # (addressType, ports): the real controller's PortMapKey per family


class Endpoint(NamedTuple):
    """One usable backend as kube-proxy sees it: an address and the port of the Service port."""

    ip: str
    port: int


class FakeEndpointSliceController:
    def __init__(
        self, store: ObjectStore, *, delay: float = 0.0, max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE
    ) -> None:
        if max_endpoints_per_slice < 1:
            raise ValueError("a slice holds at least one endpoint")
        self.store = store
        self.delay = delay
        self.max_endpoints_per_slice = max_endpoints_per_slice
        self.errors: list[Exception] = []  # unexpected failures of reconciliations
        self._timers: dict[ServiceKey, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconciling = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for service in self.store.list_stored(self._services()):
            self._schedule(_key(service))

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._loop = None

    # --- resources ---------------------------------------------------------------------------

    def _services(self) -> Resource:
        return self.store.resolve("", "v1", "services")

    def _pods(self) -> Resource:
        return self.store.resolve("", "v1", "pods")

    def _slices(self) -> Resource:
        return self.store.resolve("discovery.k8s.io", "v1", "endpointslices")

    # --- events ------------------------------------------------------------------------------

    def _on_event(self, event: WatchEvent) -> None:
        if self._reconciling:
            return  # our own writes
        group_plural = (event.resource.group, event.resource.plural)
        if group_plural == ("", "services"):
            if event.type == "DELETED":
                self._cancel(_key(event.object))  # the garbage collector takes the slices
            else:
                self._schedule(_key(event.object))
        elif group_plural == ("", "pods"):
            namespace = event.object["metadata"]["namespace"]
            states = [event.object] if event.old is None else [event.object, event.old]
            for service in self.store.list_stored(self._services(), namespace):
                if any(_selects(service, pod) for pod in states):
                    self._schedule(_key(service))
        elif group_plural == ("", "nodes"):
            # Only a node's zone is in the slices: a taint or a cordon (a reclaim storm) changes nothing here.
            zone = (event.object["metadata"].get("labels") or {}).get(ZONE_LABEL)
            old = None if event.old is None else (event.old["metadata"].get("labels") or {}).get(ZONE_LABEL)
            if event.type != "MODIFIED" or zone != old:
                for service in self.store.list_stored(self._services()):
                    self._schedule(_key(service))
        elif group_plural == ("discovery.k8s.io", "endpointslices"):
            labels = event.object["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME and labels.get(SERVICE_NAME_LABEL):
                self._schedule((event.object["metadata"]["namespace"], labels[SERVICE_NAME_LABEL]))

    def _schedule(self, key: ServiceKey) -> None:
        """Reconcile ``delay`` seconds from now, once for a burst; never write from inside a store event."""
        if self._loop is None or key in self._timers:
            return
        self._timers[key] = self._loop.call_later(self.delay, self._reconcile, key)

    def _cancel(self, key: ServiceKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    # --- reconciliation ----------------------------------------------------------------------

    def _reconcile(self, key: ServiceKey) -> None:
        self._timers.pop(key, None)
        self._reconciling = True
        try:
            self._reconcile_service(key)
        except errors.ApiError as e:
            # E.g. the namespace is being terminated: no new slices there, and no retry needed.
            logger.debug("The fake EndpointSlice controller could not reconcile %s/%s: %s", *key, e)
        except Exception as e:
            logger.exception("The fake EndpointSlice controller failed on %s/%s", *key)
            self.errors.append(e)
        finally:
            self._reconciling = False

    def _reconcile_service(self, key: ServiceKey) -> None:
        namespace = key[0]
        service = self.store.find_stored(self._services(), *key)
        if service is None or service["metadata"].get("deletionTimestamp"):
            return
        spec = service.get("spec") or {}
        if spec.get("selector") is None:
            return  # selector-less Services are the mirroring controller's (or the user's) business
        resource = self._slices()
        existing = [
            s for s in self.store.list_dependents_stored(resource, service["metadata"]["uid"])
            if (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME
        ]
        desired = {} if spec.get("type") == "ExternalName" else self._desired_endpoints(service)
        plan = _plan_slices(existing, desired, self.max_endpoints_per_slice)
        if not plan and spec.get("type") != "ExternalName":
            plan = _placeholder_plan(existing, _families(service)[0])
        meta = _slice_metadata(service)
        # Creates and updates before deletes, as the reconciler's finalize(): no moment without the endpoints.
        for current, group, endpoints in plan:
            body = _slice_body(meta, group, endpoints, current)
            if current is None:
                self.store.create(resource, namespace, body)
            elif _content(body) != _content(current):
                self.store.replace(resource, namespace, current["metadata"]["name"], body)
        kept = {id(current) for current, _, _ in plan if current is not None}
        for stale in existing:
            if id(stale) not in kept:
                self.store.delete(resource, namespace, stale["metadata"]["name"])

    def _desired_endpoints(self, service: Mapping[str, Any]) -> dict[GroupKey, list[dict[str, Any]]]:
        """The endpoints each (addressType, ports) group should hold, by pod."""
        namespace = service["metadata"]["namespace"]
        publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        groups: dict[GroupKey, list[dict[str, Any]]] = {}
        nodes = self.store.resolve("", "v1", "nodes")
        for pod in self.store.list_stored(self._pods(), namespace):
            if not _selects(service, pod) or not _should_be_in_endpoints(pod):
                continue
            ports = _endpoint_ports(service, pod)
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = self.store.find_stored(nodes, None, node_name) if node_name else None
            for family, addresses in _pod_addresses(pod).items():
                endpoint = _pod_to_endpoint(pod, node, service, addresses, publish_not_ready)
                groups.setdefault((family, _ports_key(ports)), []).append(endpoint)
        return groups


# --- the real controller's rules ------------------------------------------------------------------


def _key(obj: Mapping[str, Any]) -> ServiceKey:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _selects(service: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """A Service selector is a plain label map (no expressions); a missing one selects nothing."""
    selector = (service.get("spec") or {}).get("selector")
    if selector is None:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _should_be_in_endpoints(pod: Mapping[str, Any]) -> bool:
    """``ShouldPodBeInEndpoints(pod, true)``: not terminal (Succeeded/Failed) and has an IP; terminating is in."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    return bool(status.get("podIP") or status.get("podIPs"))


def _pod_addresses(pod: Mapping[str, Any]) -> dict[str, list[str]]:
    """The pod's IPs by address type, normalized as ``ParseIPSloppy`` + ``String()`` do."""
    status = pod.get("status") or {}
    raw = [entry.get("ip") for entry in status.get("podIPs") or []] or [status.get("podIP")]
    found: dict[str, list[str]] = {}
    for text in raw:
        try:
            address = ipaddress.ip_address(str(text))
        except ValueError:
            continue
        found.setdefault("IPv6" if address.version == 6 else "IPv4", []).append(str(address))
    return found


def _families(service: Mapping[str, Any]) -> list[str]:
    return list((service.get("spec") or {}).get("ipFamilies") or ["IPv4"])


def _endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``getEndpointPorts``: the Service's ports with ``targetPort`` resolved for this pod."""
    ports: list[dict[str, Any]] = []
    for service_port in (service.get("spec") or {}).get("ports") or []:
        protocol = service_port.get("protocol", "TCP")
        number = _find_port(pod, service_port.get("targetPort", service_port.get("port")), protocol)
        if number is None:
            continue
        port: dict[str, Any] = {"name": service_port.get("name", ""), "port": number, "protocol": protocol}
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    return ports


def _find_port(pod: Mapping[str, Any], target: Any, protocol: str) -> int | None:
    """``FindPort``: a number is used as is; a name must be a container port of the same protocol."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)  # an IntOrString that came in as a numeric string
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return int(port["containerPort"])
    return None


def _ports_key(ports: Sequence[Mapping[str, Any]]) -> PortsKey:
    return tuple(tuple(sorted(port.items())) for port in ports)


def _pod_to_endpoint(
    pod: Mapping[str, Any],
    node: Mapping[str, Any] | None,
    service: Mapping[str, Any],
    addresses: list[str],
    publish_not_ready: bool,
) -> dict[str, Any]:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    serving = _is_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    # "ready" is never true for a terminating pod unless the Service publishes not-ready addresses.
    ready = publish_not_ready or (serving and not terminating)
    endpoint: dict[str, Any] = {
        "addresses": addresses,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
    }
    if spec.get("nodeName"):
        endpoint["nodeName"] = spec["nodeName"]
    zone = (((node or {}).get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL)
    if zone:
        endpoint["zone"] = zone
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        endpoint["hostname"] = spec["hostname"]
    return endpoint


# --- slices -----------------------------------------------------------------------------------------

PlannedSlice = tuple[Mapping[str, Any] | None, GroupKey, list[dict[str, Any]] | None]  # stored (None: new)


def _endpoint_id(endpoint: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    return str(endpoint["targetRef"]["uid"]), tuple(endpoint["addresses"])


def _group_of(stored: Mapping[str, Any]) -> GroupKey:
    return str(stored.get("addressType")), _ports_key(stored.get("ports") or [])


def _plan_slices(
    existing: Sequence[Mapping[str, Any]], desired: Mapping[GroupKey, list[dict[str, Any]]], limit: int
) -> list[PlannedSlice]:
    """Which slices hold which endpoints: each endpoint stays where it is, new ones fill the fullest slice
    with room (``getSliceToFill``), the rest go to new slices; slices left empty are not in the plan."""
    plan: list[PlannedSlice] = []
    for group, endpoints in desired.items():
        wanted = {_endpoint_id(endpoint): endpoint for endpoint in endpoints}
        slots: list[tuple[Mapping[str, Any] | None, list[dict[str, Any]]]] = []
        for stored in (s for s in existing if _group_of(s) == group):
            held = [wanted.pop(eid) for e in stored.get("endpoints") or [] if (eid := _endpoint_id(e)) in wanted]
            slots.append((stored, held[:limit]))
            for endpoint in held[limit:]:  # a slice over the limit (someone else's write) gives back the rest
                wanted[_endpoint_id(endpoint)] = endpoint
        remaining = sorted(wanted.values(), key=_endpoint_sort_key)
        while remaining:
            fillable = [slot for slot in slots if len(slot[1]) < limit]
            if not fillable:
                slots.append((None, []))
                continue
            target = max(fillable, key=lambda slot: len(slot[1]))
            room = limit - len(target[1])
            target[1].extend(remaining[:room])
            remaining = remaining[room:]
        plan.extend((stored, group, held) for stored, held in slots if held)
    return plan


def _placeholder_plan(existing: Sequence[Mapping[str, Any]], family: str) -> list[PlannedSlice]:
    """A Service without endpoints keeps one empty slice (reused if there is one already)."""
    group: GroupKey = (family, ())
    reusable = next((s for s in existing if _group_of(s) == group and not s.get("endpoints")), None)
    return [(reusable, group, None)]


def _endpoint_sort_key(endpoint: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    return str(endpoint["targetRef"]["name"]), tuple(endpoint["addresses"])


def _slice_metadata(service: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec = service["metadata"], service.get("spec") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _RESERVED_LABELS}
    if spec.get("clusterIP") in (None, "", "None"):
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = meta["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    owner = {
        "apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }
    return {"namespace": meta["namespace"], "labels": labels, "ownerReferences": [owner]}


def _slice_body(
    meta: Mapping[str, Any], group: GroupKey, endpoints: list[dict[str, Any]] | None,
    stored: Mapping[str, Any] | None,
) -> dict[str, Any]:
    address_type, ports = group
    metadata: dict[str, Any] = {**meta, "labels": dict(meta["labels"])}
    if stored is None:
        metadata["generateName"] = f"{meta['labels'][SERVICE_NAME_LABEL]}-"
    else:
        metadata = {**stored["metadata"], **metadata}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": address_type,
        "endpoints": None if endpoints is None else sorted(endpoints, key=_endpoint_sort_key),
        "ports": [dict(port) for port in ports] if ports or endpoints is not None else None,
    }


def _content(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a slice says (not its name, uid, resourceVersion): equal content means no write."""
    meta = obj.get("metadata") or {}
    return (
        obj.get("addressType"), obj.get("endpoints"), obj.get("ports"), meta.get("labels"),
        meta.get("ownerReferences"),
    )


# --- the reader (what kube-proxy does with the slices) -----------------------------------------------


class _ListsObjects(Protocol):
    def list(self, resource: Any, ns: str | None = None) -> builtins.list[dict[str, Any]]: ...


def usable_endpoints(slices: Iterable[Mapping[str, Any]], port_name: str | None = None) -> list[Endpoint]:
    """The endpoints kube-proxy would route a Service port to, from its slices: the ready ones; when none is
    ready, the serving and terminating ones (``CategorizeEndpoints`` in ``pkg/proxy/topology.go``).
    ``port_name`` picks the Service port by name (default: the slice's only or first port)."""
    ready: set[Endpoint] = set()
    fallback: set[Endpoint] = set()
    for endpoint_slice in slices:
        ports = endpoint_slice.get("ports") or []
        port = next((p for p in ports if port_name is None or p.get("name", "") == port_name), None)
        if port is None or port.get("port") is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            # Nil conditions: ready and serving "should be interpreted as true", terminating as false.
            is_ready, is_serving = conditions.get("ready", True), conditions.get("serving", True)
            targets = {Endpoint(address, int(port["port"])) for address in endpoint.get("addresses") or []}
            if is_ready is not False:
                ready |= targets
            elif is_serving is not False and conditions.get("terminating"):
                fallback |= targets
    return sorted(ready or fallback)


def ready_endpoints(
    cluster: _ListsObjects, namespace: str, service: str, port_name: str | None = None
) -> list[Endpoint]:
    """:func:`usable_endpoints` of a Service, reading its EndpointSlices from the cluster (any thread)."""
    slices = [
        s for s in cluster.list("discovery.k8s.io/v1/endpointslices", namespace)
        if (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == service
    ]
    return usable_endpoints(slices, port_name)
