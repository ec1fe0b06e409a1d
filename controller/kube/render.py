"""Render the objects a pool owns, as plain dicts: pure functions of the pool's spec.

Per pool: a Deployment for spot replicas and one for on-demand replicas, the Service
``NAME`` (the front door clients call), the headless Service ``NAME-replicas`` over the
serving replicas (what the router discovers them by), and a PodDisruptionBudget per
Deployment. The Deployments' selectors do NOT include the serving label, so a later drain
can flip that label on a doomed pod to drop it from the Services without the ReplicaSet
disowning it.

With ``fallback.enabled`` and ``fallback.route: router``, the pool also owns the bundled
router: a Deployment ``NAME-router`` of ``poolpilot router`` pods, the ServiceAccount, Role
and RoleBinding it reads the pool and its EndpointSlices with, and ``NAME`` selects the
router's pods instead of the replicas.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.api import quantity
from controller.api.spec import API_GROUP, API_VERSION, KIND, PLURAL, InferencePoolSpec, Toleration
from controller.core.capacity import CapacitySplit, CapacityType, Placement, placement_for
from controller.core.replicas import DrainMark

__all__ = [
    "API_KEY_MOUNT_PATH",
    "CAPACITY_TYPE_LABEL",
    "COMPONENT_LABEL",
    "DEFAULT_ROUTER_IMAGE",
    "DRAIN_ANNOTATION",
    "DRAIN_LABEL",
    "MANAGED_BY_LABEL",
    "POOL_LABEL",
    "ROUTER_LABEL",
    "ROUTER_PORT",
    "SERVING_LABEL",
    "TEMPLATE_GENERATION_ANNOTATION",
    "OwnedObject",
    "PoolRef",
    "deployment_name",
    "release_patch",
    "render_deployment",
    "render_owned_objects",
    "render_pdb",
    "render_replicas_service",
    "render_router_deployment",
    "render_router_objects",
    "render_service",
    "rendered_template_fingerprints",
    "replicas_service_name",
    "retired_objects",
    "router_enabled",
    "router_max_in_flight_per_replica",
    "router_name",
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

# The router's pods carry these, and NOT the pool label: the operator's pod watches (scraping, drains,
# the replicas' budgets and Services) take every pod with the pool label for a vLLM replica.
COMPONENT_LABEL = f"{API_GROUP}/component"
ROUTER_LABEL = f"{API_GROUP}/router"  # the pool a router pod routes for
ROUTER_PORT = 8080
ROUTER_REPLICAS = 2  # the front door: one may go (a node drain, a rollout) while the other serves
API_KEY_MOUNT_PATH = "/var/run/secrets/poolpilot/api-key"
# The image the operator runs: `poolpilot router` is a subcommand of the same package, so the router
# is the operator's own image at the operator's own version (manifests/deployment.yaml names it).
OPERATOR_IMAGE_REPOSITORY = "ghcr.io/poolpilot/poolpilot"
DEFAULT_ROUTER_IMAGE = f"{OPERATOR_IMAGE_REPOSITORY}:{importlib.metadata.version('poolpilot')}"
# vLLM's --max-num-seqs when the model's args do not set it: the OpenAI server's default on all but
# H100-class GPUs (on those it is 1024; 256 is the smaller, safe guess for a router that cannot see the GPU).
VLLM_DEFAULT_MAX_NUM_SEQS = 256


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


def replicas_service_name(pool_name: str) -> str:
    return f"{pool_name}-replicas"


def router_name(pool_name: str) -> str:
    return f"{pool_name}-router"


def router_enabled(spec: InferencePoolSpec) -> bool:
    return spec.fallback.enabled and spec.fallback.route == "router"


def _router_selector(pool: PoolRef) -> dict[str, str]:
    return {COMPONENT_LABEL: "router", ROUTER_LABEL: pool.name}


def _router_metadata(pool: PoolRef, name: str) -> Manifest:
    """Owned and labelled like the pool's other objects (the operator's caches find them by the pool
    label), but named as the router's."""
    metadata = _metadata(pool, name, {COMPONENT_LABEL: "router"})
    metadata["labels"].update({"app.kubernetes.io/name": "poolpilot-router", "app.kubernetes.io/component": "router"})
    return metadata


