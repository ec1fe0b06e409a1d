"""The two API servers the suites run on, behind one test-facing shape.

- ``embedded``: the emulator under ``devkube``, a fresh server per test, with
  its write log and fault injection (``backend.dev``).
- ``real``: the cluster named by ``KUBECONFIG``; under ``make test`` the real control plane
  of ``cluster/`` (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, KWOK). Each
  test gets a namespace of its own, and the operator runs scoped to it.

Without ``KUBECONFIG`` the ``real`` variants are skipped with a reason; ``make test`` sets
``POOLPILOT_REQUIRE_CLUSTER=1``, which turns that skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest
import yaml

from devkube.cluster import DevCluster
from devkube.localrun import OperatorProcess
from tests.support.kube import TestKube
from tests.support.tools import kubectl_binary
from tests.support.waiting import eventually

__all__ = ["BACKENDS", "Backend", "RealCluster", "real_cluster_or_skip"]

Manifest = dict[str, Any]
BACKENDS = ("embedded", "real")
KUBECONFIG = os.environ.get("KUBECONFIG", "")
REQUIRE_REAL = os.environ.get("POOLPILOT_REQUIRE_CLUSTER") == "1"
CRD_PATH = pathlib.Path("crds/inferencepool.yaml")


class RealCluster:
    """The cluster named by KUBECONFIG, with the CRD installed once per session."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig_path = pathlib.Path(kubeconfig)
        self.kube = TestKube(kubeconfig)
        self._cache_dir = pathlib.Path(tempfile.mkdtemp(prefix="poolpilot-kubectl-"))
        self.install_crd(yaml.safe_load(CRD_PATH.read_text()))
        nodes = self.kube.core.list_node().items
        # KWOK's nodes run pods for real (scheduled, Running, Ready, graceful deletion), on loopback IPs.
        self.simulated_nodes = bool(nodes) and all(
            (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake" for n in nodes)

    def install_crd(self, crd: Manifest) -> None:
        extensions = kubernetes.client.ApiextensionsV1Api(self.kube.api_client)
        name = crd["metadata"]["name"]
        try:
            current = extensions.read_custom_resource_definition(name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition(crd)
        else:
            crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": current.metadata.resource_version}}
            extensions.replace_custom_resource_definition(name, crd)
        eventually(lambda: extensions.read_custom_resource_definition(name).status.conditions or [],
                   lambda conditions: any(c.type == "Established" and c.status == "True" for c in conditions),
                   what=f"CRD {name} established")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig_path), "KUBECACHEDIR": str(self._cache_dir)}
        result = subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, text=True, env=env,
                                timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited with {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def close(self) -> None:
        self.kube.close()
        shutil.rmtree(self._cache_dir, ignore_errors=True)


def real_cluster_or_skip() -> None:
    if KUBECONFIG:
        return
    if REQUIRE_REAL:
        pytest.fail("POOLPILOT_REQUIRE_CLUSTER=1 but KUBECONFIG is not set: `make test` starts the control plane")
    pytest.skip("runs against a real cluster: set KUBECONFIG (make test starts the real control plane)")


@dataclass
class Backend:
    """One test's view of an API server: a kubeconfig, a namespace of its own, clients, kubectl."""

    name: str
    kubeconfig_path: pathlib.Path
    namespace: str
    kube: TestKube
    dev: DevCluster | None = None  # the embedded server: write log, fault injection
    real: RealCluster | None = None
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def replicas_become_ready(self) -> bool:
        """The embedded server's stand-in controllers and KWOK's nodes make pods Ready; a GPU-less cluster not."""
        return self.dev is not None or (self.real is not None and self.real.simulated_nodes)

    @property
    def pods_serve_on_loopback(self) -> bool:
        """Whether a fake vLLM replica can serve at a pod's IP (embedded and KWOK pods have loopback IPs)."""
        return self.replicas_become_ready

    def operator(self, *, start: bool = True, env: dict[str, str] | None = None) -> OperatorProcess:
        """The real operator process; on a shared cluster it watches this test's namespace only."""
        # The leader election's Lease in the test's namespace: operators of other tests never meet it.
        process = OperatorProcess(self.kubeconfig_path, namespaces=None if self.dev else [self.namespace],
                                  env={"POOLPILOT_LEASE_NAMESPACE": self.namespace, **(env or {})})
        self.operators.append(process)
        if start:
            process.start()
        return process

    def pods(self) -> list[Manifest]:
        listing = json.loads(self.kube.core.list_namespaced_pod(self.namespace, _preload_content=False).data)
        items: list[Manifest] = listing.get("items", [])
        return items

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.dev is not None:
            return self.dev.kubectl(*args, input=input, check=check)
        assert self.real is not None
        return self.real.kubectl(*args, input=input, check=check)


@contextlib.contextmanager
def open_backend(name: str, real: RealCluster | None, *, namespace: str = "llm",
                 dev_options: Manifest | None = None, crds: Sequence[Manifest] = ()) -> Iterator[Backend]:
    """A fresh embedded server, or a fresh namespace on the real cluster; operators stopped on exit."""
    if name == "embedded":
        with DevCluster.in_thread(crds=list(crds), namespaces=["default", namespace],
                                  kubectl_binary=kubectl_binary(), **(dev_options or {})) as dev:
            kube = TestKube(str(dev.kubeconfig_path))
            backend = Backend(name, dev.kubeconfig_path, namespace, kube, dev=dev)
            try:
                yield backend
            finally:
                _stop_operators(backend)
                kube.close()
        return
    assert real is not None
    namespace = f"{namespace}-{uuid.uuid4().hex[:6]}"
    real.kube.create_namespace(namespace)
    backend = Backend(name, real.kubeconfig_path, namespace, real.kube, real=real)
    try:
        yield backend
    finally:
        try:
            _delete_pools(backend)
        finally:
            _stop_operators(backend)
            with contextlib.suppress(kubernetes.client.ApiException):
                real.kube.core.delete_namespace(namespace)


def _delete_pools(backend: Backend) -> None:
    """Pools carry the operator's finalizer: delete them while an operator still runs."""
    if not any(op.running for op in backend.operators):
        return
    custom = backend.kube.custom
    listing = custom.list_namespaced_custom_object("poolpilot.io", "v1alpha1", backend.namespace, "inferencepools")
    for pool in listing.get("items", []):
        with contextlib.suppress(kubernetes.client.ApiException):
            backend.kube.delete_pool(backend.namespace, pool["metadata"]["name"])
    eventually(lambda: custom.list_namespaced_custom_object(
        "poolpilot.io", "v1alpha1", backend.namespace, "inferencepools").get("items"), lambda items: not items,
        timeout=60, what="pools deleted")


def _stop_operators(backend: Backend) -> None:
    for process in backend.operators:
        process.stop()
        # Shown by pytest only when the test failed.
        print(f"--- operator log ({backend.name}) ---\n{process.log()[-20000:]}")
