"""
API errors in the shape of a Kubernetes ``Status`` object.

Every failure the emulator reports to a client is one of these, so that
kubectl prints ``Error from server (Reason): message`` and the ``kubernetes``
client raises ``ApiException`` with the usual ``status`` and ``reason``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import kmock

from devkube.resources import Resource, qualified_plural


class ApiError(kmock.KubernetesError):
    """A failure rendered as a ``Status`` body with the given HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        # kmock's error is a frozen attrs class; its own __init__ assigns the fields.
        super().__init__(status=code, reason=reason, message=message, details=details or {})

    def as_status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.status,
        }


def _details(resource: Resource, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"group": resource.group, "kind": resource.plural}
    if name:
        details["name"] = name
    return details


def not_found(resource: Resource, name: str) -> ApiError:
    message = f'{qualified_plural(resource)} "{name}" not found'
    return ApiError(404, "NotFound", message, _details(resource, name))


def unknown_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def already_exists(resource: Resource, name: str) -> ApiError:
    message = f'{qualified_plural(resource)} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(resource, name))


def conflict(resource: Resource, name: str) -> ApiError:
    message = (
        f'Operation cannot be fulfilled on {qualified_plural(resource)} "{name}": '
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", message, _details(resource, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(resource: Resource, name: str | None, message: str) -> ApiError:
    full = f'{resource.kind or resource.plural} "{name or ""}" is invalid: {message}'
    return ApiError(422, "Invalid", full, _details(resource, name))


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    message = (
        f"the body of the request was in an unknown format: {content_type} - "
        "this emulator accepts application/json bodies and merge, JSON and strategic merge patches"
    )
    return ApiError(415, "UnsupportedMediaType", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


@dataclasses.dataclass(frozen=True)
class FieldProblem:
    """One entry of apimachinery's field.ErrorList: ``{field}: Invalid value: {value}: {detail}``."""

    field: str
    value: str
    detail: str
    reason: str = "FieldValueInvalid"

    @property
    def message(self) -> str:
        return f"Invalid value: {self.value}: {self.detail}"


def invalid_fields(resource: Resource, name: str | None, problems: list[FieldProblem], *,
                   by_resource: bool = False) -> ApiError:
    """422 as apimachinery's errors.NewInvalid builds it: ``Kind.group "name" is invalid: <field>: <message>``
    (several in brackets), with one cause per problem. ``by_resource``: named by the qualified plural
    (``leases.coordination.k8s.io``), as the generic registry's update checks are."""
    if by_resource:
        subject, kind = qualified_plural(resource), resource.plural
    else:
        subject, kind = f"{resource.kind}.{resource.group}" if resource.group else resource.kind, resource.kind
    rendered = [f"{problem.field}: {problem.message}" for problem in problems]
    text = rendered[0] if len(rendered) == 1 else f"[{', '.join(rendered)}]"
    details: dict[str, Any] = {"name": name or "", "kind": kind,
                               "causes": [{"reason": p.reason, "message": p.message, "field": p.field}
                                          for p in problems]}
    if resource.group:
        details["group"] = resource.group
    return ApiError(422, "Invalid", f'{subject} "{name or ""}" is invalid: {text}', details)


def invalid_patch(patched: Any, message: str) -> ApiError:
    """422 for a patch whose result does not decode (apiserver's patch handler: the object's JSON is the value)."""
    value = json.dumps(json.dumps(patched, separators=(",", ":")))
    cause = {"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {message}", "field": "patch"}
    return ApiError(422, "Invalid", f' "" is invalid: patch: Invalid value: {value}: {message}', {"causes": [cause]})
