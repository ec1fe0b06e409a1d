"""What the API server does with a CRD's ``openAPIV3Schema`` when an object comes in, in Python.

``admit(schema, obj)`` follows the API server's order:

1. prune: drop fields the schema does not know (unless ``x-kubernetes-preserve-unknown-fields``)
   and ``null`` values of fields that are not ``nullable``;
2. default: apply ``default`` where a field is absent and its parent object exists, top-down, so a
   parent's default gets its own children's defaults;
3. validate against the structural schema (types with integer apart from number, ``required``,
   ``enum``, bounds with the boolean ``exclusiveMinimum``/``exclusiveMaximum``, lengths, item
   counts, ``pattern``, ``additionalProperties``, ``x-kubernetes-int-or-string``);
4. evaluate every ``x-kubernetes-validations`` rule with celpy, ``self`` bound to the node's
   (defaulted) value converted by the schema's types; a rule that fails reports its message at the
   node's path (plus its ``fieldPath``), a rule that errors (``no such key``) refuses the object too,
   as the API server does.

``structural_problems(schema)`` checks a schema the way the API server checks a CRD before it
accepts it (structural, valid defaults, rules that compile and name fields that exist), plus our own
rule that every field carries a description for ``kubectl explain``.

Known gaps: celpy has the CEL standard library; of Kubernetes' extension libraries only
``isQuantity`` is added here (the one the CRD uses; url, ip, ... are not), and it does not
type-check a rule against the schema; ``structural_problems`` makes up for the second by
resolving each ``self.a.b`` reference through the schema.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from controller.api import quantity

__all__ = [
    "Admission",
    "Problem",
    "admit",
    "apply_defaults",
    "openapi_schema",
    "prune",
    "resolve_path",
    "structural_problems",
    "to_cel",
    "validate_rules",
    "validate_schema",
]

Schema = Mapping[str, Any]

TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
# Keys that make a schema non-structural, or that apiextensions.k8s.io/v1 refuses outright.
FORBIDDEN_KEYS = (
    "$ref", "$schema", "id", "definitions", "patternProperties", "dependencies", "additionalItems",
)
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# Inside allOf/anyOf/oneOf/not a structural schema may only restrict values, never declare them.
FORBIDDEN_IN_JUNCTORS = ("type", "description", "default", "additionalProperties", "nullable")
# At the root, CEL sees only these metadata fields (the API server's rule).
ROOT_METADATA_FIELDS = ("name", "generateName")
# ObjectMeta fields a printer column may point at.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
    "finalizers", "managedFields",
})
SELF_REFERENCE = re.compile(r"(?<![\w.])self((?:\.[A-Za-z_]\w*)+)")


@dataclass(frozen=True)
class Problem:
    """One reason the API server would refuse an object (or, for ``pruned``, what it would drop)."""

    path: str
    message: str
    kind: str = "schema"  # schema | rule | pruned

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


@dataclass(frozen=True)
class Admission:
    """The object as the API server would store it, and what it would refuse it for."""

    obj: dict[str, Any]
    problems: tuple[Problem, ...]
    pruned: tuple[str, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return not self.problems

    def messages(self) -> list[str]:
        return [problem.message for problem in self.problems]


def openapi_schema(crd: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a CRD's version (the storage version when none is named)."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version or (version is None and entry.get("storage")):
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"the CRD has no version {version or '(storage)'}")


def admit(schema: Schema, obj: Mapping[str, Any]) -> Admission:
    """Prune, default, validate and run the CEL rules, as the API server does on create."""
    pruned_paths: list[str] = []
    pruned = prune(schema, obj, pruned_paths)
    defaulted = apply_defaults(schema, pruned)
    problems = validate_schema(schema, defaulted)
    problems += validate_rules(schema, defaulted)
    return Admission(defaulted, tuple(problems), tuple(pruned_paths))


# ----------------------------------------------------------------------------------------- helpers


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves_unknown(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integral(value: Any) -> bool:
    # The API server's validator takes a float without a fractional part as an integer.
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())


def _type_matches(schema: Schema, value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return _is_int(value) or isinstance(value, str)
    match schema.get("type"):
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return _is_integral(value)
        case "number":
            return _is_number(value)
        case "boolean":
            return isinstance(value, bool)
        case None:
            return _preserves_unknown(schema)
        case _:
            return False


# ------------------------------------------------------------------------------------- pruning


def prune(
    schema: Schema, value: Any, pruned: list[str] | None = None, path: str = "", *, root: bool = True
) -> Any:
    """A copy of ``value`` without unknown fields and without nulls the schema does not allow.

    ``root`` says ``value`` is a whole object: its apiVersion, kind and metadata are left alone.
    The paths of what was dropped are appended to ``pruned``.
    """
    dropped = pruned if pruned is not None else []
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        result: dict[str, Any] = {}
        for key, item in value.items():
            child_path = _join(path, key)
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = copy.deepcopy(item)  # the API server handles these outside the schema
                continue
            if key in properties:
                child = properties[key]
            elif isinstance(additional, Mapping):
                child = additional
            elif _preserves_unknown(schema) or additional is True:
                result[key] = copy.deepcopy(item)
                continue
            else:
                dropped.append(child_path)
                continue
            if item is None and not child.get("nullable"):
                dropped.append(child_path)
                continue
            result[key] = prune(child, item, dropped, child_path, root=False)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        items = schema["items"]
        return [
            prune(items, item, dropped, f"{path}[{index}]", root=False) for index, item in enumerate(value)
        ]
    return copy.deepcopy(value)


# ------------------------------------------------------------------------------------ defaulting


def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults applied top-down."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        result = {key: copy.deepcopy(item) for key, item in value.items()}
        for key, child in properties.items():
            if key not in result and "default" in child:
                result[key] = copy.deepcopy(child["default"])
        for key, item in list(result.items()):
            if key in properties:
                result[key] = apply_defaults(properties[key], item)
            elif isinstance(schema.get("additionalProperties"), Mapping):
                result[key] = apply_defaults(schema["additionalProperties"], item)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(schema["items"], item) for item in value]
    return copy.deepcopy(value)


# ------------------------------------------------------------------------------------ validation


def validate_schema(schema: Schema, value: Any, path: str = "", *, root: bool = True) -> list[Problem]:
    """Every way ``value`` breaks the structural schema (no CEL); ``root``: ``value`` is a whole object."""
    if value is None:
        if schema.get("nullable"):
            return []
        return [Problem(path, "must not be null")]
    if not _type_matches(schema, value):
        wanted = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        return [Problem(path, f"must be of type {wanted}, got {type(value).__name__} {value!r}")]
    problems: list[Problem] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(Problem(path, f"unsupported value {value!r}: must be one of {schema['enum']}"))
    if _is_number(value):
        problems += _bound_problems(schema, value, path)
    if isinstance(value, str):
        problems += _string_problems(schema, value, path)
    if isinstance(value, list):
        problems += _count_problems(schema, len(value), ("minItems", "maxItems"), "items", path)
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                problems += validate_schema(items, item, f"{path}[{index}]", root=False)
    if isinstance(value, dict):
        problems += _object_problems(schema, value, path, root=root)
    return problems


def _bound_problems(schema: Schema, value: float, path: str) -> list[Problem]:
    problems = []
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            relation = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
            problems.append(Problem(path, f"should be {relation} {low}, got {value}"))
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            relation = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
            problems.append(Problem(path, f"should be {relation} {high}, got {value}"))
    return problems


def _string_problems(schema: Schema, value: str, path: str) -> list[Problem]:
    problems = _count_problems(schema, len(value), ("minLength", "maxLength"), "characters", path)
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(Problem(path, f"{value!r} does not match {schema['pattern']!r}"))
    return problems


def _count_problems(schema: Schema, count: int, keys: tuple[str, str], unit: str, path: str) -> list[Problem]:
    low, high = keys
    problems = []
    if low in schema and count < schema[low]:
        problems.append(Problem(path, f"should have at least {schema[low]} {unit}, has {count}"))
    if high in schema and count > schema[high]:
        problems.append(Problem(path, f"may have at most {schema[high]} {unit}, has {count}"))
    return problems


def _object_problems(schema: Schema, value: Mapping[str, Any], path: str, *, root: bool) -> list[Problem]:
    problems = _count_problems(schema, len(value), ("minProperties", "maxProperties"), "properties", path)
    problems += [
        Problem(_join(path, key), "Required value") for key in schema.get("required", ()) if key not in value
    ]
    properties: Mapping[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if root and key in ("apiVersion", "kind", "metadata"):
            if key != "metadata":
                problems += validate_schema(properties.get(key, {"type": "string"}), item, key, root=False)
            continue
        if key in properties:
            problems += validate_schema(properties[key], item, _join(path, key), root=False)
        elif isinstance(additional, Mapping):
            problems += validate_schema(additional, item, _join(path, key), root=False)
        elif not (_preserves_unknown(schema) or additional is True):
            problems.append(Problem(_join(path, key), "unknown field"))
    return problems


# -------------------------------------------------------------------------------------------- CEL


# Made at import: celpy.Environment() raises the recursion limit, which Hypothesis warns about (an
# error under our warning filters) when it first happens inside a @given test.
_ENVIRONMENT = celpy.Environment()


def _is_quantity(value: Any) -> celtypes.BoolType:
    """Kubernetes' CEL quantity library ``isQuantity(string)`` (staging/src/k8s.io/apiserver/pkg/cel/
    library/quantity.go): whether resource.ParseQuantity accepts the string. celpy lacks the library."""
    try:
        quantity.parse(str(value))
    except quantity.InvalidQuantity:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


# Kubernetes' CEL extension functions the CRD's rules use, beside celpy's standard library.
_KUBERNETES_FUNCTIONS: dict[str, Any] = {"isQuantity": _is_quantity}


@functools.cache
def _program(rule: str) -> Any:
    return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=_KUBERNETES_FUNCTIONS)


def to_cel(schema: Schema, value: Any) -> Any:
    """``value`` as the CEL value the API server would bind: the schema decides int, double or map."""
    if value is None:
        return celtypes.NullType()
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if _is_int(value) else celtypes.StringType(value)
    match schema.get("type"):
        case "string":
            return celtypes.StringType(value)
        case "integer":
            return celtypes.IntType(int(value))
        case "number":
            return celtypes.DoubleType(float(value))
        case "boolean":
            return celtypes.BoolType(value)
        case "array":
            items = schema.get("items", {})
            return celtypes.ListType([to_cel(items, item) for item in value])
        case "object" if "properties" in schema or isinstance(schema.get("additionalProperties"), Mapping):
            properties: Mapping[str, Any] = schema.get("properties", {})
            additional = schema.get("additionalProperties")
            converted = {}
            for key, item in value.items():
                child = properties.get(key, additional if isinstance(additional, Mapping) else None)
                converted[celtypes.StringType(key)] = (
                    to_cel(child, item) if child is not None else json_to_cel(item)
                )
            return celtypes.MapType(converted)
    return json_to_cel(value)


def _root_view(value: Mapping[str, Any]) -> dict[str, Any]:
    """What CEL sees of an object at the root: its fields, and only name/generateName of metadata."""
    view = dict(value)
    metadata = value.get("metadata")
    if isinstance(metadata, Mapping):
        view["metadata"] = {key: metadata[key] for key in ROOT_METADATA_FIELDS if key in metadata}
    return view


def _root_schema(schema: Schema) -> dict[str, Any]:
    properties = dict(schema.get("properties", {}))
    properties["metadata"] = {
        "type": "object",
        "properties": {key: {"type": "string"} for key in ROOT_METADATA_FIELDS},
    }
    return {**schema, "properties": properties}


def validate_rules(schema: Schema, value: Any, path: str = "", *, root: bool = True) -> list[Problem]:
    """Every ``x-kubernetes-validations`` rule that fails or errors, at its node.

    ``root``: ``value`` is a whole object, so its rules see only name and generateName of metadata.
    """
    if value is None or not _type_matches(schema, value):
        return []  # the schema validation reports the wrong type; the API server runs no rule on it
    problems: list[Problem] = []
    rules = schema.get("x-kubernetes-validations", ())
    if rules:
        is_object = root and isinstance(value, Mapping)
        bound = to_cel(_root_schema(schema), _root_view(value)) if is_object else to_cel(schema, value)
        for rule in rules:
            problems += _evaluate(rule, bound, path)
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if root and key == "metadata":
                continue
            child = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if child is not None:
                problems += validate_rules(child, item, _join(path, key), root=False)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problems += validate_rules(schema["items"], item, f"{path}[{index}]", root=False)
    return problems


def _evaluate(rule: Mapping[str, Any], bound: Any, path: str) -> list[Problem]:
    text = rule["rule"]
    where = _join(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path
    try:
        result = _program(text).evaluate({"self": bound})
    except CELEvalError as error:
        return [Problem(path, f"{error.args[0] if error.args else error} evaluating rule: {text}", "rule")]
    if isinstance(result, CELEvalError):
        return [Problem(path, f"{result.args[0] if result.args else result} evaluating rule: {text}", "rule")]
    if not isinstance(result, celtypes.BoolType):
        return [Problem(path, f"rule returned {type(result).__name__}, not a bool: {text}", "rule")]
    if result:
        return []
    return [Problem(where, rule.get("message") or f"failed rule: {text}", "rule")]


# ------------------------------------------------------------------------------ structural checks


def structural_problems(schema: Schema) -> list[str]:
    """Why the API server would refuse this ``openAPIV3Schema`` in a CRD, or ``kubectl explain`` lack docs.

    Checks: structural (a type on every node but int-or-string/preserve-unknown ones, no ``$ref`` and
    friends, junctors that only restrict, ``items`` on arrays, ``additionalProperties`` not beside
    ``properties``), list-type annotations, root metadata restricted to name/generateName, defaults
    that prune to themselves and validate, a description on every field but the root's ``metadata``,
    and CEL rules that compile, whose ``self.a.b`` references and ``fieldPath`` exist in the schema.
    """
    found = _walk_structure(schema, "", is_root=True)
    problems = [f"{path or '<root>'}: {message}" for path, message in found]
    if schema.get("type") != "object":
        problems.insert(0, "<root>: type must be object")
    return problems


def _walk_structure(schema: Schema, path: str, *, is_root: bool = False) -> Iterator[tuple[str, str]]:
    yield from _node_problems(schema, path)
    yield from _rule_problems(schema, path, is_root=is_root)
    if "default" in schema:
        yield from _default_problems(schema, path)
    properties = schema.get("properties", {})
    for key, child in properties.items():
        child_path = _join(path, key)
        if is_root and key == "metadata":
            yield from _metadata_problems(child)
            continue
        if not str(child.get("description", "")).strip():
            yield child_path, "has no description (kubectl explain shows nothing)"
        yield from _walk_structure(child, child_path)
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        yield from _walk_structure(additional, f"{path}.*" if path else "*")
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _walk_structure(items, f"{path}[*]")


def _node_problems(schema: Schema, path: str) -> Iterator[tuple[str, str]]:
    node_type = schema.get("type")
    int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
    if node_type is None and not (int_or_string or _preserves_unknown(schema)):
        yield path, "has no type (only int-or-string and preserve-unknown-fields nodes may omit it)"
    if node_type is not None and node_type not in TYPES:
        yield path, f"type {node_type!r} is not one of {sorted(TYPES)}"
    if int_or_string and node_type is not None:
        yield path, "x-kubernetes-int-or-string must not have a type"
    if schema.get("x-kubernetes-preserve-unknown-fields") is False:
        yield path, "x-kubernetes-preserve-unknown-fields: false is not allowed (leave it out)"
    for key in FORBIDDEN_KEYS:
        if key in schema:
            yield path, f"{key} is not allowed in a structural schema"
    for junctor in JUNCTORS:
        members = schema.get(junctor)
        branches = members if isinstance(members, list) else [members] if members is not None else []
        for branch in branches:
            for key in FORBIDDEN_IN_JUNCTORS:
                if key in _flatten(branch):
                    yield path, f"{junctor} must not set {key}"
    # Only with properties to contradict, and an additionalProperties that is a schema or false
    # (apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go).
    if schema.get("properties") and schema.get("additionalProperties", True) is not True:
        yield path, "properties and additionalProperties are mutually exclusive"
    if schema.get("additionalProperties") is False:
        yield path, "additionalProperties: false is not allowed"
    if schema.get("uniqueItems") is True:
        yield path, "uniqueItems: true is not allowed"
    if node_type == "array" and not isinstance(schema.get("items"), Mapping):
        yield path, "an array needs items, one schema"
    if node_type not in (None, "object") and ("properties" in schema or "additionalProperties" in schema):
        yield path, f"a {node_type} cannot have properties"
    for key in schema.get("required", ()):
        if key not in schema.get("properties", {}):
            yield path, f"required field {key!r} is not a property"
    yield from _list_type_problems(schema, path)


def _flatten(schema: Any) -> set[str]:
    """Every key used in a junctor branch, nested junctors and property schemas included."""
    if not isinstance(schema, Mapping):
        return set()
    keys = set(schema)
    for value in schema.values():
        if isinstance(value, Mapping):
            keys |= _flatten(value)
        elif isinstance(value, list):
            for item in value:
                keys |= _flatten(item)
    return keys


def _list_type_problems(schema: Schema, path: str) -> Iterator[tuple[str, str]]:
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys")
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        yield path, f"x-kubernetes-list-type {list_type!r} is not atomic, set or map"
    if list_type is not None and schema.get("type") != "array":
        yield path, "x-kubernetes-list-type needs type array"
    if keys is not None and list_type != "map":
        yield path, "x-kubernetes-list-map-keys needs x-kubernetes-list-type: map"
    if list_type == "map":
        items = schema.get("items", {})
        if not keys:
            yield path, "x-kubernetes-list-type: map needs x-kubernetes-list-map-keys"
        if items.get("type") != "object":
            yield path, "x-kubernetes-list-type: map needs object items"
        for key in keys or ():
            item_field = items.get("properties", {}).get(key)
            if item_field is None:
                yield path, f"list map key {key!r} is not a property of the items"
            elif key not in items.get("required", ()) and "default" not in item_field:
                yield path, f"list map key {key!r} must be required or have a default"


def _metadata_problems(schema: Schema) -> Iterator[tuple[str, str]]:
    if schema.get("type") != "object":
        yield "metadata", "must be of type object"
    for key in schema.get("properties", {}):
        if key not in ROOT_METADATA_FIELDS:
            yield f"metadata.{key}", "only name and generateName may be restricted"
    if "default" in schema:
        yield "metadata", "must not have a default"


def _default_problems(schema: Schema, path: str) -> Iterator[tuple[str, str]]:
    default = schema["default"]
    # The API server refuses a default that pruning would change and one that does not validate.
    dropped: list[str] = []
    if prune(schema, default, dropped, root=False) != default or dropped:
        yield path, f"default {default!r} has fields the schema prunes: {dropped}"
    # The default itself is validated, schema and CEL, without its children's defaults applied first
    # (apiextensions-apiserver pkg/apiserver/schema/defaulting/validation.go, validate()): a rule that
    # reads a defaulted child fails on a `default: {}` with "no such key" on a real API server.
    found = validate_schema(schema, default, root=False) + validate_rules(schema, default, root=False)
    for problem in found:
        yield path, f"default {default!r} is invalid: {problem}"


def _rule_problems(schema: Schema, path: str, *, is_root: bool) -> Iterator[tuple[str, str]]:
    rules = schema.get("x-kubernetes-validations", ())
    visible = _root_schema(schema) if is_root else schema
    for rule in rules:
        text = rule.get("rule", "")
        try:
            _program(text)
        except CELParseError as error:
            yield path, f"rule {text!r} does not compile: {error}"
            continue
        message = rule.get("message", "")
        if "\n" in message:
            yield path, f"the message of rule {text!r} has a line break"
        if "messageExpression" in rule:
            try:
                _program(rule["messageExpression"])
            except CELParseError as error:
                yield path, f"messageExpression of {text!r} does not compile: {error}"
        if rule.get("fieldPath") and resolve_path(visible, rule["fieldPath"]) is None:
            yield path, f"fieldPath {rule['fieldPath']!r} of rule {text!r} is not in the schema"
        for match in SELF_REFERENCE.finditer(text):
            problem = _reference_problem(visible, match.group(1), text[match.end():])
            if problem:
                yield path, f"rule {text!r}: {problem}"


def _reference_problem(schema: Schema, chain: str, after: str) -> str | None:
    """Why ``self<chain>`` names no field of the schema (the last name may be a method call)."""
    names = chain.lstrip(".").split(".")
    node: Schema = schema
    for index, name in enumerate(names):
        is_call = index == len(names) - 1 and after.lstrip().startswith("(")
        if is_call:
            return None
        properties = node.get("properties")
        if properties is None:
            if isinstance(node.get("additionalProperties"), Mapping) or _preserves_unknown(node):
                return None  # a map key or an unknown field: not checkable
            return f"self.{'.'.join(names[: index + 1])}: {node.get('type')} has no field {name!r}"
        if name not in properties:
            return f"self.{'.'.join(names[: index + 1])}: no such field"
        node = properties[name]
    return None


def resolve_path(schema: Schema, field_path: str) -> Schema | None:
    """The schema node a JSON path like ``.spec.replicas.min``, ``.a[*].b`` or ``.a[?(@.x=="y")].b`` names.

    ``metadata`` resolves through ObjectMeta's field names (the CRD leaves it untyped); a name
    inside a map (``additionalProperties``) or a preserve-unknown node resolves to that node.
    """
    tokens = re.findall(r"\.([A-Za-z_][\w-]*)|\[([^\]]*)\]", field_path)
    if "".join(f".{name}" if name else f"[{index}]" for name, index in tokens) != field_path:
        return None
    node: Schema = schema
    in_metadata = False
    for name, index in tokens:
        if index:  # [*], [3], [?(@.type=="Ready")], ['key']
            if node.get("type") == "array":
                node = node.get("items", {})
                continue
            key = index.strip("'\"")
            if isinstance(node.get("additionalProperties"), Mapping):
                node = node["additionalProperties"]
                continue
            name = key
        if in_metadata:
            return {"type": "string"} if name in OBJECT_META_FIELDS else None
        properties = node.get("properties", {})
        if name in properties:
            node = properties[name]
            in_metadata = node is schema.get("properties", {}).get("metadata") and not node.get("properties")
        elif isinstance(node.get("additionalProperties"), Mapping):
            node = node["additionalProperties"]
        elif _preserves_unknown(node):
            return node
        else:
            return None
    return node
