from typing import Any

from controller.api.spec import InferencePoolSpec
from controller.core.capacity import CapacitySplit, CapacityType
from controller.kube.render import (
    CAPACITY_TYPE_LABEL,
    POOL_LABEL,
    SERVING_LABEL,
    PoolRef,
    render_deployment,
    render_owned_objects,
    render_pdb,
    render_service,
)

POOL = PoolRef(name="llama", namespace="llm", uid="uid-1")


def spec(**overrides: Any) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate({"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **overrides})


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def test_owned_objects_are_two_deployments_a_service_and_a_pdb_each_all_owned_by_the_pool() -> None:
    objects = render_owned_objects(POOL, spec(), CapacitySplit(spot=3, on_demand=1))
    assert [(o.kind, o.name) for o in objects] == [
        ("Deployment", "llama-on-demand"), ("Deployment", "llama-spot"),
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
