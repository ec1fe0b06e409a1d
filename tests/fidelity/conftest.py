"""The embedded API server and the real one side by side, one of each per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.api.crd import generate_crd
from devkube.cluster import DevCluster
from tests.fidelity.api import Api
from tests.support.backends import RealCluster
from tests.support.tools import kubectl_binary


@pytest.fixture(scope="session")
def embedded_api() -> Iterator[Api]:
    with DevCluster.in_thread(crds=[generate_crd()], kubectl_binary=kubectl_binary()) as cluster:
        api = Api("embedded", str(cluster.kubeconfig_path))
        yield api
        api.close()


@pytest.fixture(scope="session")
def real_api(real_cluster: RealCluster) -> Iterator[Api]:
    api = Api("real", str(real_cluster.kubeconfig_path))
    yield api
    api.close()
