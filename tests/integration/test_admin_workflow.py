"""A cluster admin's own workflow with the real kubectl: install the CRD, apply pools, read them."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
import yaml

from tests.support.backends import Backend, RealCluster, open_backend
from tests.support.waiting import eventually

EXAMPLES = sorted(pathlib.Path("manifests/examples").glob("*.yaml"))


@pytest.fixture
def bare(backend_name: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """On the embedded server no CRD yet: the admin installs it. A real cluster has it from the session."""
    real: RealCluster | None = request.getfixturevalue("real_cluster") if backend_name == "real" else None
    with open_backend(backend_name, real) as opened:
        yield opened


@pytest.fixture(params=["embedded", "real"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def examples_in(namespace: str) -> str:
    """The shipped examples as the admin applies them, moved into the test's namespace."""
    documents = []
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            document["metadata"]["namespace"] = namespace
            documents.append(document)
    return yaml.safe_dump_all(documents)


def test_install_apply_and_read_pools_with_kubectl(bare: Backend) -> None:
    kubectl, ns = bare.kubectl, bare.namespace
    installed = kubectl("apply", "-f", "crds/inferencepool.yaml").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/inferencepools.poolpilot.io" in installed
    # The session installed it on a real cluster already (without kubectl's last-applied annotation).
    assert any(word in installed for word in (("created",) if bare.dev else ("configured", "unchanged")))
    operator = bare.operator()
    applied = kubectl("apply", "-f", "-", input=examples_in(ns)).stdout
    assert "inferencepool.poolpilot.io/llama-8b created" in applied
    assert "inferencepool.poolpilot.io/qwen-small created" in applied

    def table() -> str:
        return kubectl("get", "ipool", "-n", ns).stdout

    def both_ready(output: str) -> bool:
        rows = [line.split() for line in output.splitlines()[1:]]
        return len(rows) == 2 and all("ReplicasReady" in row for row in rows)

    # On the real control plane the Deployment and ReplicaSet controllers, the scheduler and KWOK
    # take the pods to Ready; that takes longer than the embedded stand-in.
    output = eventually(table, both_ready, timeout=60, interval=0.5, what="both pools ReplicasReady")
    header, *rows = output.splitlines()
    assert header.split() == ["NAME", "DESIRED", "READY", "SPOT", "ON-DEMAND", "QUEUE", "KV%", "FALLBACK", "$/H",
                              "STATUS", "AGE"]
    llama = next(row.split() for row in rows if row.startswith("llama-8b"))
    assert llama[1:5] == ["2", "2", "1", "1"]  # desired, ready, spot, on-demand
    assert "1.66" in llama  # $/H: the example's prices: one spot replica at 0.45, one on-demand at 1.21

    described = kubectl("describe", "ipool", "llama-8b", "-n", ns).stdout
    assert "ReplicasReady" in described
    assert "Created Deployment llama-8b-spot (1 replica)" in described

    deployments = kubectl("get", "deployments", "-n", ns, "-l", "poolpilot.io/pool=llama-8b",
                          "-o", "name").stdout.split()
    # The example spills to a hosted API through the bundled router (fallback.route defaults to router).
    assert sorted(deployments) == ["deployment.apps/llama-8b-on-demand", "deployment.apps/llama-8b-router",
                                   "deployment.apps/llama-8b-spot"]
    assert kubectl("get", "poolpilot", "-n", ns, "-o", "name").stdout.split() == [
        "inferencepool.poolpilot.io/llama-8b", "inferencepool.poolpilot.io/qwen-small"]
    # The replicas run where the capacity type says: the spot one on a spot node.
    spot_pods = [p for p in bare.pods() if p["metadata"]["labels"].get("poolpilot.io/capacity-type") == "spot"
                 and p["metadata"]["labels"].get("poolpilot.io/pool") == "llama-8b"]
    assert len(spot_pods) == 1
    if bare.real is not None:
        node = bare.kube.core.read_node(spot_pods[0]["spec"]["nodeName"])
        assert node.metadata.labels["karpenter.sh/capacity-type"] == "spot"
    assert operator.log()  # the process ran and logged
