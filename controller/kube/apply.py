"""Bring a pool's owned objects to what was rendered, writing only what differs.

Reads come from Kopf's indexes (the watch cache), so a steady pool costs no API
calls. A cache can lag our own last write; when it claims a difference, the live
object is read once before anything is written, so a stale cache costs a read,
never a spurious write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.core.plan import AppliedChange
from controller.kube.client import KubeApi
from controller.kube.diff import drifted_fields, last_applied_text, merge_patch_for, with_last_applied
from controller.kube.render import OwnedObject

__all__ = ["REFUSED_STATUSES", "AppliedChange", "CachedLookup", "VerifiedObjects", "apply_owned_objects", "owned_by",
           "server_message"]

Manifest = dict[str, Any]
CachedLookup = Callable[[str, str], Manifest | None]  # (kind, name) -> the cached live object


@dataclass
class VerifiedObjects:
    """One pool's owned objects last found exactly as wanted, by uid and resourceVersion.

    A steady pool wants what it last applied, and its objects keep their resourceVersion; while both
    hold, the object is still as it was when compared, so the field-by-field comparison (most of a
    steady evaluation's cost at a thousand pools) is skipped. Any write to the object, ours or
    anybody's, changes its resourceVersion and brings the comparison back.
    """

    _clean: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def is_clean(self, kind: str, name: str, live: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
        return (self._clean.get((kind, name)) == _version_of(live)
                and last_applied_text(live) == last_applied_text(wanted))

    def record(self, kind: str, name: str, live: Mapping[str, Any]) -> None:
        self._clean[(kind, name)] = _version_of(live)

    def forget(self, kind: str, name: str) -> None:
        self._clean.pop((kind, name), None)


def _version_of(live: Mapping[str, Any]) -> tuple[str, str]:
    metadata = live.get("metadata") or {}
    return str(metadata.get("uid") or ""), str(metadata.get("resourceVersion") or "")


# What the API server answers for an object it will never accept as sent (a bad quantity: 400; a
# field that fails validation: 422; an admission policy: 403 or 422). Retrying cannot help, and
# one such object must not stop the pool's other objects, or its replica counts, from being applied.
REFUSED_STATUSES = frozenset({400, 403, 422})


def server_message(error: ApiException) -> str:
    try:
        message = str(json.loads(error.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return (message or str(error.reason or error.status))[:1000]


def _what_it_holds(owned: OwnedObject) -> str:
    replicas = owned.manifest.get("spec", {}).get("replicas") if owned.kind == "Deployment" else None
    if replicas is None:
        return ""
    return f"{replicas} replica" if replicas == 1 else f"{replicas} replicas"


def owned_by(live: Mapping[str, Any], owner_uid: str) -> bool:
    references = live.get("metadata", {}).get("ownerReferences") or []
    return any(reference.get("uid") == owner_uid for reference in references)


async def _apply_one(api: KubeApi, namespace: str, owner_uid: str, owned: OwnedObject,
                     cached: Manifest | None, verified: VerifiedObjects) -> AppliedChange | None:
    wanted = with_last_applied(owned.manifest)
    live = cached
    if live is not None and verified.is_clean(owned.kind, owned.name, live, wanted):
        return None
    verified.forget(owned.kind, owned.name)
    if live is not None and merge_patch_for(wanted, live) is not None:
        live = await api.read(owned.kind, namespace, owned.name)  # the cache may lag our last write
    elif live is None:
        live = await api.read(owned.kind, namespace, owned.name)
    if live is None:
        try:
            await api.create(owned.kind, namespace, wanted)
        except ApiException as error:
            if error.status != 409:
                raise
            live = await api.read(owned.kind, namespace, owned.name)  # created meanwhile: patch below
            if live is None:
                raise
        else:
            return AppliedChange(owned.kind, owned.name, "created", detail=_what_it_holds(owned))
    if not owned_by(live, owner_uid):
        # Somebody else's object with our name: never take it over.
        return AppliedChange(owned.kind, owned.name, "conflict")
    patch = merge_patch_for(wanted, live)
    if patch is None:
        verified.record(owned.kind, owned.name, live)
        return None
    fields = tuple(f for f in drifted_fields(owned.manifest, live) if not f.startswith("metadata.annotations"))
    await api.patch(owned.kind, namespace, owned.name, patch)
    return AppliedChange(owned.kind, owned.name, "updated", fields)


async def apply_owned_objects(
    api: KubeApi, namespace: str, owner_uid: str, objects: Sequence[OwnedObject], cached: CachedLookup,
    verified: VerifiedObjects | None = None,
) -> list[AppliedChange]:
    """Create or patch each object as needed; returns what was written, name conflicts and refusals."""
    verified = verified if verified is not None else VerifiedObjects()
    changes = []
    for owned in objects:
        try:
            change = await _apply_one(api, namespace, owner_uid, owned, cached(owned.kind, owned.name), verified)
        except ApiException as error:
            if error.status not in REFUSED_STATUSES:
                raise  # a server in trouble: the evaluation fails and is retried with backoff
            change = AppliedChange(owned.kind, owned.name, "failed", message=server_message(error))
        if change is not None:
            changes.append(change)
    return changes
