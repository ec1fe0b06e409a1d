"""What only a real control plane shows: the operator under its own RBAC, real ReplicaSets and pods on
nodes chosen by the real scheduler, the disruption controller's view of the PDB, and the garbage
collector cascading through ReplicaSets to pods."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cluster.nodes import node_manifest
from devkube.localrun import OperatorProcess
from tests.support.backends import Backend
from tests.support.kube import condition
from tests.support.scenarios import POOL_SPEC, ScenarioEnv, create_and_settle
from tests.support.tools import kubectl_binary
from tests.support.waiting import eventually

Manifest = dict[str, Any]
OPERATOR_MANIFESTS = ["manifests/00-namespace.yaml", "manifests/serviceaccount.yaml",
                      "manifests/clusterrole.yaml", "manifests/clusterrolebinding.yaml",
                      "manifests/role-leader-election.yaml", "manifests/rolebinding-leader-election.yaml"]


def requires_simulated_nodes(backend: Backend) -> None:
    if not backend.replicas_become_ready:
        pytest.skip("needs nodes that run pods: the KWOK nodes of `make cluster`")


@pytest.fixture
def service_account_kubeconfig(backend: Backend, tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A kubeconfig holding a token of the operator's ServiceAccount, bound to the shipped ClusterRole."""
    for manifest in OPERATOR_MANIFESTS:
        backend.kubectl("apply", "-f", manifest)
    token = backend.kubectl("create", "token", "poolpilot", "-n", "poolpilot-system", "--duration=1h").stdout.strip()
    admin = yaml.safe_load(backend.kubeconfig_path.read_text())
    (cluster,) = admin["clusters"]
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [cluster],
        "users": [{"name": "poolpilot", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "poolpilot"}}],
    }
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path


def test_the_operator_works_under_its_own_least_privilege_rbac(
        backend: Backend, service_account_kubeconfig: pathlib.Path) -> None:
    # Cluster-wide, as the shipped Deployment runs it: namespaces and CRDs are listed with the same token,
    # and the leader election's Lease is in poolpilot-system, where its Role grants it.
    operator = OperatorProcess(service_account_kubeconfig, env={"POOLPILOT_POD_NAMESPACE": "poolpilot-system",
                                                               "POOLPILOT_LEASE_NAMESPACE": ""})
    backend.operators.append(operator)
    operator.start()
    env = ScenarioEnv(kube=backend.kube, operator=operator, namespace=backend.namespace,
                      replicas_become_ready=backend.replicas_become_ready)
    pool = create_and_settle(env, "qwen")
    assert (condition(pool, "SpecValid") or {}).get("status") == "True"
    eventually(lambda: [e["reason"] for e in backend.kube.events_for(backend.namespace, "qwen")],
               lambda reasons: reasons.count("Created") == 6, what="six Created events posted under its RBAC")
    # The bundled router's Role: the API server lets the operator grant only what it holds itself.
    create_and_settle(env, "routed", {"model": {"name": "m"}, "fallback": {
        "enabled": True, "provider": {"baseURL": "http://api.invalid/v1", "model": "m"}}})
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Deployment"):
        eventually(lambda kind=kind: backend.kube.get(kind, backend.namespace, "routed-router"),  # type: ignore[misc]
                   lambda found: found is not None, what=f"the router's {kind} created under the operator's RBAC")
    backend.kube.patch_pool(backend.namespace, "qwen", {"spec": {"replicas": {"min": 4}}})
    eventually(lambda: backend.kube.get("Deployment", backend.namespace, "qwen-spot"),
               lambda d: d is not None and d["spec"]["replicas"] == 3, what="a patch under its RBAC")
    log = operator.log()
    assert "forbidden" not in log.lower(), log[-5000:]
    lease = backend.kube.coordination.read_namespaced_lease("poolpilot", "poolpilot-system")
    assert lease.spec.holder_identity == operator.identity

    def can_i(*args: str) -> str:
        return subprocess.run([kubectl_binary(), "auth", "can-i", *args, f"--kubeconfig={service_account_kubeconfig}"],
                              capture_output=True, text=True, check=False).stdout.strip()

    # ... and nothing more than it needs: it cannot read Secrets, say, nor touch Leases but its own namespace's.
    assert can_i("get", "secrets", "-n", backend.namespace) == "no"
    assert can_i("update", "leases", "-n", "poolpilot-system") == "yes"
    assert can_i("update", "leases", "-n", backend.namespace) == "no"


def pool_pods(backend: Backend, pool: str) -> list[Manifest]:
    return [p for p in backend.pods() if p["metadata"]["labels"].get("poolpilot.io/pool") == pool]


