"""
``DevCluster``: the emulator served on 127.0.0.1, with a kubeconfig and test helpers.

Async code::

    async with DevCluster(crd_paths=['crds/'], namespaces=['default', 'pools']) as cluster:
        ...  # KUBECONFIG=cluster.kubeconfig_path; cluster.url; cluster.emulator.objects

Sync code (pytest sync tests, subprocesses, the demo) runs the loop in a thread::

    with DevCluster.in_thread(crd_paths=['crds/']) as cluster:
        cluster.kubectl('get', 'pools', '-A')

The helpers (``get``, ``list``, ``put_object``, ``create``, ``delete``, ``writes``, ``mark``,
``set_deployment_ready``, ``apply_crd``, ``pods``, ``set_pod_ready``, ``kill_pod``, ``delete_pod``,
``evict_pod``, ``attach_container``, ``nodes``, ``add_node``, ``remove_node``, ``taint_node``,
``untaint_node``, ``cordon``, ``uncordon``) can be called from any thread: calls from other threads
are marshalled onto the cluster's loop.
``kubectl`` and ``wait_until`` block, so they must not be called on the cluster's own loop
(use ``asyncio.to_thread`` there).

The world has four Nodes by default (``devkube.nodes.default_node_specs``: spot and on-demand in two
zones, labelled for every provider preset); ``nodes=[NodeSpec(...), ...]`` chooses others, ``nodes=()``
none (the Deployments' pods then stay Pending, unless ``pod_node_name`` binds them).

kubectl needs no special flags: use ``cluster.kubectl_env()`` (``KUBECONFIG`` plus a
private ``KUBECACHEDIR``, so that discovery caches of random ports do not pile up in ~/.kube).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import aiohttp.web
import kmock
import yaml

from devkube import crds, eviction
from devkube import nodes as nodes_module
from devkube.disruption import FakeDisruptionController
from devkube.emulator import DevKubeEmulator
from devkube.endpointslices import FakeEndpointSliceController
from devkube.kubelet import Container, FakeKubelet
from devkube.loopthread import in_thread, running_loop
from devkube.nodes import NodeSpec, PodGarbageCollector, default_node_specs
from devkube.resources import Resource, lookup
from devkube.store import now_utc, timestamp
from devkube.workloads import FakeDeploymentController, NodeNameFn, PodAddressFn
from devkube.writelog import WriteRecord

P = ParamSpec("P")
T = TypeVar("T")
ResourceSpec = str | kmock.resource

_MARSHAL_TIMEOUT = 30.0


class KubectlError(RuntimeError):
    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"kubectl {' '.join(result.args[1:])} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
        self.result = result


class DevCluster:
    def __init__(
        self,
        *,
        crd_paths: Iterable[str | os.PathLike[str]] = (),
        crds: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[str] = ("default",),
        fake_workloads: bool = True,
        workload_delay: float = 0.0,
        fake_pods: bool = True,
        pod_ip: PodAddressFn | None = None,
        pod_node_name: NodeNameFn | None = None,
        pod_ready_delay: float = 0.0,
        nodes: Iterable[NodeSpec] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 10_000,
        kubectl_binary: str = "kubectl",
        validate_custom_resources: bool = True,
        fake_endpointslices: bool = True,
    ) -> None:
        self.emulator = DevKubeEmulator(history_size=history_size)
        # False: like a cluster whose CRD predates its rules (no pruning, defaults, schema or CEL).
        self.emulator.store.validate_custom_resources = validate_custom_resources
        with warnings.catch_warnings():
            # kmock 0.8 reads its bundled file with the deprecated importlib.resources.read_binary().
            warnings.simplefilter("ignore", DeprecationWarning)
            self.emulator.resources.load_bundled()
        # The workload options: see :mod:`.workloads` (``pod_ip``/``pod_node_name`` get the
        # namespace, the pod's name and the Deployment's name, and run on the cluster's loop).
        self.workloads = (
            FakeDeploymentController(
                self.emulator.store,
                delay=workload_delay,
                pods=fake_pods,
                pod_ip=pod_ip,
                node_name=pod_node_name,
                ready_delay=pod_ready_delay,
            )
            if fake_workloads
            else None
        )
        # EndpointSlices for every Service with a selector: see :mod:`.endpointslices`.
        self.endpointslices = FakeEndpointSliceController(self.emulator.store) if fake_endpointslices else None
        # The rest of the world: the kubelets end terminating pods, the disruption controller keeps the
        # PDBs' status, the pod GC takes the pods of deleted nodes. ``nodes=()``: a cluster without nodes.
        self.kubelet = FakeKubelet(self.emulator.store)
        self.disruption = FakeDisruptionController(self.emulator.store)
        self.pod_gc = PodGarbageCollector(self.emulator.store)
        self._node_specs = list(default_node_specs() if nodes is None else nodes)
        self._nodes_added = 0
        self._crds = [*load_crds(crd_paths), *crds]
        self._namespaces = list(namespaces)
        self._host, self._port = host, port
        self._kubectl_binary = kubectl_binary
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self._tmpdir: pathlib.Path | None = None
        self.url = ""
        self.kubeconfig_path = pathlib.Path()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        await self.emulator.__aenter__()
        self._tmpdir = pathlib.Path(tempfile.mkdtemp(prefix="devkube-"))
        try:
            await self._start_server()
            self.kubeconfig_path = self._write_kubeconfig(self._tmpdir)
            self._populate()
            for stand_in in self._stand_ins():
                stand_in.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stand_in in self._stand_ins():
            stand_in.stop()
        self.emulator.close_watches()  # open watch streams would delay the server's shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.emulator.__aexit__(exc_type, exc, tb)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._loop = None

    def _stand_ins(self) -> builtins.list[FakeDeploymentController | FakeEndpointSliceController | FakeKubelet
                                          | FakeDisruptionController | PodGarbageCollector]:
        workloads = [] if self.workloads is None else [self.workloads]
        slices = [] if self.endpointslices is None else [self.endpointslices]
        return [*workloads, *slices, self.kubelet, self.disruption, self.pod_gc]

    async def _start_server(self) -> None:
        # Cancel the handlers of clients that went away, or their watch streams would linger.
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=2.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"

    def _write_kubeconfig(self, directory: pathlib.Path) -> pathlib.Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devkube", "cluster": {"server": self.url}}],
            "users": [{"name": "devkube", "user": {}}],
            "contexts": [{"name": "devkube", "context": {"cluster": "devkube", "user": "devkube"}}],
            "current-context": "devkube",
            "preferences": {},
        }
        path = directory / "kubeconfig.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def _populate(self) -> None:
        store = self.emulator.store
        for namespace in self._namespaces:
            store.create(store.resolve("", "v1", "namespaces"), None, {"metadata": {"name": namespace}})
        for crd in self._crds:
            self.apply_crd(crd)
        for spec in self._node_specs:
            self.add_node(spec)

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[DevCluster]:
        """Run the cluster's event loop in a background thread for synchronous code."""
        with in_thread(cls(**kwargs), name="devkube") as cluster:
            yield cluster

    # --- helpers: objects -----------------------------------------------------------------

    def resource(self, spec: ResourceSpec) -> Resource:
        return self._call(lookup, self.emulator.resources, spec)

    def get(self, resource: ResourceSpec, ns: str | None, name: str) -> dict[str, Any] | None:
        """A deep copy of the stored object, or None (``ns=None`` for cluster-scoped kinds)."""
        return self._call(lambda: self.emulator.store.find(self._resolve(resource), ns, name))

    def list(self, resource: ResourceSpec, ns: str | None = None) -> builtins.list[dict[str, Any]]:
        """Deep copies of the objects, in one namespace or in all (``ns=None``), sorted by namespace/name."""
        return self._call(lambda: self.emulator.store.list_objects(self._resolve(resource), ns))

    def put_object(self, resource: ResourceSpec, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object as given, incl. status, bypassing HTTP and API checks."""
        return self._call(lambda: self.emulator.store.put(self._resolve(resource), body))

    def create(self, resource: ResourceSpec, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create as the API would (metadata, checks, events), in-process: not in the write log."""
        namespace = (body.get("metadata") or {}).get("namespace")
        return self._call(lambda: self.emulator.store.create(self._resolve(resource), namespace, body))

    def delete(self, resource: ResourceSpec, ns: str | None, name: str) -> dict[str, Any]:
        """Delete as the API would (finalizers, garbage collection), in-process."""
        return self._call(lambda: self.emulator.store.delete(self._resolve(resource), ns, name))

    def apply_crd(self, crd: Mapping[str, Any]) -> builtins.list[kmock.resource]:
        """Create or replace a CRD object; its resources are declared the same way as via the API."""

        def apply() -> builtins.list[kmock.resource]:
            store = self.emulator.store
            crd_resource = store.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            name = str((crd.get("metadata") or {}).get("name", ""))
            if store.find(crd_resource, None, name) is None:
                store.create(crd_resource, None, crd)
            else:
                store.replace(crd_resource, None, name, crd)
            return [version.resource for version in crds.parse_crd(crd)]

        return self._call(apply)

    def set_deployment_ready(self, ns: str, name: str, ready: int | None) -> None:
        """Cap the Deployment's ready replicas (slow rollouts); ``None`` lifts the cap."""
        if self.workloads is None:
            raise RuntimeError("the fake workload controller is disabled in this cluster")
        workloads = self.workloads
        self._call(lambda: workloads.set_ready(ns, name, ready))

    # --- helpers: pods ----------------------------------------------------------------------

    def pods(
        self, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Deep copies of the Pods in a namespace (all: ``None``) that have these labels, by name."""
        wanted = dict(selector or {}).items()

        def select() -> builtins.list[dict[str, Any]]:
            pods = self.emulator.store.list_objects(self._resolve("v1/pods"), namespace)
            return [pod for pod in pods if wanted <= (pod["metadata"].get("labels") or {}).items()]

        return self._call(select)

    def set_pod_ready(self, namespace: str, pod_name: str, ready: bool | None) -> None:
        """
        Force one Pod of a Deployment Ready or not Ready, whatever ``set_deployment_ready``'s cap
        (no other Pod changes); ``None`` returns it to the automatic rules. The Pod's conditions
        and containerStatuses and the Deployment's status follow after the workload delay, in-process.
        """
        if self.workloads is None:
            raise RuntimeError("the fake workload controller is disabled in this cluster")
        workloads = self.workloads
        self._call(lambda: workloads.set_pod_ready(namespace, pod_name, ready))

    def kill_pod(self, namespace: str, pod_name: str) -> dict[str, Any]:
        """Delete a Pod at once (grace 0: a crash, a lost node), in-process: the fake controller replaces it."""
        return self._call(
            lambda: self.emulator.store.delete(self._resolve("v1/pods"), namespace, pod_name, grace_period_seconds=0)
        )

    def attach_container(self, namespace: str, pod_name: str, container: Container) -> None:
        """
        Bind a container to a pod (e.g. a fake vLLM replica): when the pod is deleted gracefully, the
        kubelet runs its preStop sleep, awaits ``container.on_sigterm`` for the rest of the grace, then
        calls ``container.on_kill`` (see :mod:`.kubelet`). 404 if the pod does not exist.
        """
        self._call(lambda: self.kubelet.attach(namespace, pod_name, container))

    def detach_container(self, namespace: str, pod_name: str) -> Container | None:
        return self._call(lambda: self.kubelet.detach(namespace, pod_name))

    def evict_pod(
        self, namespace: str, pod_name: str, *, grace_period_seconds: int | None = None
    ) -> dict[str, Any]:
        """The Eviction API in-process (not in the write log): the Status, or ``ApiError`` 429/404..."""
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod_name}}
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        return self._call(lambda: eviction.evict(self.emulator.store, namespace, pod_name, body))

    def delete_pod(self, namespace: str, pod_name: str, *, grace_period_seconds: int | None = None) -> dict[str, Any]:
        """Delete a Pod as ``kubectl delete pod`` does: gracefully unless the grace is 0; returns its state."""
        return self._call(
            lambda: self.emulator.store.delete(
                self._resolve("v1/pods"), namespace, pod_name, grace_period_seconds=grace_period_seconds
            )
        )

    # --- helpers: nodes ---------------------------------------------------------------------

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Deep copies of the Nodes, by name."""
        return self.list("v1/nodes")

    def add_node(self, spec: NodeSpec | str) -> dict[str, Any]:
        """Register a node (a name alone: an on-demand node in us-east-1a); pending pods may fit it."""
        node_spec = NodeSpec(spec) if isinstance(spec, str) else spec

        def add() -> dict[str, Any]:
            self._nodes_added += 1
            manifest = nodes_module.node_manifest(node_spec, self._nodes_added)
            store = self.emulator.store
            return store.put(store.resolve("", "v1", "nodes"), manifest)

        return self._call(add)

    def remove_node(self, name: str) -> dict[str, Any]:
        """Delete a Node (a reclaimed spot instance): the pod GC force-deletes the pods bound to it."""
        return self._call(lambda: self.emulator.store.delete(self._resolve("v1/nodes"), None, name))

    def taint_node(self, name: str, key: str, value: str = "", effect: str = "NoSchedule") -> dict[str, Any]:
        """Add (or replace, by key and effect) a taint, as ``kubectl taint nodes NAME key=value:effect``."""

        def taint(node: dict[str, Any]) -> builtins.list[dict[str, Any]]:
            kept = [t for t in node["spec"].get("taints") or [] if (t.get("key"), t.get("effect")) != (key, effect)]
            added: dict[str, Any] = {"key": key, "effect": effect}
            if value:
                added["value"] = value
            if effect == "NoExecute":
                added["timeAdded"] = timestamp(now_utc())
            return [*kept, added]

        return self._patch_node_spec(name, lambda node: {"taints": taint(node)})

    def untaint_node(self, name: str, key: str, effect: str | None = None) -> dict[str, Any]:
        """Remove the taints with this key (and effect, if given), as ``kubectl taint nodes NAME key-``."""

        def untaint(node: dict[str, Any]) -> builtins.list[dict[str, Any]] | None:
            kept = [
                t for t in node["spec"].get("taints") or []
                if t.get("key") != key or (effect is not None and t.get("effect") != effect)
            ]
            return kept or None

        return self._patch_node_spec(name, lambda node: {"taints": untaint(node)})

    def cordon(self, name: str) -> dict[str, Any]:
        """``spec.unschedulable: true``, as ``kubectl cordon``: no new pods; the running ones stay."""
        return self._patch_node_spec(name, lambda node: {"unschedulable": True})

    def uncordon(self, name: str) -> dict[str, Any]:
        return self._patch_node_spec(name, lambda node: {"unschedulable": None})

    def _patch_node_spec(self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        def apply() -> dict[str, Any]:
            store = self.emulator.store
            nodes = store.resolve("", "v1", "nodes")
            patch = {"spec": change(store.get(nodes, None, name))}
            return store.patch(nodes, None, name, "application/merge-patch+json", patch)

        return self._call(apply)

    def _resolve(self, spec: ResourceSpec) -> Resource:
        return lookup(self.emulator.resources, spec)

    # --- helpers: the write log -------------------------------------------------------------

    def mark(self) -> int:
        return self._call(self.emulator.write_log.mark)

    def writes(self, since: int = 0, **filters: Any) -> builtins.list[WriteRecord]:
        """Client writes since a mark; filters as in :meth:`WriteLog.select`."""
        return self._call(lambda: self.emulator.write_log.select(since, **filters))

    # --- helpers: kubectl and waiting -------------------------------------------------------

    def kubectl_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        if self._tmpdir is None:
            raise RuntimeError("the cluster is not running")
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        env["KUBECACHEDIR"] = str(self._tmpdir / "kubectl-cache")
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        self._refuse_on_own_loop("kubectl")
        result = subprocess.run(
            [self._kubectl_binary, *args],
            env=self.kubectl_env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    def wait_until(
        self, predicate: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05
    ) -> T:
        """Poll until the predicate returns a truthy value; return it (TimeoutError if never)."""
        self._refuse_on_own_loop("wait_until")
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the condition was not met in {timeout} seconds")
            time.sleep(interval)
        return result

    # --- thread marshalling ---------------------------------------------------------------

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the cluster is not running")
        if running_loop() is loop:
            return fn(*args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=_MARSHAL_TIMEOUT)

    def _refuse_on_own_loop(self, what: str) -> None:
        if self._loop is not None and running_loop() is self._loop:
            raise RuntimeError(f"{what}() blocks; on the cluster's own loop, use asyncio.to_thread()")




def load_crds(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """CRD documents from YAML files or directories of them (other kinds are skipped)."""
    found: list[dict[str, Any]] = []
    for raw_path in paths:
        path = pathlib.Path(raw_path)
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
                if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                    found.append(document)
    return found
