import json
from typing import Any

import kubernetes_validate
import pytest

from controller.api.spec import InferencePoolSpec
from controller.core.capacity import CapacitySplit, CapacityType
from controller.kube.render import (
    CAPACITY_TYPE_LABEL,
    DEFAULT_ROUTER_IMAGE,
    POOL_LABEL,
    SERVING_LABEL,
    PoolRef,
    render_deployment,
    render_owned_objects,
    render_pdb,
    render_router_deployment,
    render_service,
    retired_objects,
    router_max_in_flight_per_replica,
)

POOL = PoolRef(name="llama", namespace="llm", uid="uid-1")


def spec(**overrides: Any) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **overrides})


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_owned_objects_are_two_deployments_two_services_and_a_pdb_each_all_owned_by_the_pool() -> None:
    objects = render_owned_objects(POOL, spec(), CapacitySplit(spot=3, on_demand=1))
    assert [(o.kind, o.name) for o in objects] == [
        ("Deployment", "llama-on-demand"), ("Deployment", "llama-spot"), ("Service", "llama-replicas"),
        ("Service", "llama"), ("PodDisruptionBudget", "llama-on-demand"), ("PodDisruptionBudget", "llama-spot")]
    for owned in objects:
        (owner,) = owned.manifest["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool", "name": "llama",
                         "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
        assert owned.manifest["metadata"]["namespace"] == "llm"
    replicas = {o.name: o.manifest["spec"].get("replicas") for o in objects if o.kind == "Deployment"}
    assert replicas == {"llama-on-demand": 1, "llama-spot": 3}


def test_vllm_runs_the_model_with_drain_flags_sized_inside_the_grace_period() -> None:
    deployment = render_deployment(POOL, spec(interruption={"drainSeconds": 90, "preStopSeconds": 10}),
                                   CapacityType.SPOT, 2)
    pod = deployment["spec"]["template"]["spec"]
    vllm = container(deployment)
    assert vllm["command"] == ["vllm", "serve"]
    assert vllm["args"][0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert "--shutdown-timeout=75" in vllm["args"]
    assert vllm["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    # preStop + vLLM's drain + a margin before SIGKILL fit in the grace period.
    assert pod["terminationGracePeriodSeconds"] == 90 >= 10 + 75
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"


def test_startup_probe_budget_follows_the_expected_cold_start() -> None:
    vllm = container(render_deployment(POOL, spec(scaling={"startupSeconds": 300}), CapacityType.SPOT, 1))
    probe = vllm["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 300


def test_gpus_become_limits_and_tensor_parallelism() -> None:
    vllm = container(render_deployment(POOL, spec(model={"name": "m", "gpusPerReplica": 4,
                                                         "resources": {"limits": {"memory": "64Gi"}}}),
                                       CapacityType.ON_DEMAND, 1))
    assert vllm["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "4"}
    assert "--tensor-parallel-size=4" in vllm["args"]


def test_user_args_come_last_and_are_not_duplicated() -> None:
    vllm = container(render_deployment(POOL, spec(model={"name": "m", "gpusPerReplica": 2,
                                                         "args": ["--tensor-parallel-size=1", "--enforce-eager"]}),
                                       CapacityType.ON_DEMAND, 1))
    assert vllm["args"][-2:] == ["--tensor-parallel-size=1", "--enforce-eager"]
    assert sum(a.startswith("--tensor-parallel-size") for a in vllm["args"]) == 1


def test_spot_and_on_demand_land_on_their_own_nodes() -> None:
    pool_spec = spec(capacity={"provider": "gke"})
    spot = render_deployment(POOL, pool_spec, CapacityType.SPOT, 1)["spec"]["template"]["spec"]
    on_demand = render_deployment(POOL, pool_spec, CapacityType.ON_DEMAND, 1)["spec"]["template"]["spec"]
    assert spot["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in spot["tolerations"]
    assert "topologySpreadConstraints" in spot
    assert "nodeSelector" not in on_demand
    terms = on_demand["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"}]


def test_the_serving_label_is_in_the_service_selector_but_not_the_deployment_selector() -> None:
    deployment = render_deployment(POOL, spec(), CapacityType.SPOT, 1)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == {POOL_LABEL: "llama", CAPACITY_TYPE_LABEL: "spot"}
    assert pod_labels[SERVING_LABEL] == "true"
    assert selector.items() <= pod_labels.items()
    service = render_service(POOL, spec())
    assert service["spec"]["selector"] == {POOL_LABEL: "llama", SERVING_LABEL: "true"}


def test_each_deployment_has_a_pdb_that_lets_one_replica_go_at_a_time_and_never_blocks_on_unready_ones() -> None:
    for capacity_type in CapacityType:
        pdb = render_pdb(POOL, capacity_type)["spec"]
        assert pdb["maxUnavailable"] == 1
        assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        # The Deployment's own selector: a cold-starting on-demand replica never blocks a spot eviction,
        # and a replica released for a reclaim (no capacity-type label) is in no budget of ours.
        assert pdb["selector"] == {"matchLabels": {POOL_LABEL: "llama", CAPACITY_TYPE_LABEL: capacity_type.value}}
        assert pdb["selector"] == render_deployment(POOL, spec(), capacity_type, 1)["spec"]["selector"]


def test_rolling_updates_never_drop_below_the_replicas_serving_now() -> None:
    strategy = render_deployment(POOL, spec(), CapacityType.ON_DEMAND, 2)["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


# ------------------------------------------------------------------------------- the bundled router

ROUTED = {"fallback": {"enabled": True, "route": "router",
                       "provider": {"baseURL": "https://api.example.com/v1", "model": "gpt-4o-mini",
                                    "apiKeySecretRef": {"name": "provider", "key": "token"}}}}
SERVING_SELECTOR = {POOL_LABEL: "llama", SERVING_LABEL: "true"}


def routed_spec(**overrides: Any) -> InferencePoolSpec:
    return spec(**{**ROUTED, **overrides})


def owned(pool_spec: InferencePoolSpec) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o.kind, o.name): o.manifest for o in render_owned_objects(POOL, pool_spec, CapacitySplit(1, 1))}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec_: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec_


def test_the_headless_replicas_service_selects_the_serving_replicas_with_or_without_the_router() -> None:
    for pool_spec in (spec(), routed_spec()):
        service = owned(pool_spec)[("Service", "llama-replicas")]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == SERVING_SELECTOR
        assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
        # false is the default, and the server drops a false: sending it would be drift forever.
        assert "publishNotReadyAddresses" not in service["spec"]


def test_without_the_router_the_front_door_selects_the_replicas_and_no_router_object_exists() -> None:
    for pool_spec in (spec(), spec(fallback={**ROUTED["fallback"], "enabled": False}),
                      spec(fallback={**ROUTED["fallback"], "route": "httpRoute", "httpRoute": {"name": "r"}})):
        objects = owned(pool_spec)
        assert objects[("Service", "llama")]["spec"]["selector"] == SERVING_SELECTOR
        assert not [key for key in objects if key[1] == "llama-router"]
        assert render_service(POOL, pool_spec)["spec"]["selector"] == SERVING_SELECTOR


def test_with_the_router_the_front_door_selects_the_router_pods_only() -> None:
    objects = render_owned_objects(POOL, routed_spec(), CapacitySplit(1, 1))
    kinds = [(o.kind, o.name) for o in objects]
    router = [("ServiceAccount", "llama-router"), ("Role", "llama-router"), ("RoleBinding", "llama-router"),
              ("Deployment", "llama-router")]
    # Identity and grants before the pods that use them; the router before the front door selects it.
    assert kinds[kinds.index(router[0]):kinds.index(router[0]) + 4] == router
    assert kinds.index(("Deployment", "llama-router")) < kinds.index(("Service", "llama"))
    by_key = {(o.kind, o.name): o.manifest for o in objects}
    front = by_key[("Service", "llama")]["spec"]
    router_pods = by_key[("Deployment", "llama-router")]["spec"]["template"]["metadata"]["labels"]
    assert front["selector"].items() <= router_pods.items()
    assert front["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    # A router pod is no replica: the operator's pod watches and the replicas' selectors take the pool label.
    assert POOL_LABEL not in router_pods
    for capacity_type in CapacityType:
        replica_pods = render_deployment(POOL, routed_spec(), capacity_type, 1)["spec"]["template"]["metadata"]
        assert not front["selector"].items() <= replica_pods["labels"].items()
    for key, manifest in by_key.items():
        if key[1] == "llama-router":
            (owner,) = manifest["metadata"]["ownerReferences"]
            assert owner["uid"] == "uid-1" and owner["controller"] is True
            assert manifest["metadata"]["labels"][POOL_LABEL] == "llama"  # found in the operator's caches
            assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "poolpilot"


def test_the_router_runs_the_fixed_command_line() -> None:
    deployment = render_router_deployment(POOL, routed_spec(model={"name": "meta-llama/Llama-3.1-8B-Instruct",
                                                                  "servedModelName": "llama-8b"}))
    assert deployment["spec"]["replicas"] == 2
    router = container(deployment)
    assert router["image"] == DEFAULT_ROUTER_IMAGE
    assert router["command"] == ["poolpilot"]
    assert router["args"] == [
        "router", "--namespace", "llm", "--pool", "llama", "--port", "8080", "--served-model", "llama-8b",
        "--provider-url", "https://api.example.com/v1", "--provider-model", "gpt-4o-mini",
        "--api-key-file", "/var/run/secrets/poolpilot/api-key/token",
        "--max-in-flight-per-replica", str((256 + 8) // 2), "--routers", "2",
    ]
    assert router["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert set(router["resources"]) == {"requests", "limits"}
    image = render_router_deployment(POOL, routed_spec(), "registry.example/poolpilot:9")
    assert container(image)["image"] == "registry.example/poolpilot:9"


@pytest.mark.parametrize(("args", "queue_depth", "expected"), [
    # vLLM's default --max-num-seqs, plus the queue that counts as saturated, shared by the 2 routers
    ([], 8.0, (256 + 8) // 2),
    (["--max-num-seqs=64"], 8.0, (64 + 8) // 2),
    (["--enforce-eager", "--max-num-seqs", "32"], 2.5, 18),  # (32 + 3) / 2, rounded up
    (["--max-num-seqs=oops"], 4.0, (256 + 4) // 2),
])
def test_in_flight_per_replica_is_what_vllm_batches_plus_the_saturation_queue_shared_by_the_routers(
        args: list[str], queue_depth: float, expected: int) -> None:
    pool_spec = routed_spec(model={"name": "m", "args": args},
                            fallback={**ROUTED["fallback"], "saturation": {"queueDepthPerReplica": queue_depth}})
    assert router_max_in_flight_per_replica(pool_spec) == expected
    router_args = container(render_router_deployment(POOL, pool_spec))["args"]
    assert router_args[router_args.index("--max-in-flight-per-replica") + 1] == str(expected)


def test_the_router_is_locked_down() -> None:
    deployment = render_router_deployment(POOL, routed_spec())
    pod, router = pod_spec(deployment), container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert router["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert {"name": "tmp", "mountPath": "/tmp"} in router["volumeMounts"]  # the read-only root needs one


def test_the_api_key_secret_is_mounted_into_the_router_only_and_only_its_key() -> None:
    objects = owned(routed_spec())
    router_pod = pod_spec(objects[("Deployment", "llama-router")])
    secrets = [v for v in router_pod["volumes"] if "secret" in v]
    assert secrets == [{"name": "api-key", "secret": {"secretName": "provider",
                                                      "items": [{"key": "token", "path": "token"}]}}]
    (mount,) = [m for m in router_pod["containers"][0]["volumeMounts"] if m["name"] == "api-key"]
    assert mount == {"name": "api-key", "mountPath": "/var/run/secrets/poolpilot/api-key", "readOnly": True}
    for key, manifest in objects.items():
        if key[0] == "Deployment" and key[1] != "llama-router":
            assert not [v for v in pod_spec(manifest)["volumes"] if "secret" in v], key
            assert '"provider"' not in json.dumps(manifest), key

    no_key = spec(fallback={**ROUTED["fallback"], "provider": {"baseURL": "http://api:8000/v1", "model": "m"}})
    router = render_router_deployment(POOL, no_key)
    assert "--api-key-file" not in container(router)["args"]
    assert not [v for v in pod_spec(router)["volumes"] if "secret" in v]


def test_the_routers_role_grants_its_one_pool_and_the_slices_nothing_more() -> None:
    objects = owned(routed_spec())
    role = objects[("Role", "llama-router")]
    assert role["rules"] == [
        {"apiGroups": ["poolpilot.io"], "resources": ["inferencepools"], "resourceNames": ["llama"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
    binding = objects[("RoleBinding", "llama-router")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "llama-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llama-router", "namespace": "llm"}]
    assert objects[("ServiceAccount", "llama-router")]["metadata"]["name"] == "llama-router"
    assert pod_spec(objects[("Deployment", "llama-router")])["serviceAccountName"] == "llama-router"
    for capacity_type in CapacityType:  # the replicas never run as the router
        assert "serviceAccountName" not in pod_spec(render_deployment(POOL, routed_spec(), capacity_type, 1))


def test_the_router_objects_retire_when_the_spec_stops_asking_for_them() -> None:
    router = [("Deployment", "llama-router"), ("RoleBinding", "llama-router"), ("Role", "llama-router"),
              ("ServiceAccount", "llama-router")]
    assert retired_objects(POOL, spec()) == [("PodDisruptionBudget", "llama"), *router]  # pods first
    assert retired_objects(POOL, routed_spec()) == [("PodDisruptionBudget", "llama")]
    assert retired_objects(POOL, None) == [("PodDisruptionBudget", "llama")]  # an invalid spec keeps the door


@pytest.mark.parametrize("pool_spec", [spec(), routed_spec()], ids=["replicas", "router"])
def test_every_owned_object_is_a_valid_kubernetes_object(pool_spec: InferencePoolSpec) -> None:
    for (kind, name), manifest in owned(pool_spec).items():
        try:
            kubernetes_validate.validate(manifest, "1.30", strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind} {name}: {error.message} at {'.'.join(map(str, error.absolute_path))}")
