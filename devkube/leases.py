"""
``coordination.k8s.io/v1`` Leases as kube-apiserver decodes, stores and validates them.

* Decoding (a 400 on a POST or PUT body; on a PATCH the patched object fails with 422): the spec is
  decoded into Go's ``LeaseSpec`` (k8s.io/api/coordination/v1/types.go), so a field of the wrong JSON
  type fails with encoding/json's words, and unknown fields are dropped. ``acquireTime`` and
  ``renewTime`` are ``metav1.MicroTime``: parsed with exactly the layout
  ``2006-01-02T15:04:05.000000Z07:00`` (staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/micro_time.go,
  ``UnmarshalJSON``) — no fraction, three or nine digits are refused, with the errors of Go's
  ``time.Parse`` — and stored in UTC in that layout (``MarshalJSON``): ``2026-12-03T12:00:00.123456Z``.
  ``strategy`` and ``preferredHolder`` are dropped: they belong to the CoordinatedLeaderElection
  feature gate, off by default.
* Validation (422), pkg/apis/coordination/validation/validation.go ``ValidateLeaseSpec``:
  ``leaseDurationSeconds`` > 0 and ``leaseTransitions`` >= 0 when set. ``holderIdentity`` has no limit.
* The registry's strategy (pkg/registry/coordination/lease/strategy.go): a PUT of a missing Lease
  creates it (``AllowCreateOnUpdate``), and a PUT of an existing one must carry its resourceVersion
  (``AllowUnconditionalUpdate`` is false).

Not reproduced: the ``Warning`` headers naming the unknown fields dropped, and metadata.generation
(kube-apiserver keeps none for Leases; the embedded store keeps one for every kind).
"""

from __future__ import annotations

import calendar
import datetime
import json
from collections.abc import Mapping
from typing import Any

from devkube.errors import FieldProblem

__all__ = [
    "MICRO_TIME_LAYOUT",
    "FieldProblem",
    "LeaseDecodeError",
    "decode_lease",
    "format_micro_time",
    "parse_micro_time",
    "validate_lease",
]

MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_INT32 = (-(2**31), 2**31 - 1)
# Go's LeaseSpec: JSON name -> the Go type encoding/json names in its errors.
_SPEC_FIELDS = {
    "holderIdentity": "string",
    "leaseDurationSeconds": "int32",
    "acquireTime": "MicroTime",
    "renewTime": "MicroTime",
    "leaseTransitions": "int32",
    "strategy": "v1.CoordinatedLeaseStrategy",
    "preferredHolder": "string",
}
_GATED_FIELDS = ("strategy", "preferredHolder")  # CoordinatedLeaderElection, off by default


class LeaseDecodeError(ValueError):
    """The body cannot be decoded into a Lease; the message is the decoder's."""


class _TimeParseError(ValueError):
    pass


def format_micro_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits, as MicroTime marshals itself."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime.datetime:
    """Go's ``time.Parse(RFC3339Micro, text)``; raises ``LeaseDecodeError`` with Go's message."""
    try:
        return _parse_layout(text)
    except _TimeParseError as error:
        raise LeaseDecodeError(str(error)) from None


