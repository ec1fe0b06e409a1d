"""Render the objects a pool owns, as plain dicts: pure functions of the pool's spec.

Per pool: a Deployment for spot replicas and one for on-demand replicas, a
Service over serving replicas, and a PodDisruptionBudget. The Deployments'
selectors do NOT include the serving label, so a later drain can flip that label
on a doomed pod to drop it from the Service without the ReplicaSet disowning it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.api import quantity
from controller.api.spec import API_GROUP, API_VERSION, KIND, InferencePoolSpec, Toleration
from controller.core.capacity import CapacitySplit, CapacityType, Placement, placement_for
from controller.core.replicas import DrainMark

__all__ = [
    "CAPACITY_TYPE_LABEL",
    "DRAIN_ANNOTATION",
    "DRAIN_LABEL",
    "MANAGED_BY_LABEL",
    "POOL_LABEL",
    "SERVING_LABEL",
    "TEMPLATE_GENERATION_ANNOTATION",
    "OwnedObject",
    "PoolRef",
    "deployment_name",
    "release_patch",
    "render_deployment",
    "render_owned_objects",
    "render_pdb",
    "render_service",
    "rendered_template_fingerprints",
    "retired_objects",
    "template_fingerprint",
    "with_template_generation",
]

Manifest = dict[str, Any]

POOL_LABEL = f"{API_GROUP}/pool"
CAPACITY_TYPE_LABEL = f"{API_GROUP}/capacity-type"
SERVING_LABEL = f"{API_GROUP}/serving"
# On a replica taken out of its Deployment for a reclaim: the stage as a label (``kubectl get pods -l
# poolpilot.io/drain``), what the notice said as an annotation (the restart-safe drain state).
DRAIN_LABEL = f"{API_GROUP}/drain"
DRAIN_ANNOTATION = f"{API_GROUP}/drain-notice"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "poolpilot"

# A startup probe this often; its failure budget comes from scaling.startupSeconds.
STARTUP_PROBE_PERIOD_SECONDS = 10


@dataclass(frozen=True)
class PoolRef:
    """The identity of a pool: enough to name and own its objects."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class OwnedObject:
    """A desired object and where it lives in the API."""

    api_version: str
    kind: str
    plural: str
    name: str
    manifest: Manifest


# On each Deployment: the pool generation its pod template was last rolled for. The same generation
# with a different template means a new operator version renders it differently (an upgrade, gated
# fleet-wide); a newer generation means the user changed the spec (applied at once).
TEMPLATE_GENERATION_ANNOTATION = f"{API_GROUP}/template-generation"


def deployment_name(pool_name: str, capacity_type: CapacityType) -> str:
    return f"{pool_name}-{capacity_type.value}"


def _pool_labels(pool: PoolRef) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": pool.name,
        "app.kubernetes.io/component": "inference",
        MANAGED_BY_LABEL: MANAGER,
        POOL_LABEL: pool.name,
    }


def _owner_reference(pool: PoolRef) -> Manifest:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: PoolRef, name: str, extra_labels: dict[str, str] | None = None) -> Manifest:
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": {**_pool_labels(pool), **(extra_labels or {})},
        "ownerReferences": [_owner_reference(pool)],
    }


def _toleration(toleration: Toleration) -> Manifest:
    rendered: Manifest = {"operator": toleration.operator}
    if toleration.key is not None:
        rendered["key"] = toleration.key
    if toleration.value is not None:
        rendered["value"] = toleration.value
    if toleration.effect is not None:
        rendered["effect"] = toleration.effect
    return rendered


def _quantity(value: int | str) -> str:
    """What the API server will store (``0.5`` -> ``500m``), so that the comparison with it is exact."""
    try:
        return quantity.canonical(str(value), round_to_milli=True)
    except quantity.InvalidQuantity:
        return str(value)  # the API server refuses it, with its own message


