"""
API discovery documents (the legacy, non-aggregated format) that kubectl accepts.

Unlike kmock's scaffold, short names and categories appear only on the main resources
(not on ``x/status``, which makes kubectl warn about ambiguous short names), each entry
has proper verbs, and the preferred version of a group is the most stable one.
"""

from __future__ import annotations

from typing import Any

import kmock

from devkube.resources import MAIN_VERBS, STATUS_VERBS, version_priority

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+devkube",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def group_versions(resources: kmock.ResourcesArray) -> dict[str, list[str]]:
    """Group → its versions, the preferred one first (``''`` is the core group)."""
    found: dict[str, set[str]] = {}
    for resource in resources:
        found.setdefault(str(resource.group), set()).add(str(resource.version))
    return {group: sorted(versions, key=version_priority) for group, versions in sorted(found.items())}


def api_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}


def api_group_list(resources: kmock.ResourcesArray) -> dict[str, Any]:
    groups = [
        api_group(group, versions)
        for group, versions in group_versions(resources).items()
        if group  # the core group is served under /api, not /apis
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_resource_list(resources: kmock.ResourcesArray, group: str, version: str) -> dict[str, Any] | None:
    selected = [res for res in resources if res.group == group and res.version == version]
    if not selected:
        return None
    entries: list[dict[str, Any]] = []
    for resource in sorted(selected, key=lambda res: str(res.plural)):
        entries.extend(_resource_entries(resource, resources[resource]))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def _resource_entries(resource: kmock.resource, info: kmock.ResourceInfo) -> list[dict[str, Any]]:
    plural = str(resource.plural)
    kind = info.kind or plural.capitalize()
    main: dict[str, Any] = {
        "name": plural,
        "singularName": info.singular or kind.lower(),
        "namespaced": bool(info.namespaced),
        "kind": kind,
        "verbs": sorted(info.verbs or MAIN_VERBS),
    }
    if info.shortnames:
        main["shortNames"] = sorted(info.shortnames)
    if info.categories:
        main["categories"] = sorted(info.categories)
    subresources = [
        _subresource_entry(plural, kind, bool(info.namespaced), name) for name in sorted(info.subresources)
    ]
    return [main, *subresources]


def _subresource_entry(plural: str, kind: str, namespaced: bool, subresource: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{plural}/{subresource}",
        "singularName": "",
        "namespaced": namespaced,
        "kind": kind,
        "verbs": list(STATUS_VERBS) if subresource in ("status", "scale") else ["get"],
    }
    if subresource == "scale":
        entry.update(kind="Scale", group="autoscaling", version="v1")
    if (plural, subresource) == ("pods", "eviction"):
        # As the real /api/v1 lists it: kubectl drain looks for exactly this entry (CheckEvictionSupport,
        # staging/src/k8s.io/kubectl/pkg/drain/drain.go) to choose eviction over deletion.
        entry.update(kind="Eviction", group="policy", version="v1", verbs=["create"])
    if (plural, subresource) == ("pods", "binding"):
        entry.update(kind="Binding", verbs=["create"])
    return entry