def render_service(pool: PoolRef, spec: InferencePoolSpec) -> Manifest:
    """The front door: the router's pods when the pool has one, the serving replicas otherwise. The same
    port either way, so switching the route changes nothing for clients."""
    selector = (_router_selector(pool) if router_enabled(spec)
                else {POOL_LABEL: pool.name, SERVING_LABEL: "true"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, pool.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": spec.model.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_replicas_service(pool: PoolRef, spec: InferencePoolSpec) -> Manifest:
    """Headless, over the serving replicas: its EndpointSlices are how the router finds them (ready and
    serving, never terminating), one address per replica rather than a ClusterIP's connection spread.

    publishNotReadyAddresses is left out: false is its default, and the server drops a false
    (``omitempty``), so sending it would be a drift forever.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, replicas_service_name(pool.name)),
        "spec": {
            "clusterIP": "None",
            "selector": {POOL_LABEL: pool.name, SERVING_LABEL: "true"},
            "ports": [{"name": "http", "port": spec.model.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def vllm_int_flag(tokens: Sequence[str], flag: str) -> int | None:
    """A positive integer vLLM flag as the user's args give it (``--flag=N``, or ``--flag``, ``N``)."""
    for index, token in enumerate(tokens):
        value = None
        if token.startswith(flag + "="):
            value = token.partition("=")[2]
        elif token == flag and index + 1 < len(tokens):
            value = tokens[index + 1]
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _max_num_seqs(tokens: list[str]) -> int | None:
    return vllm_int_flag(tokens, "--max-num-seqs")


def router_max_in_flight_per_replica(spec: InferencePoolSpec) -> int:
    """How many requests one router keeps in flight on one replica before it spills the next one.

    A replica runs at most --max-num-seqs sequences at once; more wait in vLLM's queue, and a queue
    of saturation.queueDepthPerReplica is where the pool counts as saturated. So: what a replica
    batches plus the queue it may hold, and no more (beyond that a request would only wait longer),
    shared by the ROUTER_REPLICAS routers, which count only their own requests (clients spread over
    them through the Service).
    """
    batch = _max_num_seqs(list(spec.model.args)) or VLLM_DEFAULT_MAX_NUM_SEQS
    per_replica = batch + max(1, math.ceil(spec.fallback.saturation.queue_depth_per_replica))
    return max(1, math.ceil(per_replica / ROUTER_REPLICAS))


def _router_args(pool: PoolRef, spec: InferencePoolSpec) -> list[str]:
    provider = spec.fallback.provider
    args = ["router", "--namespace", pool.namespace, "--pool", pool.name, "--port", str(ROUTER_PORT),
            "--served-model", spec.model.served_name]
    if provider is not None:  # the spec's rules require it with fallback.enabled
        args += ["--provider-url", provider.base_url, "--provider-model", provider.model]
        if provider.api_key_secret_ref is not None:
            args += ["--api-key-file", f"{API_KEY_MOUNT_PATH}/{provider.api_key_secret_ref.key}"]
    return [*args, "--max-in-flight-per-replica", str(router_max_in_flight_per_replica(spec)),
            "--routers", str(ROUTER_REPLICAS)]


def render_router_deployment(pool: PoolRef, spec: InferencePoolSpec, image: str = DEFAULT_ROUTER_IMAGE) -> Manifest:
    selector = _router_selector(pool)
    # Managed by us (the operator's pod watch selects on it, and scrapes the router's demand), but without
    # the pool label: a router pod is no replica to scale, scrape as vLLM or drain.
    pod_labels = {"app.kubernetes.io/name": "poolpilot-router", "app.kubernetes.io/instance": pool.name,
                  "app.kubernetes.io/component": "router", MANAGED_BY_LABEL: MANAGER, **selector}
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    provider = spec.fallback.provider
    if provider is not None and provider.api_key_secret_ref is not None:
        secret = provider.api_key_secret_ref
        # Only the router sees the key, and only that one key of the Secret.
        mounts.append({"name": "api-key", "mountPath": API_KEY_MOUNT_PATH, "readOnly": True})
        volumes.append({"name": "api-key", "secret": {"secretName": secret.name,
                                                      "items": [{"key": secret.key, "path": secret.key}]}})
    container: Manifest = {
        "name": "router",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["poolpilot"],
        "args": _router_args(pool, spec),
        "ports": [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}],
        # Ready once discovery has read the pool and its replicas; alive while its loop answers.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        # A streaming proxy: little CPU per request, memory for the in-flight bodies (--max-body-bytes each).
        "resources": {"requests": {"cpu": _quantity("100m"), "memory": _quantity("128Mi")},
                      "limits": {"cpu": _quantity("1"), "memory": _quantity("512Mi")}},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _router_metadata(pool, router_name(pool.name)),
        "spec": {
            "replicas": ROUTER_REPLICAS,
            "selector": {"matchLabels": selector},
            # The front door keeps its capacity through a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": router_name(pool.name),
                    "enableServiceLinks": False,
                    # The image's user (Dockerfile: USER 10001), numeric so the kubelet can check runAsNonRoot.
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                    # Two routers on one node would go down together with it.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector},
                    }],
                },
            },
        },
    }