def test_real_controllers_run_the_pools_replicas_on_matching_nodes(env: ScenarioEnv, backend: Backend) -> None:
    requires_simulated_nodes(backend)
    create_and_settle(env, "qwen")  # min 3: 1 on-demand, 2 spot, provider eks
    apps = backend.kube.apps
    replica_sets = apps.list_namespaced_replica_set(backend.namespace, label_selector="poolpilot.io/pool=qwen").items
    assert sorted(rs.metadata.owner_references[0].name for rs in replica_sets) == ["qwen-on-demand", "qwen-spot"]
    pods = eventually(lambda: pool_pods(backend, "qwen"), lambda found: len(found) == 3 and all(
        p["status"].get("phase") == "Running" for p in found), what="three Running pods")
    for pod in pods:
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "ReplicaSet"
        node = backend.kube.core.read_node(pod["spec"]["nodeName"])
        wanted = "SPOT" if pod["metadata"]["labels"]["poolpilot.io/capacity-type"] == "spot" else "ON_DEMAND"
        assert node.metadata.labels["eks.amazonaws.com/capacityType"] == wanted
        assert pod["status"]["podIP"].startswith("127.")
    # The disruption controller counts the spot Deployment's pods against its PDB (maxUnavailable 1).
    pdb = eventually(lambda: backend.kube.get("PodDisruptionBudget", backend.namespace, "qwen-spot"),
                     lambda p: p is not None and p.get("status", {}).get("expectedPods") == 2,
                     what="the PDB's status from the disruption controller")
    assert pdb is not None and pdb["status"]["disruptionsAllowed"] == 1


def test_deleting_the_pool_cascades_through_replicasets_to_pods(env: ScenarioEnv, backend: Backend) -> None:
    requires_simulated_nodes(backend)
    create_and_settle(env, "qwen", {**POOL_SPEC, "replicas": {"min": 2, "max": 3}})
    eventually(lambda: pool_pods(backend, "qwen"), lambda found: len(found) == 2, what="two pods")
    backend.kube.delete_pool(backend.namespace, "qwen")
    eventually(lambda: backend.kube.apps.list_namespaced_replica_set(
        backend.namespace, label_selector="poolpilot.io/pool=qwen").items, lambda found: not found, timeout=60,
        what="the garbage collector removed the ReplicaSets")
    eventually(lambda: pool_pods(backend, "qwen"), lambda found: not found, timeout=60,
               what="... and their pods, after graceful termination")


def test_events_are_real_core_v1_events(env: ScenarioEnv, backend: Backend) -> None:
    create_and_settle(env, "qwen")
    raw = backend.kube.core.list_namespaced_event(backend.namespace, _preload_content=False)
    events = json.loads(raw.data)["items"]
    created = [e for e in events if e["reason"] == "Created" and e["involvedObject"]["kind"] == "InferencePool"]
    assert created and all(e["source"].get("component") or e.get("reportingComponent") for e in created)


def test_a_test_gets_the_nodes_it_asks_for(backend: Backend) -> None:
    """Labels, taints and a providerID as a cloud's node pool sets them; KWOK keeps the node Ready."""
    requires_simulated_nodes(backend)
    name = f"tainted-{backend.namespace}"
    taint = {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}
    backend.kube.core.create_node(node_manifest(
        name, capacity_type="spot", zone="us-east-1c", taints=[taint], provider_id="aws:///us-east-1c/i-0abc",
        labels={"karpenter.sh/nodepool": "gpu"}))
    try:
        # The node lifecycle controller lifts its own node.kubernetes.io/not-ready taint a moment after
        # the node turns Ready: wait for that too.
        node = eventually(lambda: backend.kube.core.read_node(name), lambda n: any(
            c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            and [t.key for t in n.spec.taints or []] == ["karpenter.sh/disrupted"],
            what="the node Ready with only its own taint")
        assert node.spec.provider_id == "aws:///us-east-1c/i-0abc"
        assert [(t.key, t.effect) for t in node.spec.taints] == [("karpenter.sh/disrupted", "NoSchedule")]
        assert node.metadata.labels["karpenter.sh/capacity-type"] == "spot"
        assert node.metadata.labels["topology.kubernetes.io/zone"] == "us-east-1c"
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
    finally:
        backend.kube.core.delete_node(name)


def test_one_refused_deployment_does_not_freeze_the_other(env: ScenarioEnv, backend: Backend) -> None:
    """A node selector the real API server refuses (a label value with a blank) on spot replicas only:
    the on-demand Deployment still gets its new replica count, and the pool says what was refused."""
    create_and_settle(env, "qwen")  # 1 on-demand, 2 spot
    backend.kube.patch_pool(backend.namespace, "qwen", {"spec": {"capacity": {
        "onDemandBase": 2, "spot": {"nodeSelector": {"node-pool": "gpu spot"}}}}})
    on_demand = eventually(lambda: backend.kube.get("Deployment", backend.namespace, "qwen-on-demand"),
                           lambda d: d is not None and d["spec"]["replicas"] == 2, what="on-demand at 2")
    assert on_demand is not None
    pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                      lambda p: (condition(p, "Ready") or {}).get("reason") == "ApplyFailed", what="ApplyFailed")
    message = (condition(pool, "Ready") or {})["message"]
    assert "Deployment qwen-spot" in message and "qwen-on-demand" not in message.split(";")[0], message
    assert "nodeSelector" in message, message
    spot = backend.kube.get("Deployment", backend.namespace, "qwen-spot")
    assert spot is not None and spot["spec"]["replicas"] == 2  # left as it was
