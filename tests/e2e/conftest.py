"""The operator against a real cluster: the one KUBECONFIG names; under `make test`, the real control plane.

The session installs (or updates) the CRD from crds/ (``tests/conftest.py``); each test gets a
throw-away namespace and an operator process scoped to it, removed afterwards. Without
KUBECONFIG every test here is skipped, and the skip reason says so (``make test`` makes that
a failure instead).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backends import Backend, RealCluster, open_backend
from tests.support.scenarios import ScenarioEnv


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def backend(real_cluster: RealCluster) -> Iterator[Backend]:
    with open_backend("real", real_cluster, namespace="e2e") as opened:
        yield opened


@pytest.fixture
def env(backend: Backend) -> ScenarioEnv:
    return ScenarioEnv(kube=backend.kube, operator=backend.operator(), namespace=backend.namespace,
                       replicas_become_ready=backend.replicas_become_ready)
