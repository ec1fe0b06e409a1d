"""
Label and field selectors, as the API server applies them to lists and watches.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``,
``a``, ``!a``, ``a>1``, ``a<1``; a comma means AND.

Field selectors: ``metadata.name`` and ``metadata.namespace`` for all kinds, plus the
kind-specific fields a real server indexes (Events' ``involvedObject.*``, ``reason``,
``type``...; see ``_EXTRA_FIELDS``); operators ``=``, ``==``, ``!=``; a comma means AND.
Unsupported field labels fail with 400, as on a real server. Differences: no
``\\,``-escaping in values, and CRD ``selectableFields`` are not supported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from devkube import errors

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"[-A-Za-z0-9_.]*"
_EXISTS_RE = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_EQUALITY_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_SET_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_NUMERIC_RE = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>[<>])\s*(?P<value>-?\d+)\s*$")
_FIELD_RE = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z0-9_.]*)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")

LabelTest = Callable[[Mapping[str, str]], bool]


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    tests: tuple[LabelTest, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in self.tests)


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    key: str
    value: str
    negated: bool


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    plural: str
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.requirements:
            actual = field_value(self.plural, obj, req.key)
            if (actual == req.value) == req.negated:
                return False
        return True


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_label_requirement(part) for part in _split_top_level(text)))


def _split_top_level(text: str) -> list[str]:
    """Split by commas outside of parentheses: ``a in (x,y),b`` → ``a in (x,y)``, ``b``."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _parse_label_requirement(text: str) -> LabelTest:
    if match := _SET_RE.match(text):
        key, op = match["key"], match["op"]
        values = frozenset(value.strip() for value in match["values"].split(",") if value.strip())
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match := _EQUALITY_RE.match(text):
        key, op, value = match["key"], match["op"], match["value"]
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if match := _NUMERIC_RE.match(text):
        return _numeric_test(match["key"], match["op"], int(match["value"]))
    if match := _EXISTS_RE.match(text):
        key, negated = match["key"], bool(match["neg"])
        return lambda labels: (key in labels) != negated
    raise errors.bad_request(f"unable to parse requirement: {text.strip()!r}: invalid label selector")


def _numeric_test(key: str, op: str, bound: int) -> LabelTest:
    def test(labels: Mapping[str, str]) -> bool:
        try:
            value = int(labels[key])
        except (KeyError, ValueError):
            return False
        return value > bound if op == ">" else value < bound

    return test


def parse_field_selector(plural: str, text: str | None) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector(plural)
    requirements: list[FieldRequirement] = []
    for part in text.split(","):
        match = _FIELD_RE.match(part)
        if match is None:
            raise errors.bad_request(f"invalid selector: {text!r}; can't understand {part!r}")
        key = match["key"]
        if key not in _BASE_FIELDS and key not in _EXTRA_FIELDS.get(plural, {}):
            raise errors.bad_request(f"field label not supported: {key}")
        requirements.append(FieldRequirement(key, match["value"], negated=match["op"] == "!="))
    return FieldSelector(plural, tuple(requirements))


def field_value(plural: str, obj: Mapping[str, Any], key: str) -> str:
    """The value a field selector compares with; missing fields compare as the empty string."""
    path = _EXTRA_FIELDS.get(plural, {}).get(key) or _BASE_FIELDS[key]
    value: Any = obj
    for step in path:
        value = value.get(step) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


# The field label → the path in the object. Only these are selectable on a real server.
_BASE_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
}
_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.namespace": ("involvedObject", "namespace"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "involvedObject.apiVersion": ("involvedObject", "apiVersion"),
    "involvedObject.resourceVersion": ("involvedObject", "resourceVersion"),
    "involvedObject.fieldPath": ("involvedObject", "fieldPath"),
    "reason": ("reason",),
    "reportingComponent": ("reportingComponent",),
    "source": ("source", "component"),
    "type": ("type",),
}
_EXTRA_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "events": _EVENT_FIELDS,
    "namespaces": {"status.phase": ("status", "phase")},
    "secrets": {"type": ("type",)},
    "pods": {
        "spec.nodeName": ("spec", "nodeName"),
        "spec.serviceAccountName": ("spec", "serviceAccountName"),
        "status.phase": ("status", "phase"),
        "status.podIP": ("status", "podIP"),
    },
}
