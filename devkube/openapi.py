"""
A minimal OpenAPI v3 document, just enough for ``kubectl apply``/``create`` without flags.

kubectl validates manifests by default. It first asks the OpenAPI v3 document whether the
server supports the ``fieldValidation`` query parameter for the kind's PATCH endpoint;
if so, it leaves validation to the server and sends ``fieldValidation=Strict``. This
document declares exactly that — the endpoints, their group-version-kind and the parameter —
with no schemas and no request bodies, so kubectl neither validates on the client side nor
uses the document for strategic merge patches (it falls back to its compiled-in types for
built-in kinds and to merge patches for custom resources, as with any CRD without schema).
The emulator does no validation at all: unknown fields are stored as sent.
"""

from __future__ import annotations

import hashlib
from typing import Any

import kmock

from devkube import discovery

GROUP_VERSION_PATH_RE = r"/openapi/v3/(api/v1|apis/[^/]+/[^/]+)"

_OPERATIONS = {"get": "read", "put": "replace", "patch": "patch", "delete": "delete"}


def root_document(resources: kmock.ResourcesArray) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in discovery.group_versions(resources).items():
        for version in versions:
            prefix = f"apis/{group}/{version}" if group else f"api/{version}"
            digest = _digest(resources, group, version)
            paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest}"}
    return {"paths": paths}


def group_version_document(resources: kmock.ResourcesArray, url_path: str) -> dict[str, Any] | None:
    prefix = url_path.removeprefix("/openapi/v3/")
    parts = prefix.split("/")
    group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
    selected = [res for res in resources if res.group == group and res.version == version]
    if not selected:
        return None
    paths: dict[str, Any] = {}
    for resource in selected:
        paths.update(_resource_paths(resource, resources[resource]))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (devkube)", "version": discovery.SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _resource_paths(resource: kmock.resource, info: kmock.ResourceInfo) -> dict[str, Any]:
    group, version, plural = str(resource.group), str(resource.version), str(resource.plural)
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    scope = "/namespaces/{namespace}" if info.namespaced else ""
    gvk = {"group": group, "version": version, "kind": info.kind or plural.capitalize()}
    item_path = {
        method: {
            "operationId": f"{action}{gvk['kind']}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}},
        }
        for method, action in _OPERATIONS.items()
    }
    return {f"{base}{scope}/{plural}/{{name}}": item_path}


def _digest(resources: kmock.ResourcesArray, group: str, version: str) -> str:
    # Changes when a CRD changes the group-version, so that kubectl's cache is refreshed.
    parts = sorted(
        f"{res.plural}:{resources[res].kind}:{resources[res].namespaced}"
        for res in resources
        if res.group == group and res.version == version
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16].upper()
