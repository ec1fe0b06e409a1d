"""The real operator process against the embedded API server, one fresh server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.api.crd import generate_crd
from controller.devkube.cluster import DevCluster
from controller.localrun import OperatorProcess
from tests.support.kube import TestKube
from tests.support.scenarios import ScenarioEnv
from tests.support.tools import kubectl_binary

NAMESPACE = "llm"
TEST_USER_AGENT = "poolpilot-tests"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                              kubectl_binary=kubectl_binary()) as running:
        yield running


@pytest.fixture
def env(cluster: DevCluster) -> Iterator[ScenarioEnv]:
    kube = TestKube(str(cluster.kubeconfig_path))
    operator = OperatorProcess(cluster.kubeconfig_path)
    operator.start()
    try:
        yield ScenarioEnv(kube=kube, operator=operator, namespace=NAMESPACE, replicas_become_ready=True)
    finally:
        operator.stop()
        kube.close()
        # Shown by pytest only when the test failed.
        print(f"--- operator log ---\n{operator.log()[-20000:]}")
