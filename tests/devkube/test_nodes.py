"""Nodes of the embedded world and the stand-in scheduler: labels, kubectl, taints, cordons, Pending pods."""

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkube import DevCluster
from devkube.nodes import NodeSpec
from devkube.scheduling import place, tolerates
from tests.support.tools import kubectl_binary

NS = "team-a"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", NS], kubectl_binary=kubectl_binary()) as c:
        yield c


def deployment(name: str = "web", replicas: int = 2, **pod_spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm"}], **pod_spec},
            },
        },
    }


def pods_of(cluster: DevCluster, name: str = "web") -> list[dict[str, Any]]:
    return [pod for pod in cluster.pods(NS, {"app": name}) if not pod["metadata"].get("deletionTimestamp")]


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def running_on(cluster: DevCluster, count: int, name: str = "web") -> Callable[[], list[str] | None]:
    """The nodes of the Deployment's pods once ``count`` of them run (sorted), else None."""

    def check() -> list[str] | None:
        pods = pods_of(cluster, name)
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if len(pods) != count or len(running) != count:
            return None
        return sorted(p["spec"]["nodeName"] for p in running)

    return check


def pending(cluster: DevCluster, count: int, name: str = "web") -> Callable[[], list[str] | None]:
    """The Unschedulable messages once ``count`` pods are Pending, else None."""

    def check() -> list[str] | None:
        pods = pods_of(cluster, name)
        stuck = [p for p in pods if condition(p, "PodScheduled").get("reason") == "Unschedulable"]
        return [condition(p, "PodScheduled")["message"] for p in stuck] if len(stuck) == count else None

    return check


SPOT_SELECTOR = {"karpenter.sh/capacity-type": "spot"}


def test_the_default_nodes_carry_every_presets_capacity_labels_and_unique_provider_ids(cluster: DevCluster) -> None:
    nodes = {node["metadata"]["name"]: node for node in cluster.nodes()}
    assert sorted(nodes) == ["gpu-on-demand-a", "gpu-on-demand-b", "gpu-spot-a", "gpu-spot-b"]
    spot, on_demand = nodes["gpu-spot-a"]["metadata"]["labels"], nodes["gpu-on-demand-b"]["metadata"]["labels"]
    assert spot["karpenter.sh/capacity-type"] == "spot" and spot["eks.amazonaws.com/capacityType"] == "SPOT"
    assert spot["cloud.google.com/gke-spot"] == "true" and spot["kubernetes.azure.com/scalesetpriority"] == "spot"
    assert on_demand["karpenter.sh/capacity-type"] == "on-demand"
    assert on_demand["eks.amazonaws.com/capacityType"] == "ON_DEMAND"
    assert "cloud.google.com/gke-spot" not in on_demand and "kubernetes.azure.com/scalesetpriority" not in on_demand
    assert on_demand["topology.kubernetes.io/zone"] == "us-east-1b"
    assert on_demand["kubernetes.io/hostname"] == "gpu-on-demand-b" and on_demand["node.kubernetes.io/instance-type"]
    provider_ids = [node["spec"]["providerID"] for node in nodes.values()]
    assert len(set(provider_ids)) == 4
    assert all(re.fullmatch(r"aws:///us-east-1[ab]/i-0[0-9a-f]{16}", pid) for pid in provider_ids), provider_ids
    assert all(condition(node, "Ready")["status"] == "True" for node in nodes.values())
    assert all(node["status"]["addresses"][0]["type"] == "InternalIP" for node in nodes.values())


def test_a_cluster_gets_the_nodes_it_asks_for_or_none() -> None:
    with DevCluster.in_thread(nodes=[NodeSpec("only", capacity_type="spot", zone="eu-west-1c")]) as cluster:
        [node] = cluster.nodes()
        assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "eu-west-1"
        assert node["spec"]["providerID"].startswith("aws:///eu-west-1c/i-0")
    with DevCluster.in_thread(nodes=()) as cluster:
        assert cluster.nodes() == []


def test_kubectl_get_nodes_prints_the_real_columns(cluster: DevCluster) -> None:
    cluster.cordon("gpu-spot-b")
    output = cluster.kubectl("get", "nodes").stdout
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [row[:3] for row in rows[1:]] == [
        ["gpu-on-demand-a", "Ready", "<none>"],
        ["gpu-on-demand-b", "Ready", "<none>"],
        ["gpu-spot-a", "Ready", "<none>"],
        ["gpu-spot-b", "Ready,SchedulingDisabled", "<none>"],
    ]
    wide = cluster.kubectl("get", "nodes", "-o", "wide").stdout.splitlines()
    assert re.split(r"\s{2,}", wide[0].strip())[5:7] == ["INTERNAL-IP", "EXTERNAL-IP"]


def test_kubectl_cordon_taint_and_their_undoing_patch_the_node(cluster: DevCluster) -> None:
    cluster.kubectl("cordon", "gpu-spot-a")
    cluster.kubectl("taint", "nodes", "gpu-spot-a", "spot=reclaimed:NoExecute")
    node = cluster.get("nodes", None, "gpu-spot-a")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert [(t["key"], t["value"], t["effect"]) for t in node["spec"]["taints"]] == [("spot", "reclaimed", "NoExecute")]
    cluster.kubectl("taint", "nodes", "gpu-spot-a", "spot-")
    cluster.kubectl("uncordon", "gpu-spot-a")
    node = cluster.get("nodes", None, "gpu-spot-a")
    assert node is not None and not node["spec"].get("taints") and not node["spec"].get("unschedulable")


