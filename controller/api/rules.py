"""Cross-field rules declared once, enforced twice.

Each rule carries the CEL expression the API server evaluates
(``x-kubernetes-validations``) and the same check in Python, which the operator
runs on every pool it reads. The API server refuses a bad object up front; the
operator catches what got in anyway (an older CRD, a cluster with CEL off) and
reports it through ``SpecValid=False`` instead of acting on it.

Keep the CEL and the Python side of a rule next to each other: a property test
evaluates both on generated objects and fails when they disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticCustomError

__all__ = ["CrossFieldRule", "SchemaMaxLength", "check_rules"]


@dataclass(frozen=True)
class CrossFieldRule:
    """One validation rule of an object: CEL for the API server, Python for the operator."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    # The JSON path of the field the message is about, relative to the object the rule sits on.
    field_path: str = ""


def check_rules(model: Any, rules: tuple[CrossFieldRule, ...]) -> None:
    """Raise a pydantic error naming the first failing rule's field and message."""
    for rule in rules:
        if not rule.check(model):
            raise PydanticCustomError("cross_field", rule.message, {"field": rule.field_path})


@dataclass(frozen=True)
class SchemaMaxLength:
    """A maxLength the CRD declares where pydantic cannot carry one (an int-or-string value).

    The API server needs it to bound a CEL rule's estimated cost; the operator enforces the same
    bound through the rule's Python check.
    """

    max_length: int
