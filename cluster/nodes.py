"""Simulated nodes for the test cluster: KWOK manages every Node that carries its annotation.

A test asks for the nodes it needs (capacity type, zone, taints, providerID, GPUs);
``default_nodes`` is what ``python -m cluster up`` starts with: GPU nodes that match every
provider preset's on-demand and spot selectors, two zones each, so the examples schedule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["KWOK_ANNOTATION", "default_nodes", "node_manifest"]

Manifest = dict[str, Any]

# kwok --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

# The labels each provider preset selects on (controller/core/capacity.py), per capacity type.
_CAPACITY_LABELS: dict[str, dict[str, str]] = {
    "on-demand": {"karpenter.sh/capacity-type": "on-demand", "eks.amazonaws.com/capacityType": "ON_DEMAND"},
    "spot": {"karpenter.sh/capacity-type": "spot", "eks.amazonaws.com/capacityType": "SPOT",
             "cloud.google.com/gke-spot": "true", "kubernetes.azure.com/scalesetpriority": "spot"},
}


def node_manifest(name: str, *, capacity_type: str = "on-demand", zone: str = "us-east-1a",
                  labels: Mapping[str, str] | None = None, taints: Sequence[Mapping[str, str]] = (),
                  provider_id: str | None = None, gpus: int = 8, instance_type: str = "g6e.2xlarge",
                  cpu: str = "64", memory: str = "512Gi", pods: int = 110) -> Manifest:
    """A Node as a cloud's node pool would register it; KWOK then keeps it Ready."""
    region = zone[:-1]
    capacity = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": "1Ti"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    spec: Manifest = {"providerID": provider_id or f"aws:///{zone}/i-{hashlib.sha256(name.encode()).hexdigest()[:17]}"}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region,
                "node.kubernetes.io/instance-type": instance_type, "type": "kwok",
                **_CAPACITY_LABELS[capacity_type], **(labels or {}),
            },
        },
        "spec": spec,
        # KWOK's node stage copies these into the status it reports.
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def default_nodes() -> list[Manifest]:
    return [
        node_manifest(f"gpu-{capacity_type}-{zone[-1]}", capacity_type=capacity_type, zone=zone,
                      provider_id=f"aws:///{zone}/i-0{index:016x}")
        for index, (capacity_type, zone) in enumerate(
            (c, z) for c in ("on-demand", "spot") for z in ("us-east-1a", "us-east-1b"))
    ]
