"""The real operator process against both API servers: the embedded one and the real control plane.

Every test that uses ``backend`` (or ``env``) runs twice, ``[embedded]`` and ``[real]``, unless it
is marked ``embedded_only`` with the reason (it needs the embedded server's write log or fault
injection; its portable part runs on both through ``tests/support/scenarios.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.api.crd import generate_crd
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import OperatorProcess, free_port
from devkube.wiring import PodReplicas
from tests.support.backends import BACKENDS, Backend, open_backend
from tests.support.scenarios import ScenarioEnv

TEST_USER_AGENT = "poolpilot-tests"



def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only_embedded = metafunc.definition.get_closest_marker("embedded_only") is not None
        metafunc.parametrize("backend", ["embedded"] if only_embedded else list(BACKENDS), indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    real = request.getfixturevalue("real_cluster") if request.param == "real" else None
    # An embedded_only test about specs the CRD's rules refuse runs as on a cluster with an older CRD.
    older_crd = request.node.get_closest_marker("older_crd") is not None
    with open_backend(request.param, real, crds=[generate_crd()],
                      dev_options={"validate_custom_resources": False} if older_crd else None) as opened:
        yield opened


@pytest.fixture
def cluster(backend: Backend) -> DevCluster:
    """The embedded server itself, for tests marked embedded_only."""
    assert backend.dev is not None, "mark the test embedded_only: it needs the embedded server"
    return backend.dev


@pytest.fixture
def env(backend: Backend) -> ScenarioEnv:
    return ScenarioEnv(kube=backend.kube, operator=backend.operator(), namespace=backend.namespace,
                       replicas_become_ready=backend.replicas_become_ready)


# Fake vLLM replicas serving at the pool pods' own IPs (``PodReplicas`` plays the kubelet), and the
# operator: the scaling and fallback suites share them (the spot suite has its own, on nodes).
@pytest.fixture
def fleet() -> Iterator[FakeVLLMFleet]:
    with FakeVLLMFleet.in_thread(0, port=free_port()) as running:
        running.set_all(waiting=0, running=2, kv=0.5)
        yield running


@pytest.fixture
def replicas(backend: Backend, fleet: FakeVLLMFleet) -> Iterator[PodReplicas]:
    if not backend.pods_serve_on_loopback:
        pytest.skip("needs pods with loopback IPs (the embedded server, or KWOK's nodes of `make cluster`)")
    with PodReplicas(fleet, backend.pods) as wiring:
        yield wiring


@pytest.fixture
def operator(backend: Backend, replicas: PodReplicas) -> OperatorProcess:
    return backend.operator()
