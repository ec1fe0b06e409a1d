"""The operator's own Kubernetes API access, through the official ``kubernetes`` client.

Kopf watches and posts Events with its own client; this one creates and patches
the objects a pool owns and writes the pool's status. The client is synchronous,
so every call runs in a worker thread to keep Kopf's event loop free. Bodies go
and come as plain dicts (``_preload_content=False``): no model round trip that
could drop fields.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from controller.api.spec import API_GROUP, API_VERSION, PLURAL
from controller.telemetry.metrics import record_kube_api_error

__all__ = ["EvictionBlocked", "KubeApi", "NotFound", "NotLeading", "WriteGate", "build_api_client", "user_agent"]

Manifest = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


API_THREADS = 16  # blocking API calls in flight at once (evaluations run 16 at a time by default)
# A lane of its own for the writes that take a doomed replica out of routing: in a reclaim storm they
# must not queue behind the evictions and status writes of the pools released before them.
URGENT_API_THREADS = 8


class NotFound(Exception):
    """The object does not exist."""


class NotLeading(Exception):
    """A write refused before it was sent: this replica does not hold the leader Lease (any more)."""


# Says whether this replica may write now (controller/leader.py's LeaderElector.is_leading).
WriteGate = Callable[[], bool]


def user_agent(identity: str) -> str:
    """``poolpilot/<version> (<identity>)``: every write names the replica that made it."""
    return f"poolpilot/{importlib.metadata.version('poolpilot')} ({identity})"


def build_api_client(kubeconfig: str | None = None, *, agent: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG`` or the given path);
    ``agent``: the User-Agent of its requests (see ``user_agent``)."""
    configuration = kubernetes.client.Configuration()
    # As many connections as calls in flight (KubeApi's threads): a reclaim storm writes for many pools at once.
    configuration.connection_pool_maxsize = API_THREADS + URGENT_API_THREADS
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    client = kubernetes.client.ApiClient(configuration)
    if agent:
        client.user_agent = agent
    return client


@dataclass(frozen=True)
class _KindApi:
    api: Any
    suffix: str  # e.g. "namespaced_deployment" in read_namespaced_deployment


def _verb(method: Callable[..., Any]) -> str:
    """The API verb of a client method, for the error counter: read_namespaced_pod -> get."""
    name = getattr(method, "__name__", "")
    if name.endswith("_eviction"):
        return "evict"
    verb = name.split("_", 1)[0]
    return {"read": "get", "get": "get"}.get(verb, verb or "unknown")


class EvictionBlocked(Exception):
    """429 on an eviction: a PodDisruptionBudget (or the server's rate limit) says not now."""


def _status_message(error: ApiException) -> str:
    """The Status' message, with its causes (a 429's names the budget: "The disruption budget X needs ...")."""
    try:
        status = json.loads(error.body or "{}")
    except ValueError:
        return str(error.reason)
    causes = [str(c.get("message")) for c in (status.get("details") or {}).get("causes") or [] if c.get("message")]
    return "; ".join([str(status.get("message") or error.reason), *causes])


