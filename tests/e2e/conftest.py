"""The operator against the real cluster named by KUBECONFIG.

Installs (or updates) the CRD from crds/, creates a throw-away namespace, runs
`poolpilot run` locally, scoped to that namespace, and removes it all afterwards.
Without KUBECONFIG every test here is skipped, and the skip reason says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from controller.localrun import OperatorProcess
from tests.support.kube import TestKube
from tests.support.scenarios import ScenarioEnv
from tests.support.waiting import eventually

KUBECONFIG = os.environ.get("KUBECONFIG", "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="tests/e2e runs against a real cluster: set KUBECONFIG to run it")
    for item in items:
        if "tests/e2e/" in item.nodeid or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.e2e)
            if not KUBECONFIG:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_kube() -> Iterator[TestKube]:
    kube = TestKube(KUBECONFIG)
    with open("crds/inferencepool.yaml") as crd_file:
        crd = yaml.safe_load(crd_file)
    extensions = kubernetes.client.ApiextensionsV1Api(kube.api_client)
    existing = [c.metadata.name for c in extensions.list_custom_resource_definition().items]
    if crd["metadata"]["name"] in existing:
        current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    else:
        extensions.create_custom_resource_definition(crd)
    try:
        yield kube
    finally:
        kube.close()


@pytest.fixture
def env(real_kube: TestKube) -> Iterator[ScenarioEnv]:
    namespace = f"poolpilot-e2e-{uuid.uuid4().hex[:8]}"
    real_kube.create_namespace(namespace)
    operator = OperatorProcess(KUBECONFIG, namespaces=[namespace])
    operator.start()
    try:
        yield ScenarioEnv(kube=real_kube, operator=operator, namespace=namespace, replicas_become_ready=False)
    finally:
        # Pools carry the operator's finalizer: delete them while it still runs.
        pools = real_kube.custom.list_namespaced_custom_object("poolpilot.io", "v1alpha1", namespace,
                                                               "inferencepools")
        for pool in pools.get("items", []):
            real_kube.delete_pool(namespace, pool["metadata"]["name"])
        eventually(lambda: real_kube.custom.list_namespaced_custom_object(
            "poolpilot.io", "v1alpha1", namespace, "inferencepools").get("items"), lambda items: not items,
            timeout=60, what="pools deleted")
        operator.stop()
        real_kube.core.delete_namespace(namespace)
        print(f"--- operator log ---\n{operator.log()[-20000:]}")