def _vllm_args(spec: InferencePoolSpec) -> list[str]:
    model = spec.model
    args = [
        model.name,
        f"--served-model-name={model.served_name}",
        "--host=0.0.0.0",
        f"--port={model.port}",
        # Reject new requests on SIGTERM and finish in-flight ones, inside the grace period.
        f"--shutdown-timeout={spec.interruption.vllm_shutdown_timeout_seconds}",
    ]
    has_tensor_parallel = any(a.startswith(("--tensor-parallel-size", "-tp")) for a in model.args)
    if model.gpus_per_replica > 1 and not has_tensor_parallel:
        args.append(f"--tensor-parallel-size={model.gpus_per_replica}")
    return args + list(model.args)


def _container(spec: InferencePoolSpec) -> Manifest:
    model = spec.model
    limits = {key: _quantity(value) for key, value in model.resources.limits.items()}
    requests = {key: _quantity(value) for key, value in model.resources.requests.items()}
    if model.gpus_per_replica > 0:
        limits[model.gpu_resource_name] = str(model.gpus_per_replica)
        requests[model.gpu_resource_name] = str(model.gpus_per_replica)
    resources: Manifest = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    env = [
        # An empty value is dropped by the server (`value,omitempty`): sending it would be drift forever.
        {"name": e.name, **({"value": e.value} if e.value else {}),
         **({"valueFrom": e.value_from} if e.value_from is not None else {})}
        for e in model.env
    ]
    http_get = {"path": "/health", "port": "http"}
    container: Manifest = {
        "name": "vllm",
        "image": model.image,
        "imagePullPolicy": model.image_pull_policy,
        "command": ["vllm", "serve"],
        "args": _vllm_args(spec),
        "ports": [{"name": "http", "containerPort": model.port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": http_get, "periodSeconds": 5, "failureThreshold": 3},
        # Weights take minutes to load; the startup probe holds liveness off until then.
        "startupProbe": {
            "httpGet": http_get,
            "periodSeconds": STARTUP_PROBE_PERIOD_SECONDS,
            "failureThreshold": max(1, -(-spec.scaling.startup_seconds // STARTUP_PROBE_PERIOD_SECONDS)),
        },
        "livenessProbe": {"httpGet": http_get, "periodSeconds": 10, "failureThreshold": 6},
        "lifecycle": {
            # Routing drops the pod while it sleeps; then SIGTERM starts vLLM's drain.
            "preStop": {"exec": {"command": ["sleep", str(spec.interruption.pre_stop_seconds)]}},
        },
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    if env:
        container["env"] = env
    if resources:
        container["resources"] = resources
    return container


def _affinity(placement: Placement) -> Manifest | None:
    if not placement.required_node_expressions:
        return None
    expressions = [
        {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})}
        for r in placement.required_node_expressions
    ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}],
            },
        },
    }


