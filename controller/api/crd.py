"""Generate the ``InferencePool`` CustomResourceDefinition from the pydantic models.

The schema is structural (every node typed, no ``$ref``/``anyOf``), carries a
description on every field so ``kubectl explain`` documents it, the defaults the
API server applies, bounds and enums, and the CEL rules of
:mod:`controller.api.rules` as ``x-kubernetes-validations``. ``crds/`` holds the
generated file; a test fails when it drifts from this output.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from controller.api.rules import CrossFieldRule, SchemaMaxLength
from controller.api.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    MAX_POOL_NAME_LENGTH,
    PLURAL,
    POOL_NAME_PATTERN,
    InferencePoolSpec,
    Spec,
)
from controller.api.status import InferencePoolStatus

__all__ = ["POOL_NAME_RULES", "generate_crd", "render_crd_yaml", "schema_for_model"]

JSONSchema = dict[str, Any]

# Rules on the object's own name: it becomes a Service name and a prefix of pod names.
POOL_NAME_RULES = (
    CrossFieldRule(
        cel=f"self.metadata.name.size() <= {MAX_POOL_NAME_LENGTH}",
        message=f"metadata.name must be at most {MAX_POOL_NAME_LENGTH} characters: it prefixes pod names",
        check=lambda name: len(name) <= MAX_POOL_NAME_LENGTH,
        field_path="metadata.name",
    ),
    CrossFieldRule(
        cel=f"self.metadata.name.matches('{POOL_NAME_PATTERN}')",
        message="metadata.name must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter): it names a Service",
        check=lambda name: __import__("re").fullmatch(POOL_NAME_PATTERN, name) is not None,
        field_path="metadata.name",
    ),
)

PRINTER_COLUMNS: list[JSONSchema] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".status.replicas.desired",
     "description": "Replicas the operator wants."},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.replicas.ready",
     "description": "Replicas ready to serve."},
    {"name": "Spot", "type": "integer", "jsonPath": ".status.replicas.spotReady",
     "description": "Ready replicas on spot capacity."},
    {"name": "On-Demand", "type": "integer", "jsonPath": ".status.replicas.onDemandReady",
     "description": "Ready replicas on on-demand capacity."},
    {"name": "Queue", "type": "number", "jsonPath": ".status.signals.queueDepth",
     "description": "Requests waiting across ready replicas."},
    {"name": "KV%", "type": "integer", "jsonPath": ".status.signals.kvCachePercent",
     "description": "KV-cache utilization, percent."},
    {"name": "Fallback", "type": "string", "jsonPath": ".status.fallback.mode",
     "description": "Where traffic goes: Off, Overflow or Full."},
    {"name": "$/H", "type": "number", "jsonPath": ".status.cost.hourly",
     "description": "What the pool costs per hour now (status.cost.currency)."},
    {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason",
     "description": "Why the pool is or is not ready."},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "priority": 1,
     "description": "The served model."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` is an optional field here; the schema says so by leaving it out of ``required``."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
        return Union[tuple(members)]  # noqa: UP007  # a runtime union built from a tuple
    return annotation


def _schema_for_annotation(annotation: Any) -> JSONSchema:
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is str:
        return {"type": "string"}
    if annotation is Any:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        schema = _schema_for_annotation(base)
        schema.update(_constraints_from(metadata, schema.get("type")))
        return schema
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": "string", "enum": values}
    if origin in (Union, types.UnionType) and set(get_args(annotation)) == {int, str}:
        return {"x-kubernetes-int-or-string": True}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": "array", "items": _schema_for_annotation(item)}
    if origin is dict:
        key, value = get_args(annotation)
        if key is not str:
            raise TypeError(f"maps need string keys, got {key!r}")
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _schema_for_annotation(value)}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return schema_for_model(annotation)
    raise TypeError(f"no OpenAPI mapping for {annotation!r}")


def _constraints_from(metadata: list[Any], json_type: str | None) -> JSONSchema:
    """Bounds from pydantic/annotated-types metadata; lengths mean items on arrays, properties on maps."""
    schema: JSONSchema = {}
    min_len, max_len = {"array": ("minItems", "maxItems"), "object": ("minProperties", "maxProperties")}.get(
        json_type or "", ("minLength", "maxLength"))
    for item in metadata:
        if isinstance(item, FieldInfo):
            schema.update(_constraints_from(item.metadata, json_type))
            continue
        match item:
            case annotated_types.Ge(ge=value):
                schema["minimum"] = value
            case annotated_types.Gt(gt=value):
                schema["minimum"] = value
                schema["exclusiveMinimum"] = True
            case annotated_types.Le(le=value):
                schema["maximum"] = value
            case annotated_types.Lt(lt=value):
                schema["maximum"] = value
                schema["exclusiveMaximum"] = True
            case annotated_types.MinLen(min_length=value):
                schema[min_len] = value
            case annotated_types.MaxLen(max_length=value):
                schema[max_len] = value
            case SchemaMaxLength(max_length=value):
                schema["maxLength"] = value
            case _ if getattr(item, "pattern", None):
                schema["pattern"] = item.pattern
    return schema


def _default(field: FieldInfo) -> Any:
    """The default the API server should apply, or ``PydanticUndefined`` for none."""
    if field.default_factory is not None:
        produced = field.default_factory()  # type: ignore[call-arg]
        if isinstance(produced, BaseModel):
            # Spelled out in full: the API server validates a default (schema and CEL rules) as it
            # stands, without applying its children's defaults first, so a `{}` default fails every
            # rule that reads a defaulted child (apiextensions-apiserver, schema/defaulting/validation.go).
            return produced.model_dump(by_alias=True, exclude_none=True, mode="json")
        return PydanticUndefined  # empty lists and maps stay absent rather than noise in every object
    if field.default is None or field.default is PydanticUndefined:
        return PydanticUndefined
    return field.default


def schema_for_model(model: type[BaseModel]) -> JSONSchema:
    properties: JSONSchema = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        wire_name = field.alias or name
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} needs a description: kubectl explain shows it")
        prop = _schema_for_annotation(field.annotation)
        prop.update(_constraints_from(field.metadata, prop.get("type")))
        prop["description"] = field.description
        default = _default(field)
        if default is not PydanticUndefined:
            prop["default"] = default
        if field.is_required():
            required.append(wire_name)
        properties[wire_name] = prop
    schema: JSONSchema = {"type": "object", "properties": properties}
    if model.__doc__ and issubclass(model, Spec) and model is not Spec and model.__doc__ != Spec.__doc__:
        schema["description"] = model.__doc__.strip().splitlines()[0]
    if required:
        schema["required"] = required
    rules: tuple[CrossFieldRule, ...] = getattr(model, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [
            {"rule": rule.cel, "message": rule.message, **({"fieldPath": "." + rule.field_path}
                                                           if rule.field_path else {})}
            for rule in rules
        ]
    return schema


def _status_schema() -> JSONSchema:
    schema = schema_for_model(InferencePoolStatus)
    conditions = schema["properties"]["conditions"]
    # Conditions are a map keyed by type, as metav1.Condition lists are.
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["required"] = ["type", "status", "reason", "message", "lastTransitionTime"]
    return schema


def generate_crd() -> JSONSchema:
    spec_schema = schema_for_model(InferencePoolSpec)
    spec_schema["description"] = "What the pool should be: the model, its bounds, and the policies that drive it."
    status_schema = _status_schema()
    status_schema["description"] = "What the operator observed and did."
    root: JSONSchema = {
        "type": "object",
        "description": (
            "One self-hosted model served by vLLM replicas on spot and on-demand GPUs, "
            "with an optional hosted-API fallback."
        ),
        "properties": {
            "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            {"rule": rule.cel, "message": rule.message} for rule in POOL_NAME_RULES
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "poolpilot", "app.kubernetes.io/part-of": "poolpilot"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["ipool"],
                "categories": ["poolpilot"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


HEADER = (
    "# Generated by `poolpilot crd` from controller/api (the pydantic models are the source of truth).\n"
    "# Do not edit by hand: change the models, then run `make crd`.\n"
)


def render_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(generate_crd(), sort_keys=False, width=110)



