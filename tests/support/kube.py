"""A small test client over the official ``kubernetes`` client: pools, owned objects, Events, as dicts."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.api.spec import API_GROUP, API_VERSION, KIND, PLURAL

__all__ = ["TestKube", "condition"]

Manifest = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class TestKube:
    """Reads and writes what a cluster admin would, through a kubeconfig."""

    __test__ = False  # not a pytest test class

    def __init__(self, kubeconfig: str) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.api_client = kubernetes.client.ApiClient(configuration)
        # Tests write with their own user agent, so the write log tells them from the operator.
        self.api_client.user_agent = "poolpilot-tests"
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.policy = kubernetes.client.PolicyV1Api(self.api_client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    @staticmethod
    def _json(response: Any) -> Manifest:
        parsed: Manifest = json.loads(response.data)
        return parsed

    def create_pool(self, namespace: str, name: str, spec: Manifest) -> Manifest:
        body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self._json(self.custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, body, _preload_content=False))

    def patch_pool(self, namespace: str, name: str, patch: Manifest) -> Manifest:
        return self._json(self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, patch, _preload_content=False,
            _content_type=MERGE_PATCH))

    def delete_pool(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)

    def get_pool(self, namespace: str, name: str) -> Manifest | None:
        return self._read(lambda: self.custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, _preload_content=False))

    def _read(self, call: Any) -> Manifest | None:
        try:
            return self._json(call())
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> Manifest | None:
        readers = {
            "Deployment": lambda: self.apps.read_namespaced_deployment(name, namespace, _preload_content=False),
            "Service": lambda: self.core.read_namespaced_service(name, namespace, _preload_content=False),
            "PodDisruptionBudget": lambda: self.policy.read_namespaced_pod_disruption_budget(
                name, namespace, _preload_content=False),
            "ServiceAccount": lambda: self.core.read_namespaced_service_account(name, namespace,
                                                                                 _preload_content=False),
            "Role": lambda: self.rbac.read_namespaced_role(name, namespace, _preload_content=False),
            "RoleBinding": lambda: self.rbac.read_namespaced_role_binding(name, namespace, _preload_content=False),
            "Lease": lambda: self.coordination.read_namespaced_lease(name, namespace, _preload_content=False),
        }
        return self._read(readers[kind])

    def patch(self, kind: str, namespace: str, name: str, patch: Manifest) -> Manifest:
        patchers = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
        }
        return self._json(patchers[kind](name, namespace, patch, _preload_content=False, _content_type=MERGE_PATCH))

    def create_service(self, namespace: str, body: Manifest) -> Manifest:
        return self._json(self.core.create_namespaced_service(namespace, body, _preload_content=False))

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def events_for(self, namespace: str, name: str) -> list[Manifest]:
        selector = f"involvedObject.name={name},involvedObject.kind={KIND}"
        listing = self._json(self.core.list_namespaced_event(namespace, field_selector=selector,
                                                             _preload_content=False))
        items: list[Manifest] = listing.get("items", [])
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def resource_version(self, kind: str, namespace: str, name: str) -> str | None:
        obj = self.pool_or(kind, namespace, name)
        return None if obj is None else str(obj["metadata"]["resourceVersion"])

    def pool_or(self, kind: str, namespace: str, name: str) -> Manifest | None:
        return self.get_pool(namespace, name) if kind == KIND else self.get(kind, namespace, name)


def condition(pool: Manifest | None, condition_type: str) -> Manifest | None:
    """The pool's condition of that type, or None."""
    if not pool:
        return None
    found: Manifest | None = next(
        (c for c in pool.get("status", {}).get("conditions", []) if c.get("type") == condition_type), None)
    return found
