"""A cluster admin's own workflow with the real kubectl: install the CRD, apply pools, read them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.devkube.cluster import DevCluster
from controller.localrun import running_operator
from tests.support.tools import kubectl_binary

NAMESPACE = "llm"


@pytest.fixture
def bare_cluster() -> Iterator[DevCluster]:
    """No CRD yet: the admin installs it."""
    with DevCluster.in_thread(namespaces=["default", NAMESPACE], kubectl_binary=kubectl_binary()) as running:
        yield running


def test_install_apply_and_read_pools_with_kubectl(bare_cluster: DevCluster) -> None:
    kubectl = bare_cluster.kubectl
    assert "created" in kubectl("apply", "-f", "crds/inferencepool.yaml").stdout
    with running_operator(bare_cluster.kubeconfig_path) as operator:
        applied = kubectl("apply", "-f", "manifests/examples/").stdout
        assert "inferencepool.poolpilot.io/llama-8b created" in applied
        assert "inferencepool.poolpilot.io/qwen-small created" in applied

        def table() -> str | None:
            output = kubectl("get", "ipool", "-n", NAMESPACE).stdout
            rows = [line.split() for line in output.splitlines()[1:]]
            return output if len(rows) == 2 and all("ReplicasReady" in row for row in rows) else None

        output = bare_cluster.wait_until(table, timeout=20)
        header, *rows = output.splitlines()
        assert header.split() == ["NAME", "DESIRED", "READY", "SPOT", "ON-DEMAND", "QUEUE", "KV%", "FALLBACK",
                                  "STATUS", "AGE"]
        llama = next(row.split() for row in rows if row.startswith("llama-8b"))
        assert llama[1:5] == ["2", "2", "1", "1"]  # desired, ready, spot, on-demand

        described = kubectl("describe", "ipool", "llama-8b", "-n", NAMESPACE).stdout
        assert "ReplicasReady" in described
        assert "Created Deployment llama-8b-spot (1 replica)" in described

        deployments = kubectl("get", "deployments", "-n", NAMESPACE, "-l", "poolpilot.io/pool=llama-8b",
                              "-o", "name").stdout.split()
        assert sorted(deployments) == ["deployment.apps/llama-8b-on-demand", "deployment.apps/llama-8b-spot"]
        assert kubectl("get", "poolpilot", "-n", NAMESPACE, "-o", "name").stdout.split() == [
            "inferencepool.poolpilot.io/llama-8b", "inferencepool.poolpilot.io/qwen-small"]
        assert operator.log()  # the process ran and logged
