"""
devkube: a local Kubernetes API server for tests and the demo, built on KMock.

``DevCluster`` serves :class:`DevKubeEmulator` (a subclass of ``kmock.KubernetesEmulator``)
on 127.0.0.1 with a kubeconfig, so that Kopf, the ``kubernetes`` client and the real
``kubectl`` work against it::

    with DevCluster.in_thread(crd_paths=["crds/"], namespaces=["default", "llm"]) as cluster:
        cluster.kubectl("apply", "-f", "manifests/examples/")   # KUBECONFIG is set for you
        subprocess.run(["kopf", "run", ...], env=cluster.kubectl_env())

kubectl needs no extra flags (not even ``--validate=false``): only ``KUBECONFIG`` pointing
to ``cluster.kubeconfig_path``; ``cluster.kubectl_env()`` also sets a private ``KUBECACHEDIR``.

What differs from a real API server is listed in the docstrings of :mod:`.store` (object
semantics), :mod:`.emulator` (HTTP), :mod:`.patching`, :mod:`.selectors`, :mod:`.tables`,
:mod:`.crds`, :mod:`.defaults`, :mod:`.openapi`, :mod:`.workloads` and :mod:`.endpointslices`
(and what the fake vLLM replicas do not do in :mod:`.fakevllm`); the e2e tests on a real cluster
must cover those.
"""

from devkube.cluster import DevCluster, KubectlError, load_crds
from devkube.emulator import DevKubeEmulator
from devkube.errors import ApiError
from devkube.resources import Resource
from devkube.store import ObjectStore, WatchEvent
from devkube.workloads import FakeDeploymentController
from devkube.writelog import WriteLog, WriteRecord

__all__ = [
    "ApiError",
    "DevCluster",
    "DevKubeEmulator",
    "FakeDeploymentController",
    "KubectlError",
    "ObjectStore",
    "Resource",
    "WatchEvent",
    "WriteLog",
    "WriteRecord",
    "load_crds",
]
