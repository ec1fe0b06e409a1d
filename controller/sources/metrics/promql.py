"""Build PromQL from values we do not control, without letting them change the query.

Namespace names come from the operator's settings and label values come from users;
pasted into a query unescaped, a value such as ``x"} or vector(1) #`` would turn a
selector into a different query, and ``.*`` in a regex matcher would widen it to every
namespace. Everything here is pure: strings in, query text out.

Two layers of escaping, applied in this order for regex matchers:

1. :func:`regex_escape` makes a value match only itself in RE2 (Prometheus' regex
   engine, which anchors every matcher as ``^(?:...)$``).
2. :func:`quote` makes any text a PromQL double-quoted string literal. PromQL
   unquotes with Go's rules: ``\\\\``, ``\\"``, ``\\n``, ``\\r``, ``\\t`` and
   ``\\uXXXX`` are understood, and a raw newline ends the query with an error, so
   every control character is escaped. The escapes used are also valid JSON, which
   the tests use to check the round trip.

Label and metric names cannot be quoted in PromQL at all, so they are validated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MatchOp",
    "Matcher",
    "aggregate",
    "quote",
    "regex_alternatives",
    "regex_escape",
    "selector",
    "validate_label_name",
    "validate_metric_name",
]

MatchOp = Literal["=", "!=", "=~", "!~"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_RE2_META = frozenset("\\.+*?()|[]{}^$")
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_OPS: frozenset[str] = frozenset(("=", "!=", "=~", "!~"))


def quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal that unquotes to exactly ``value``."""
    out = ['"']
    for char in value:
        simple = _SIMPLE_ESCAPES.get(char)
        if simple is not None:
            out.append(simple)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            raise ValueError(f"not valid Unicode text (a lone surrogate) in {value!r}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def regex_escape(value: str) -> str:
    """A RE2 pattern that matches exactly ``value`` (its metacharacters made literal)."""
    return "".join(f"\\{char}" if char in _RE2_META else char for char in value)


def regex_alternatives(values: Iterable[str]) -> str:
    """A RE2 pattern matching exactly one of ``values`` (deduplicated, sorted for stable query text).

    An empty ``values`` is refused: ``=~""`` would match only series without the label,
    which is never what a caller that filters on a list of names means.
    """
    unique = sorted(set(values))
    if not unique:
        raise ValueError("regex_alternatives() needs at least one value")
    return "|".join(regex_escape(value) for value in unique)


def validate_label_name(name: str) -> str:
    if not _LABEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
    return name


def validate_metric_name(name: str) -> str:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"{name!r} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    return name


@dataclass(frozen=True)
class Matcher:
    """One label matcher. For ``=~``/``!~`` the value is a RE2 pattern (build it with
    :func:`regex_escape` or :func:`regex_alternatives` from user values); for ``=``/``!=``
    it is the literal value. Either way it is quoted when rendered."""

    label: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        validate_label_name(self.label)
        if self.op not in _OPS:
            raise ValueError(f"{self.op!r} is not a PromQL matcher operator")

    @classmethod
    def one_of(cls, label: str, values: Iterable[str]) -> Matcher:
        """``label=~"a|b"``: the label equals one of ``values`` exactly."""
        return cls(label, "=~", regex_alternatives(values))

    def __str__(self) -> str:
        return f"{self.label}{self.op}{quote(self.value)}"


def selector(metric: str, matchers: Sequence[Matcher] = ()) -> str:
    """``metric{m1,m2}`` (or the bare metric name without matchers)."""
    validate_metric_name(metric)
    if not matchers:
        return metric
    return f"{metric}{{{','.join(str(m) for m in matchers)}}}"


def aggregate(operator: Literal["sum", "avg", "max", "min", "count"], by: Sequence[str], expression: str) -> str:
    """``operator by (l1, l2) (expression)``; ``expression`` must already be safe PromQL."""
    labels = ", ".join(validate_label_name(label) for label in by)
    return f"{operator} by ({labels}) ({expression})"
