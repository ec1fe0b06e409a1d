"""
CustomResourceDefinition manifests → kmock resource declarations and printer columns.

A real server validates the CRD's schema, prunes unknown fields of the custom resources,
applies defaults, runs conversion webhooks and checks the names for conflicts. None of that
happens here: a CRD only declares its served versions with their scope, names, categories,
subresources (``status``) and ``additionalPrinterColumns``; objects are stored as sent.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

import kmock

from devkube.resources import MAIN_VERBS


class CrdError(ValueError):
    """The manifest is not a usable CRD (the API answers 422 Invalid)."""


@dataclasses.dataclass(frozen=True)
class CrdVersion:
    resource: kmock.resource
    info: kmock.ResourceInfo
    printer_columns: tuple[Mapping[str, Any], ...]
    storage: bool
    schema: Mapping[str, Any] | None


def parse_crd(crd: Mapping[str, Any]) -> list[CrdVersion]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not group or not plural or not kind:
        raise CrdError("spec.group, spec.names.plural and spec.names.kind are required")
    expected_name = f"{plural}.{group}"
    if (crd.get("metadata") or {}).get("name") != expected_name:
        raise CrdError(
            f'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group: {expected_name!r}'
        )
    _check_api_approval(group, (crd.get("metadata") or {}).get("annotations") or {})
    versions = [version for version in spec.get("versions") or [] if version.get("served", True)]
    if not versions:
        raise CrdError("spec.versions: at least one served version is required")
    return [_parse_version(spec, names, version) for version in versions]


API_APPROVAL_ANNOTATION = "api-approved.kubernetes.io"


def _check_api_approval(group: str, annotations: Mapping[str, Any]) -> None:
    """Groups under k8s.io and kubernetes.io (the Gateway API's gateway.networking.k8s.io among them) are the
    Kubernetes project's: their CRDs need the approval annotation, a URL or "unapproved, ..." (KEP 1111;
    apiextensions-apiserver pkg/apiserver/validation ... validation.go ``validateAPIApproval`` and
    pkg/apihelpers ``GetAPIApprovalState``)."""
    protected = any(group == domain or group.endswith(f".{domain}") for domain in ("k8s.io", "kubernetes.io"))
    if not protected:
        return
    value = annotations.get(API_APPROVAL_ANNOTATION)
    see = "see https://github.com/kubernetes/enhancements/pull/1111"
    if value is None:
        raise CrdError(f"metadata.annotations[{API_APPROVAL_ANNOTATION}]: Required value: protected groups must "
                       f'have approval annotation "{API_APPROVAL_ANNOTATION}", {see}')
    if not (str(value).startswith("unapproved") or str(value).startswith(("http://", "https://"))):
        raise CrdError(f"metadata.annotations[{API_APPROVAL_ANNOTATION}]: Invalid value: {value!r}: protected "
                       f'groups must have approval annotation "{API_APPROVAL_ANNOTATION}" with either a URL or a '
                       f'reason starting with "unapproved", {see}')


def _parse_version(
    spec: Mapping[str, Any], names: Mapping[str, Any], version: Mapping[str, Any]
) -> CrdVersion:
    subresources = version.get("subresources") or {}
    info = kmock.ResourceInfo(
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        kind=names["kind"],
        singular=names.get("singular") or names["kind"].lower(),
        verbs=set(MAIN_VERBS),
        shortnames=set(names.get("shortNames") or []),
        categories=set(names.get("categories") or []),
        subresources={name for name in ("status", "scale") if name in subresources},
    )
    return CrdVersion(
        resource=kmock.resource(spec["group"], version["name"], names["plural"]),
        info=info,
        printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
        storage=bool(version.get("storage", True)),
        schema=(version.get("schema") or {}).get("openAPIV3Schema"),
    )


def established_status(crd: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """The status a real server sets once a CRD is served (`kubectl wait --for=condition=Established`)."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    storage = [version["name"] for version in spec.get("versions") or [] if version.get("storage")]
    return {
        "acceptedNames": names,
        "conditions": [
            _condition("NamesAccepted", "NoConflicts", "no conflicts found", stamp),
            _condition("Established", "InitialNamesAccepted", "the initial names have been accepted", stamp),
        ],
        "storedVersions": storage,
    }


def _condition(kind: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": stamp}


class CrdRegistry:
    """The resources declared by CRDs, their printer columns and storage versions."""

    def __init__(self, resources: kmock.ResourcesArray) -> None:
        self.resources = resources
        self.printer_columns: dict[kmock.resource, tuple[Mapping[str, Any], ...]] = {}
        self._storage_versions: dict[tuple[str, str], str] = {}  # (group, plural) → the storage version
        self._schemas: dict[tuple[str, str], Mapping[str, Any]] = {}  # (group, plural) → storage schema
        self._declared: dict[str, list[kmock.resource]] = {}  # CRD name → its declared resources

    def register(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Declare the CRD's served versions, replacing its older declaration (CrdError if unusable)."""
        versions = parse_crd(crd)
        name = str(crd["metadata"]["name"])
        self.unregister(name)
        for version in versions:
            self.resources[version.resource] = version.info
            self.printer_columns[version.resource] = version.printer_columns
        storage_version = next((v for v in versions if v.storage), versions[0])
        storage = storage_version.resource
        self._storage_versions[(str(storage.group), str(storage.plural))] = str(storage.version)
        if storage_version.schema is not None:
            self._schemas[(str(storage.group), str(storage.plural))] = storage_version.schema
        self._declared[name] = [version.resource for version in versions]
        return list(self._declared[name])

    def unregister(self, crd_name: str) -> list[kmock.resource]:
        declared = self._declared.pop(crd_name, [])
        for resource in declared:
            self.resources.pop(resource, None)
            self.printer_columns.pop(resource, None)
            self._storage_versions.pop((str(resource.group), str(resource.plural)), None)
            self._schemas.pop((str(resource.group), str(resource.plural)), None)
        return declared

    def declared(self, crd_name: str) -> list[kmock.resource]:
        return list(self._declared.get(crd_name, []))

    def schema(self, group: str, plural: str) -> Mapping[str, Any] | None:
        """The storage version's openAPIV3Schema of a custom resource; None for the built-in kinds."""
        return self._schemas.get((group, plural))

    def storage_version(self, group: str, plural: str) -> str | None:
        """The storage version of a custom resource; None for the built-in kinds."""
        return self._storage_versions.get((group, plural))
