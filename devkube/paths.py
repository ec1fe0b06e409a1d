"""
Parsing of Kubernetes API URL paths.

Replaces ``kmock._internal.parsing.parse_path`` for incoming requests, because that
one takes ``namespaces`` as the prefix of a namespaced path and crashes on
``/api/v1/namespaces`` and ``/api/v1/namespaces/NAME`` (the Namespace resource itself).
"""

from __future__ import annotations

import dataclasses

import kmock

# Subresources of the Namespace object; `/api/v1/namespaces/NAME/<these>` is not a namespaced list.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclasses.dataclass(frozen=True)
class ApiPath:
    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """Split a resource URL; ``None`` for non-API paths (``/version``, ``/apis``, ``/openapi/v3``)."""
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    return _parse_rest(group, version, rest)


def _parse_rest(group: str, version: str, rest: list[str]) -> ApiPath:
    if not rest:
        return ApiPath(group, version)
    if rest[0] == "namespaces" and (
        len(rest) <= 2 or (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        # The Namespace objects themselves (in other groups, the resource is unknown: 404 later).
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else None
        return ApiPath(group, version, "namespaces", None, name, subresource)
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, plural, *tail = rest[1:]
        return _with_name(group, version, plural, namespace, tail)
    plural, *tail = rest
    return _with_name(group, version, plural, None, tail)


def _with_name(group: str, version: str, plural: str, namespace: str | None, tail: list[str]) -> ApiPath:
    name = tail[0] if tail else None
    subresource = "/".join(tail[1:]) or None
    return ApiPath(group, version, plural, namespace, name, subresource)


# Booleans in query parameters, as Go's strconv.ParseBool reads them (the python client sends "True").
_TRUE_VALUES = frozenset({"1", "t", "T", "true", "TRUE", "True"})


def is_true(value: str | None) -> bool:
    return value in _TRUE_VALUES


def guess_action(path: ApiPath | None, method: str, query: dict[str, str]) -> kmock.action | None:
    """The kmock action for DSL filtering (``emulator['list', ...]``); PUT counts as an update."""
    if path is None or path.plural is None:
        return None
    if method == "GET":
        if is_true(query.get("watch")):
            return kmock.action.WATCH
        return kmock.action.LIST if path.name is None else kmock.action.FETCH
    actions = {
        "POST": kmock.action.CREATE,
        "PATCH": kmock.action.UPDATE,
        "PUT": kmock.action.UPDATE,
        "DELETE": kmock.action.DELETE,
    }
    return actions.get(method)
