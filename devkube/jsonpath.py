"""
A small JSONPath evaluator for the ``jsonPath`` of CRD ``additionalPrinterColumns``.

Supported steps: ``.field``, ``.field\\.with\\.dots``, ``['field']``, ``[N]`` (also negative),
``[*]``, and filters ``[?(@.a.b=="x")]``, ``[?(@.a!="x")]``, ``[?(@.a)]``; an optional ``{...}``
wrapper. This is the subset real CRDs use; recursive descent (``..``) and slices are not supported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Step = Callable[[Any], list[Any]]

_FIELD_RE = re.compile(r"\.((?:[A-Za-z0-9_\-/]|\\\.)+)")
_QUOTED_RE = re.compile(r'\[\s*([\'"])(.*?)\1\s*\]')
_INDEX_RE = re.compile(r"\[\s*(-?\d+)\s*\]")
_WILDCARD_RE = re.compile(r"\[\s*\*\s*\]|\.\*")
_FILTER_RE = re.compile(r"\[\s*\?\(\s*@((?:\.[A-Za-z0-9_\-]+)+)\s*(?:(==|!=)\s*(.+?))?\s*\)\s*\]")


class JsonPathError(ValueError):
    pass


def evaluate(path: str, obj: Any) -> list[Any]:
    """All values found by the path; an empty list if nothing matches."""
    values = [obj]
    for step in compile_path(path):
        values = [found for value in values for found in step(value)]
    return values


def compile_path(path: str) -> list[Step]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[Step] = []
    position = 0
    while position < len(text):
        step, position = _next_step(text, position)
        steps.append(step)
    return steps


def _next_step(text: str, position: int) -> tuple[Step, int]:
    if match := _WILDCARD_RE.match(text, position):
        return _all_items, match.end()
    if match := _FIELD_RE.match(text, position):
        return _field(match[1].replace("\\.", ".")), match.end()
    if match := _QUOTED_RE.match(text, position):
        return _field(match[2]), match.end()
    if match := _INDEX_RE.match(text, position):
        return _index(int(match[1])), match.end()
    if match := _FILTER_RE.match(text, position):
        subpath = [part for part in match[1].split(".") if part]
        literal = _parse_literal(match[3]) if match[2] else None
        return _filter(subpath, match[2], literal), match.end()
    raise JsonPathError(f"unsupported JSONPath syntax at {text[position:]!r}")


def _parse_literal(text: str) -> Any:
    text = text.strip()
    if text[:1] == "'" and text[-1:] == "'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError as e:
        raise JsonPathError(f"unsupported JSONPath literal: {text!r}") from e


def _field(name: str) -> Step:
    return lambda value: [value[name]] if isinstance(value, Mapping) and name in value else []


def _index(index: int) -> Step:
    def step(value: Any) -> list[Any]:
        if isinstance(value, list) and -len(value) <= index < len(value):
            return [value[index]]
        return []

    return step


def _all_items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.values())
    return []


def _filter(subpath: list[str], op: str | None, literal: Any) -> Step:
    def matches(item: Any) -> bool:
        found: Any = item
        for name in subpath:
            if not isinstance(found, Mapping) or name not in found:
                return False
            found = found[name]
        if op is None:
            return True
        return bool(found == literal) == (op == "==")

    return lambda value: [item for item in value if matches(item)] if isinstance(value, list) else []
