"""
Nodes of the embedded world, as a cloud's node pools register them, and the pod garbage collector.

``NodeSpec`` describes one node; ``node_manifest`` makes the Node object the way
``cluster/nodes.py`` does for the real control plane (KWOK keeps those Ready): ``spec.providerID``
``aws:///<zone>/i-<17 hex digits>``, the labels ``kubernetes.io/hostname``,
``topology.kubernetes.io/zone``/``region``, ``node.kubernetes.io/instance-type`` and the
capacity-type labels of every provider preset (Karpenter, EKS managed node groups, GKE spot, AKS
spot scale sets), so any pool provider finds its nodes. ``default_node_specs`` is what a
``DevCluster`` starts with: the real control plane's four nodes, spot and on-demand in two zones.

``PodGarbageCollector`` plays pkg/controller/podgc: the pods bound to a Node that is deleted are
force-deleted (grace 0). Unlike the real one, at once: no 40-second quarantine, no ``Failed`` phase
and ``DisruptionTarget`` condition before the deletion, and a pod bound to a node that never existed
is left alone.

Differences: the node status is written once (no heartbeats, no ``Lease``); a cordoned node gets no
``node.kubernetes.io/unschedulable`` taint (the real node lifecycle controller adds one; the stand-in
scheduler checks ``spec.unschedulable`` directly, as the NodeUnschedulable filter does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from devkube import errors
from devkube.store import ObjectStore, WatchEvent, now_utc, timestamp

logger = logging.getLogger(__name__)

SPOT = "spot"
ON_DEMAND = "on-demand"

# The labels each provider preset selects on (controller/core/capacity.py), per capacity type.
CAPACITY_LABELS: dict[str, dict[str, str]] = {
    ON_DEMAND: {"karpenter.sh/capacity-type": "on-demand", "eks.amazonaws.com/capacityType": "ON_DEMAND"},
    SPOT: {
        "karpenter.sh/capacity-type": "spot",
        "eks.amazonaws.com/capacityType": "SPOT",
        "cloud.google.com/gke-spot": "true",
        "kubernetes.azure.com/scalesetpriority": "spot",
    },
}
# Node addresses on loopback, apart from the pod network (127.244.0.0/16): nothing ever connects to them.
_NODE_ADDRESS_PREFIX = "127.243"


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node: its name, capacity type (``spot`` or ``on-demand``), zone, instance type and extras."""

    name: str
    capacity_type: str = ON_DEMAND
    zone: str = "us-east-1a"
    instance_type: str = "g6e.2xlarge"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    unschedulable: bool = False
    provider_id: str | None = None  # default: aws:///<zone>/i-<hash of the name>
    gpus: int = 8
    cpu: str = "64"
    memory: str = "512Gi"
    pods: int = 110

    def __post_init__(self) -> None:
        if self.capacity_type not in CAPACITY_LABELS:
            raise ValueError(f"capacity_type must be one of {sorted(CAPACITY_LABELS)}, not {self.capacity_type!r}")


def default_node_specs() -> list[NodeSpec]:
    """The real control plane's default nodes (cluster/nodes.py): on-demand and spot, zones a and b."""
    return [
        NodeSpec(f"gpu-{capacity_type}-{zone[-1]}", capacity_type=capacity_type, zone=zone)
        for capacity_type in (ON_DEMAND, SPOT)
        for zone in ("us-east-1a", "us-east-1b")
    ]


def instance_id(name: str) -> str:
    """A unique, stable EC2-style instance id for a node name."""
    return "i-0" + hashlib.sha256(name.encode()).hexdigest()[:16]


def node_manifest(spec: NodeSpec, index: int) -> dict[str, Any]:
    """The Node object with the status a kubelet reports (``index`` picks its loopback address)."""
    capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods), "ephemeral-storage": "1Ti"}
    if spec.gpus:
        capacity["nvidia.com/gpu"] = str(spec.gpus)
    node_spec: dict[str, Any] = {"providerID": spec.provider_id or f"aws:///{spec.zone}/{instance_id(spec.name)}"}
    if spec.taints:
        node_spec["taints"] = [dict(taint) for taint in spec.taints]
    if spec.unschedulable:
        node_spec["unschedulable"] = True
    stamp = timestamp(now_utc())
    address = f"{_NODE_ADDRESS_PREFIX}.{index // 250}.{index % 250 + 1}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": {
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": spec.zone,
                "topology.kubernetes.io/region": spec.zone[:-1],
                "node.kubernetes.io/instance-type": spec.instance_type,
                **CAPACITY_LABELS[spec.capacity_type],
                **spec.labels,
            },
        },
        "spec": node_spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                _node_condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                                "kubelet has sufficient memory available", stamp),
                _node_condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                                "kubelet has no disk pressure", stamp),
                _node_condition("PIDPressure", "False", "KubeletHasSufficientPID",
                                "kubelet has sufficient PID available", stamp),
                _node_condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", stamp),
            ],
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": spec.name}],
            "nodeInfo": {
                "machineID": hashlib.sha256(spec.name.encode()).hexdigest()[:32],
                "systemUUID": hashlib.sha256(spec.name.encode()).hexdigest()[32:],
                "bootID": "",
                "kernelVersion": "6.1.0-devkube",
                "osImage": "Devkube Linux",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.32.0+devkube",
                "kubeProxyVersion": "v1.32.0+devkube",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _node_condition(kind: str, status: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}


class PodGarbageCollector:
    """Force-deletes the pods of a deleted Node, as pkg/controller/podgc's gcOrphaned (without quarantine)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        self._loop = None

    def _on_event(self, event: WatchEvent) -> None:
        deleted_node = (event.resource.group, event.resource.plural, event.type) == ("", "nodes", "DELETED")
        if deleted_node and self._loop is not None:  # never write from inside a store event
            self._loop.call_soon(self._collect, event.object["metadata"]["name"])

    def _collect(self, node_name: str) -> None:
        pods = self.store.resolve("", "v1", "pods")
        on_node = [
            (pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])
            for pod in self.store.list_stored(pods)
            if (pod.get("spec") or {}).get("nodeName") == node_name
        ]
        for namespace, name, uid in on_node:
            try:
                self.store.delete(pods, namespace, name, preconditions={"uid": uid}, grace_period_seconds=0)
            except errors.ApiError as e:  # gone already, or recreated under the same name
                logger.debug("The pod GC could not delete %s/%s: %s", namespace, name, e)