class KubeApi:
    """Create, read and patch the kinds a pool owns, and patch a pool's status.

    ``write_gate``: asked before every write (create, patch, delete, evict, status), once when the call is
    made and again in the worker thread just before the request leaves; when it says no, the write raises
    ``NotLeading`` unsent. A leader whose Lease lapsed thus writes nothing, even from a call queued before.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, *, timeout_seconds: float = 10.0,
                 write_gate: WriteGate | None = None) -> None:
        self._timeout_seconds = timeout_seconds
        self._write_gate = write_gate
        self._kinds = {
            "Deployment": _KindApi(kubernetes.client.AppsV1Api(api_client), "namespaced_deployment"),
            "Service": _KindApi(kubernetes.client.CoreV1Api(api_client), "namespaced_service"),
            "PodDisruptionBudget": _KindApi(kubernetes.client.PolicyV1Api(api_client),
                                            "namespaced_pod_disruption_budget"),
            "Pod": _KindApi(kubernetes.client.CoreV1Api(api_client), "namespaced_pod"),
            # The bundled router's identity and grants (controller/kube/render.py, render_router_objects).
            "ServiceAccount": _KindApi(kubernetes.client.CoreV1Api(api_client), "namespaced_service_account"),
            "Role": _KindApi(kubernetes.client.RbacAuthorizationV1Api(api_client), "namespaced_role"),
            "RoleBinding": _KindApi(kubernetes.client.RbacAuthorizationV1Api(api_client), "namespaced_role_binding"),
        }
        self._core = kubernetes.client.CoreV1Api(api_client)
        # Its own threads for the blocking client: the loop's default pool has cores + 4 (6 on two cores),
        # and a storm of reclaims over a hundred pools queued its releases behind each other there.
        self._threads = concurrent.futures.ThreadPoolExecutor(API_THREADS, thread_name_prefix="kube-api")
        self._urgent_threads = concurrent.futures.ThreadPoolExecutor(URGENT_API_THREADS,
                                                                     thread_name_prefix="kube-api-urgent")
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._api_client = api_client

    def _check_write_gate(self) -> None:
        if self._write_gate is not None and not self._write_gate():
            raise NotLeading("not writing: this replica does not hold the leader Lease")

    async def _call(self, method: Callable[..., Any], *args: Any, urgent: bool = False, write: bool = False,
                    **kwargs: Any) -> Manifest:
        if write:
            self._check_write_gate()

        def blocking() -> Manifest:
            if write:
                self._check_write_gate()  # the call may have waited for a thread: ask again
            try:
                # (connect, read): a stalled server raises instead of blocking this call forever.
                response = method(*args, _preload_content=False,
                                  _request_timeout=(self._timeout_seconds, self._timeout_seconds), **kwargs)
            except ApiException as error:
                if error.status == 404:  # an answer, not an error: the object is not there
                    raise NotFound(str(error.reason)) from error
                record_kube_api_error(_verb(method), error.status)
                raise
            except urllib3.exceptions.TimeoutError:
                record_kube_api_error(_verb(method), "timeout")
                raise
            except urllib3.exceptions.HTTPError:
                record_kube_api_error(_verb(method), "connection")
                raise
            parsed: Manifest = json.loads(response.data)
            return parsed

        threads = self._urgent_threads if urgent else self._threads
        return await asyncio.get_running_loop().run_in_executor(threads, blocking)

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        kind_api = self._kinds[kind]
        method: Callable[..., Any] = getattr(kind_api.api, f"{verb}_{kind_api.suffix}")
        return method

    async def read(self, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return await self._call(self._method("read", kind), name, namespace)
        except NotFound:
            return None

    async def create(self, kind: str, namespace: str, body: Manifest) -> Manifest:
        return await self._call(self._method("create", kind), namespace, body, write=True)

    async def patch(self, kind: str, namespace: str, name: str, patch: Manifest, *, urgent: bool = False) -> Manifest:
        """A merge patch; ``urgent`` takes the lane kept for reclaims (see URGENT_API_THREADS)."""
        return await self._call(self._method("patch", kind), name, namespace, patch, urgent=urgent, write=True,
                                _content_type=MERGE_PATCH)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):  # gone already: what we wanted
            await self._call(self._method("delete", kind), name, namespace, write=True)

    async def evict(self, namespace: str, pod: str, *, grace_seconds: int, uid: str | None = None) -> None:
        """POST pods/{pod}/eviction: the API server checks the pod's PodDisruptionBudgets first.

        Raises ``EvictionBlocked`` on 429 (a budget, or the server's rate limit: retry later),
        ``NotFound`` when the pod is gone, ``ApiException`` otherwise.
        """
        options: Manifest = {"gracePeriodSeconds": grace_seconds}
        if uid:
            options["preconditions"] = {"uid": uid}  # never a newer pod that took the same name
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod, "namespace": namespace}, "deleteOptions": options}
        try:
            await self._call(self._core.create_namespaced_pod_eviction, pod, namespace, body, write=True)
        except ApiException as error:
            if error.status == 429:
                raise EvictionBlocked(_status_message(error)) from error
            raise

    async def read_custom(self, group: str, version: str, plural: str, namespace: str, name: str) -> Manifest | None:
        """A custom resource (an HTTPRoute), or None when it, or its kind, does not exist."""
        try:
            return await self._call(self._custom.get_namespaced_custom_object, group, version, namespace, plural, name)
        except NotFound:
            return None

    async def json_patch_custom(self, group: str, version: str, plural: str, namespace: str, name: str,
                                operations: list[Manifest]) -> Manifest:
        """An RFC 6902 JSON patch: it can address list items, and its ``test`` operations make it conditional."""
        return await self._call(self._custom.patch_namespaced_custom_object, group, version, namespace, plural,
                                name, operations, write=True, _content_type=JSON_PATCH)

    async def patch_pool_status(self, namespace: str, name: str, status: Manifest) -> Manifest:
        return await self._call(
            self._custom.patch_namespaced_custom_object_status,
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status},
            write=True, _content_type=MERGE_PATCH,
        )

    def close(self) -> None:
        self._threads.shutdown(wait=False)
        self._urgent_threads.shutdown(wait=False)
        self._api_client.close()