def render_deployment(pool: PoolRef, spec: InferencePoolSpec, capacity_type: CapacityType, replicas: int) -> Manifest:
    selector_labels = {POOL_LABEL: pool.name, CAPACITY_TYPE_LABEL: capacity_type.value}
    pod_labels = {**_pool_labels(pool), **selector_labels, SERVING_LABEL: "true"}
    placement = placement_for(spec.capacity, capacity_type)
    gpu_toleration = (
        [{"key": spec.model.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
        if spec.model.gpus_per_replica > 0 else []
    )
    pod_spec: Manifest = {
        "terminationGracePeriodSeconds": spec.interruption.drain_seconds,
        "containers": [_container(spec)],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
        "tolerations": gpu_toleration + [_toleration(t) for t in placement.tolerations],
    }
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    affinity = _affinity(placement)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if capacity_type is CapacityType.SPOT:
        # Spread spot replicas over zones: reclaims come in waves per zone and instance type.
        pod_spec["topologySpreadConstraints"] = [{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels},
        }]
    if not pod_spec["tolerations"]:
        del pod_spec["tolerations"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, deployment_name(pool.name, capacity_type),
                              {CAPACITY_TYPE_LABEL: capacity_type.value}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels},
            # New replicas must be ready before old ones go: a GPU replica is slow to replace.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def template_fingerprint(template: Mapping[str, Any]) -> str:
    """A short, stable name for a pod template as rendered (never as the server defaulted it)."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def rendered_template_fingerprints(pool: PoolRef, spec: InferencePoolSpec) -> dict[CapacityType, str]:
    """What this operator version would roll out now, per Deployment (replica counts do not matter)."""
    return {t: template_fingerprint(render_deployment(pool, spec, t, 0)["spec"]["template"]) for t in CapacityType}


def with_template_generation(manifest: Manifest, generation: int | str) -> Manifest:
    """The Deployment, recording which pool generation its template was rolled for."""
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), TEMPLATE_GENERATION_ANNOTATION: str(generation)}
    return {**manifest, "metadata": metadata}


def render_service(pool: PoolRef, spec: InferencePoolSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, pool.name),
        "spec": {
            "type": "ClusterIP",
            "selector": {POOL_LABEL: pool.name, SERVING_LABEL: "true"},
            "ports": [{"name": "http", "port": spec.model.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_pdb(pool: PoolRef, capacity_type: CapacityType) -> Manifest:
    """One budget per Deployment: a cold-starting on-demand replica never blocks a spot eviction, and a
    replica released for a reclaim (no capacity-type label) is in no budget of ours."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pool, deployment_name(pool.name, capacity_type),
                              {CAPACITY_TYPE_LABEL: capacity_type.value}),
        "spec": {
            # One at a time: voluntary drains proceed, but never take the pool down at once.
            "maxUnavailable": 1,
            "selector": {"matchLabels": {POOL_LABEL: pool.name, CAPACITY_TYPE_LABEL: capacity_type.value}},
            # A replica that never became ready must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_owned_objects(pool: PoolRef, spec: InferencePoolSpec, split: CapacitySplit) -> list[OwnedObject]:
    """Everything the pool owns, in the order they are applied."""
    objects = [
        OwnedObject("apps/v1", "Deployment", "deployments", deployment_name(pool.name, capacity_type),
                    render_deployment(pool, spec, capacity_type, split.for_type(capacity_type)))
        for capacity_type in (CapacityType.ON_DEMAND, CapacityType.SPOT)
    ]
    objects.append(OwnedObject("v1", "Service", "services", pool.name, render_service(pool, spec)))
    objects += [OwnedObject("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets",
                            deployment_name(pool.name, capacity_type), render_pdb(pool, capacity_type))
                for capacity_type in (CapacityType.ON_DEMAND, CapacityType.SPOT)]
    return objects


def retired_objects(pool: PoolRef) -> list[tuple[str, str]]:
    """(kind, name) of what earlier versions owned and this one does not: deleted when found owned."""
    return [("PodDisruptionBudget", pool.name)]  # one budget for the whole pool, before 0.8


def release_patch(pool: PoolRef, mark: DrainMark, *, serving: bool) -> Manifest:
    """The one merge patch that takes a replica out of its Deployment (the ReplicaSet starts its replacement),
    hands it to the pool (so it still goes with the pool), sets whether it serves, and records the drain."""
    notice = {"stage": mark.stage.value, "kind": mark.kind.value, "source": mark.source,
              "capacityType": mark.capacity_type.value, "noticedAt": _rfc3339(mark.noticed_at),
              "deadline": _rfc3339(mark.deadline), "eventId": mark.event_id}
    return {"metadata": {
        "labels": {CAPACITY_TYPE_LABEL: None, SERVING_LABEL: "true" if serving else "false",
                   DRAIN_LABEL: mark.stage.value},
        "annotations": {DRAIN_ANNOTATION: json.dumps(notice, sort_keys=True)},
        "ownerReferences": [_owner_reference(pool)],
    }}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