def decode_lease(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease as the server stores it: known spec fields, each of its Go type, times canonical."""
    obj = {key: body[key] for key in ("apiVersion", "kind", "metadata") if key in body}
    spec = body.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise LeaseDecodeError(f"json: cannot unmarshal {_json_kind(spec)} into Go struct field Lease.spec "
                               "of type v1.LeaseSpec")
    decoded: dict[str, Any] = {}
    for name, go_type in _SPEC_FIELDS.items():
        value = spec.get(name)
        if value is None:
            continue  # null leaves a pointer field unset
        decoded[name] = _decode_field(name, go_type, value)
    for name in _GATED_FIELDS:
        decoded.pop(name, None)
    obj["spec"] = decoded  # a struct, not a pointer: `spec: {}` even when the body had none
    return obj


def validate_lease(obj: Mapping[str, Any]) -> list[FieldProblem]:
    spec = obj.get("spec") or {}
    problems = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        problems.append(FieldProblem("spec.leaseDurationSeconds", str(duration), "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        problems.append(FieldProblem("spec.leaseTransitions", str(transitions), "must be greater than or equal to 0"))
    return problems


def _decode_field(name: str, go_type: str, value: Any) -> Any:
    wanted = "string" if go_type in ("MicroTime", "v1.CoordinatedLeaseStrategy") else go_type
    if wanted == "string":
        if not isinstance(value, str):
            raise _unmarshal_error(value, name, go_type if go_type != "MicroTime" else "string")
        return format_micro_time(parse_micro_time(value)) if go_type == "MicroTime" else value
    # int32: a JSON number with no fraction, in range; encoding/json quotes the number otherwise.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unmarshal_error(value, name, go_type)
    if isinstance(value, float) or not _INT32[0] <= value <= _INT32[1]:
        raise LeaseDecodeError(f"json: cannot unmarshal number {json.dumps(value)} into Go struct field "
                               f"LeaseSpec.spec.{name} of type {go_type}")
    return value


def _unmarshal_error(value: Any, name: str, go_type: str) -> LeaseDecodeError:
    return LeaseDecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go struct field LeaseSpec.spec.{name} "
                            f"of type {go_type}")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --- Go's time.Parse, for the one layout MicroTime uses (src/time/format.go) ---------------------------


def _parse_layout(value: str) -> datetime.datetime:
    original = value

    def bad(remaining: str, element: str) -> _TimeParseError:
        return _TimeParseError(f'parsing time {_quote(original)} as {_quote(MICRO_TIME_LAYOUT)}: '
                               f'cannot parse {_quote(remaining)} as {_quote(element)}')

    def out_of_range(what: str) -> _TimeParseError:
        return _TimeParseError(f"parsing time {_quote(original)}: {what} out of range")

    def literal(remaining: str, prefix: str) -> str:
        if not remaining.startswith(prefix):
            raise bad(remaining, prefix)
        return remaining[len(prefix):]

    if len(value) < 4 or not value[0].isdigit() or not value[:4].isdigit():
        raise bad(value, "2006")
    year, value = int(value[:4]), value[4:]
    value = literal(value, "-")
    month, value = _number(value, fixed=True, error=bad(value, "01"))
    if not 1 <= month <= 12:
        raise out_of_range("month")
    value = literal(value, "-")
    # Go takes one or two digits for the day here and checks it against the month at the end.
    day, value = _number(value, fixed=True, error=bad(value, "02"))
    value = literal(value, "T")
    hour, value = _number(value, fixed=False, error=bad(value, "15"))
    if hour >= 24:
        raise out_of_range("hour")
    value = literal(value, ":")
    minute, value = _number(value, fixed=True, error=bad(value, "04"))
    if minute >= 60:
        raise out_of_range("minute")
    value = literal(value, ":")
    second, value = _number(value, fixed=True, error=bad(value, "05"))
    if second >= 60:
        raise out_of_range("second")
    # stdFracSecond0: exactly six digits after the period.
    fraction = value[:7]
    if len(value) < 7 or fraction[0] not in ".," or not fraction[1:].isdigit():
        raise bad(value, ".000000")
    microsecond, value = int(fraction[1:]), value[7:]
    offset, value = _zone(value, bad, out_of_range)
    if value:
        raise _TimeParseError(f"parsing time {_quote(original)}: extra text: {_quote(value)}")
    if not 1 <= day <= calendar.monthrange(max(year, 1), month)[1] or year == 0:
        raise out_of_range("day")
    # Naive arithmetic, not a tzinfo: Go allows an offset of 24 hours, Python's timezone does not.
    local = datetime.datetime(year, month, day, hour, minute, second, microsecond)
    return (local - datetime.timedelta(seconds=offset)).replace(tzinfo=datetime.UTC)


def _number(value: str, *, fixed: bool, error: _TimeParseError) -> tuple[int, str]:
    """Go's getnum: one or two digits (two when ``fixed``)."""
    if not value[:1].isdigit():
        raise error
    if not value[1:2].isdigit():
        if fixed:
            raise error
        return int(value[0]), value[1:]
    return int(value[:2]), value[2:]


def _zone(value: str, bad: Any, out_of_range: Any) -> tuple[int, str]:
    """stdISO8601ColonTZ: ``Z``, or ``±hh:mm``; returns the offset in seconds and the rest."""
    if value.startswith("Z"):
        return 0, value[1:]
    if len(value) < 6 or value[3] != ":" or not (value[1:3].isdigit() and value[4:6].isdigit()) \
            or value[0] not in "+-":
        raise bad(value, "Z07:00")
    hours, minutes = int(value[1:3]), int(value[4:6])
    if hours > 24:
        raise out_of_range("time zone offset hour")
    if minutes > 60:
        raise out_of_range("time zone offset minute")
    offset = (hours * 60 + minutes) * 60
    return (-offset if value[0] == "-" else offset), value[6:]


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
