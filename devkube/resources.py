"""
A resolved resource: kmock's (group, version, plural) key plus its discovery info.

kmock keeps the identity (``kmock.resource``) and the discovery details
(``kmock.ResourceInfo``) apart; the emulator needs both on every request,
so they are resolved once into an immutable :class:`Resource`.
"""

from __future__ import annotations

import dataclasses
import re

import kmock

# Verbs advertised in discovery; kubectl checks them (e.g. "list" for `get`, "patch" for `apply`).
MAIN_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")

# The subresources the emulator really serves; the others are advertised but answer 404.
SERVED_SUBRESOURCES = frozenset({"status"})

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    subresources: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def qualified_plural(resource: Resource) -> str:
    """The name kubectl and the API use in messages: ``deployments.apps``, ``pods``."""
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def resolve(resources: kmock.ResourcesArray, group: str, version: str, plural: str) -> Resource | None:
    key = kmock.resource(group, version, plural)
    # NB: indexing a kmock ResourcesArray creates missing entries, so check membership first.
    if key not in resources:
        return None
    info = resources[key]
    kind = info.kind or plural.capitalize()
    return Resource(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular=info.singular or kind.lower(),
        namespaced=bool(info.namespaced),
        subresources=frozenset(info.subresources),
    )


def version_priority(version: str) -> tuple[int, int, int]:
    """
    Sort key: the preferred version first, as Kubernetes orders versions.

    GA before beta before alpha, higher numbers first; unconventional names last.
    """
    match = _VERSION_RE.match(version)
    if match is None:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    stage_rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (stage_rank, -int(major), -int(minor or 0))


def lookup(resources: kmock.ResourcesArray, spec: str | kmock.resource) -> Resource:
    """
    Find a declared resource by a kubectl-like name, for the test helpers.

    Accepts ``kmock.resource`` or strings: ``"deployments"``, ``"deploy"``, ``"Deployment"``,
    ``"deployments.apps"``, ``"apps/v1/deployments"``, ``"v1/pods"``. Ambiguous names
    prefer the core group, then the preferred version, as kubectl does.
    """
    group, version, name = _split_spec(spec)
    candidates = [
        res
        for res in resources
        if (group is None or res.group == group) and (version is None or res.version == version)
        if _names_of(res, resources[res]) & {name.lower()}
    ]
    if not candidates:
        raise LookupError(f"no such resource: {spec!r}")
    best = min(
        candidates, key=lambda res: (res.group != "", str(res.group), version_priority(str(res.version)))
    )
    found = resolve(resources, str(best.group), str(best.version), str(best.plural))
    assert found is not None  # it was just found among the declared resources
    return found


def _split_spec(spec: str | kmock.resource) -> tuple[str | None, str | None, str]:
    if isinstance(spec, kmock.resource):
        return spec.group, spec.version, str(spec.plural)
    if "/" in spec:
        parsed = kmock.resource(spec)
        return parsed.group, parsed.version, str(parsed.plural)
    name, _, group = spec.partition(".")
    return (group or None), None, name


def _names_of(resource: kmock.resource, info: kmock.ResourceInfo) -> set[str]:
    names = {str(resource.plural), *(info.shortnames or ())}
    if info.singular:
        names.add(info.singular)
    if info.kind:
        names.add(info.kind.lower())
    return {name.lower() for name in names}