def _router_role(pool: PoolRef) -> Manifest:
    """What discovery reads, nothing more: this one pool (its status.fallback.mode) and the slices of the
    namespace (a slice's name is generated, so resourceNames cannot narrow them; the label selector does)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _router_metadata(pool, router_name(pool.name)),
        "rules": [
            {"apiGroups": [API_GROUP], "resources": [PLURAL], "resourceNames": [pool.name],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }


def _router_role_binding(pool: PoolRef) -> Manifest:
    name = router_name(pool.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _router_metadata(pool, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": pool.namespace}],
    }


def _router_service_account(pool: PoolRef) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _router_metadata(pool, router_name(pool.name))}


# (kind, apiVersion, plural) of the router's objects, in the order they are applied: its identity and
# grants before the pods that use them.
ROUTER_KINDS = (("ServiceAccount", "v1", "serviceaccounts"),
                ("Role", "rbac.authorization.k8s.io/v1", "roles"),
                ("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
                ("Deployment", "apps/v1", "deployments"))


def render_router_objects(pool: PoolRef, spec: InferencePoolSpec,
                          image: str = DEFAULT_ROUTER_IMAGE) -> list[OwnedObject]:
    manifests = {"ServiceAccount": _router_service_account(pool), "Role": _router_role(pool),
                 "RoleBinding": _router_role_binding(pool), "Deployment": render_router_deployment(pool, spec, image)}
    name = router_name(pool.name)
    return [OwnedObject(api_version, kind, plural, name, manifests[kind]) for kind, api_version, plural in ROUTER_KINDS]


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


def render_owned_objects(pool: PoolRef, spec: InferencePoolSpec, split: CapacitySplit, *,
                         router_image: str = DEFAULT_ROUTER_IMAGE) -> list[OwnedObject]:
    """Everything the pool owns, in the order they are applied: the router (when it has one) is in place
    before the front door selects it."""
    objects = [
        OwnedObject("apps/v1", "Deployment", "deployments", deployment_name(pool.name, capacity_type),
                    render_deployment(pool, spec, capacity_type, split.for_type(capacity_type)))
        for capacity_type in (CapacityType.ON_DEMAND, CapacityType.SPOT)
    ]
    objects.append(OwnedObject("v1", "Service", "services", replicas_service_name(pool.name),
                               render_replicas_service(pool, spec)))
    if router_enabled(spec):
        objects += render_router_objects(pool, spec, router_image)
    objects.append(OwnedObject("v1", "Service", "services", pool.name, render_service(pool, spec)))
    objects += [OwnedObject("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets",
                            deployment_name(pool.name, capacity_type), render_pdb(pool, capacity_type))
                for capacity_type in (CapacityType.ON_DEMAND, CapacityType.SPOT)]
    return objects


def retired_objects(pool: PoolRef, spec: InferencePoolSpec | None = None) -> list[tuple[str, str]]:
    """(kind, name) of what the pool owned once and does not now: deleted when found owned by it.

    What an earlier operator version made, and the router's objects when the spec no longer asks for
    the router (fallback off, or route httpRoute). Without a spec (it did not validate), nothing of
    the router goes: an invalid edit must not take the front door down.
    """
    retired = [("PodDisruptionBudget", pool.name)]  # one budget for the whole pool, before 0.8
    if spec is not None and not router_enabled(spec):
        # The pods first: their grants stay until they are gone.
        retired += [(kind, router_name(pool.name)) for kind, _, _ in reversed(ROUTER_KINDS)]
    return retired


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