def test_pods_go_to_the_nodes_their_selector_names_spread_by_count_then_name(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3, nodeSelector=SPOT_SELECTOR))
    assert cluster.wait_until(running_on(cluster, 3)) == ["gpu-spot-a", "gpu-spot-a", "gpu-spot-b"]
    azure_on_demand = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.azure.com/scalesetpriority", "operator": "DoesNotExist"},
        {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["us-east-1a"]}]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": azure_on_demand}}
    cluster.create("deployments", deployment("od", replicas=2, affinity=affinity))
    assert cluster.wait_until(running_on(cluster, 2, "od")) == ["gpu-on-demand-b", "gpu-on-demand-b"]


def test_untolerated_taints_leave_pods_pending_until_the_taint_goes(cluster: DevCluster) -> None:
    for node in ("gpu-spot-a", "gpu-spot-b"):
        cluster.taint_node(node, "spot", "reclaimed", "NoSchedule")
    cluster.create("deployments", deployment(replicas=1, nodeSelector=SPOT_SELECTOR))
    [message] = cluster.wait_until(pending(cluster, 1))
    assert message == (
        "0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) had untolerated taint {spot: reclaimed}. "
        "preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    )
    [pod] = pods_of(cluster)
    assert pod["status"]["phase"] == "Pending" and "podIP" not in pod["status"] and "nodeName" not in pod["spec"]
    assert condition(pod, "Ready") == {}
    deployment_status = (cluster.get("deployments", NS, "web") or {}).get("status") or {}
    assert deployment_status.get("replicas") == 1 and not deployment_status.get("readyReplicas")
    cluster.untaint_node("gpu-spot-b", "spot")
    assert cluster.wait_until(running_on(cluster, 1)) == ["gpu-spot-b"]
    assert [p["metadata"]["name"] for p in pods_of(cluster)] == [pod["metadata"]["name"]]  # the same pod, bound


def test_a_tolerated_taint_does_not_stop_a_pod(cluster: DevCluster) -> None:
    cluster.taint_node("gpu-spot-a", "spot", "true", "NoSchedule")
    cluster.taint_node("gpu-spot-b", "nvidia.com/gpu", "", "NoExecute")
    tolerations = [{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                   {"key": "nvidia.com/gpu", "operator": "Exists"}]
    cluster.create("deployments", deployment(replicas=2, nodeSelector=SPOT_SELECTOR, tolerations=tolerations))
    assert cluster.wait_until(running_on(cluster, 2)) == ["gpu-spot-a", "gpu-spot-b"]


def test_cordoned_nodes_take_no_new_pods_until_uncordoned(cluster: DevCluster) -> None:
    cluster.cordon("gpu-spot-a")
    cluster.cordon("gpu-spot-b")
    cluster.create("deployments", deployment(replicas=1, nodeSelector=SPOT_SELECTOR))
    [message] = cluster.wait_until(pending(cluster, 1))
    assert message.startswith("0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
                              "2 node(s) were unschedulable.")
    cluster.kubectl("uncordon", "gpu-spot-a")
    assert cluster.wait_until(running_on(cluster, 1)) == ["gpu-spot-a"]


def test_without_nodes_pods_wait_for_one_to_be_added() -> None:
    with DevCluster.in_thread(namespaces=[NS], nodes=()) as cluster:
        cluster.create("deployments", deployment(replicas=2))
        assert cluster.wait_until(pending(cluster, 2)) == ["no nodes available to schedule pods"] * 2
        cluster.add_node(NodeSpec("late", capacity_type="spot"))
        assert cluster.wait_until(running_on(cluster, 2)) == ["late", "late"]


def test_scaling_down_deletes_the_pending_pods_first(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=1, nodeSelector=SPOT_SELECTOR))
    cluster.wait_until(running_on(cluster, 1))
    for node in ("gpu-spot-a", "gpu-spot-b"):
        cluster.cordon(node)
    cluster.kubectl("patch", "deployment", "web", "-n", NS, "--type=merge", "-p", '{"spec": {"replicas": 3}}')
    cluster.wait_until(pending(cluster, 2))
    cluster.kubectl("patch", "deployment", "web", "-n", NS, "--type=merge", "-p", '{"spec": {"replicas": 1}}')
    cluster.wait_until(lambda: len(pods_of(cluster)) == 1 and pods_of(cluster)[0]["spec"].get("nodeName"))


def test_removing_a_node_deletes_its_pods_and_they_are_replaced_elsewhere(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2, nodeSelector=SPOT_SELECTOR))
    assert cluster.wait_until(running_on(cluster, 2)) == ["gpu-spot-a", "gpu-spot-b"]
    cluster.remove_node("gpu-spot-a")
    assert cluster.wait_until(running_on(cluster, 2)) == ["gpu-spot-b", "gpu-spot-b"]
    assert cluster.pods(NS, {"app": "web"}) == pods_of(cluster)  # nothing left terminating on the lost node


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        ({"operator": "Exists"}, {"key": "any", "value": "x", "effect": "NoExecute"}, True),  # empty key: all
        ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "x", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "x"}, {"key": "k", "value": "x", "effect": "NoSchedule"}, True),  # Equal default
        ({"key": "k", "value": "y"}, {"key": "k", "value": "x", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
        ({"key": "k", "operator": "Equal"}, {"key": "k", "effect": "NoSchedule"}, True),  # both values empty
    ],
)
def test_tolerations_follow_the_real_rules(toleration: dict[str, str], taint: dict[str, str], expected: bool) -> None:
    assert tolerates(toleration, taint) is expected


def test_prefer_no_schedule_taints_do_not_block() -> None:
    node = {"metadata": {"name": "n", "labels": {}},
            "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}
    assert place({}, [node], {}).node == "n"
