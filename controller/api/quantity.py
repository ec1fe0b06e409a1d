"""Kubernetes resource quantities as the real API server stores them: parsed, then written canonically.

A real server answers a Deployment with ``cpu: "0.5"`` and ``memory: 1024Mi`` as ``500m`` and
``1Gi``; an operator that compares what it sent with what it reads as strings patches forever.
So the operator renders quantities canonically, and the embedded API server
(``devkube/defaults.py``) stores them with this same code. Pure.
The rules (k8s.io/apimachinery pkg/api/resource/quantity.go, ParseQuantity and
CanonicalizeBytes; checked against kube-apiserver 1.36 by ``tests/fidelity``):

- the suffix decides the format: ``Ki``..``Ei`` binary, ``n``..``E`` (or none) decimal SI,
  ``e3``/``E-6`` decimal exponent;
- a binary quantity below 1024 or not a whole number is written as decimal SI;
- binary: the largest power of 1024 that divides the value; decimal: the largest exponent,
  a multiple of 3, that leaves a whole mantissa (``1500`` stays, ``2000`` becomes ``2k``);
- in a pod's resource lists values are first rounded up to milli precision
  (pkg/apis/core/v1/defaults.go, SetDefaults_ResourceList): ``1.2345m`` is stored as ``2m``;
- a string already in canonical form is kept as written (ParseQuantity's "reuse the string"
  case): ``1E3`` and ``+1`` stay, while ``1.5e3`` becomes ``1500``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["QUANTITY_PATTERN", "InvalidQuantity", "canonical", "parse"]

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_EXPONENT = re.compile(r"^([eE])([-+]?[0-9]+)$")


class InvalidQuantity(ValueError):
    pass


def _kept_as_written(text: str, *, round_to_milli: bool) -> bool:
    """ParseQuantity's fast path: the string is canonical already, so the server stores it unchanged."""
    match = re.match(QUANTITY_PATTERN, text.strip())
    parts = _NUMBER.match(match.group(1)) if match else None
    if not match or not parts:
        return False
    whole, fraction, suffix = parts.group(2) or "", parts.group(3) or "", match.group(2)
    shifted = whole + fraction
    if not shifted or len(shifted) > 18:
        return False
    if suffix in _BINARY:
        return not fraction and int(shifted) & 0x07 != 0
    exponent = _DECIMAL.get(suffix)
    if exponent is None and (found := _EXPONENT.match(suffix)):
        exponent = int(found.group(2))
    if exponent is None:
        return False
    scale = exponent - len(fraction)
    floor = -3 if round_to_milli else -9  # finer values are rounded, which rewrites the string
    return scale >= floor and scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


def parse(text: str) -> tuple[Fraction, str, str]:
    """(value, format, exponent letter): format is ``binary``, ``decimal`` or ``exponent``."""
    match = re.match(QUANTITY_PATTERN, text.strip())
    if not match:
        raise InvalidQuantity(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    number, suffix = match.groups()
    parts = _NUMBER.match(number)
    if not parts or not (parts.group(2) or parts.group(3)):
        raise InvalidQuantity(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    sign, whole, fraction = parts.group(1), parts.group(2) or "0", parts.group(3) or ""
    value = Fraction(int(whole + fraction), 10 ** len(fraction)) * (-1 if sign == "-" else 1)
    if suffix in _BINARY:
        return value * 2 ** _BINARY[suffix], "binary", ""
    if suffix in _DECIMAL:
        return value * Fraction(10) ** _DECIMAL[suffix], "decimal", ""
    exponent = _EXPONENT.match(suffix)
    if exponent:
        return value * Fraction(10) ** int(exponent.group(2)), "exponent", exponent.group(1)
    raise InvalidQuantity("unable to parse quantity's suffix")


def canonical(text: str, *, round_to_milli: bool = False) -> str:
    value, form, _letter = parse(text)
    if _kept_as_written(text, round_to_milli=round_to_milli):
        return text.strip()
    if round_to_milli:
        value = Fraction(math.ceil(value * 1000), 1000) if value >= 0 else -Fraction(math.ceil(-value * 1000), 1000)
    if value == 0:
        return "0"
    sign, value = ("-", -value) if value < 0 else ("", value)
    if form == "binary" and (value < 1024 or value.denominator != 1):
        form = "decimal"
    if form == "binary":
        mantissa, power = int(value), 0
        while power < 60 and mantissa % 1024 == 0:
            mantissa, power = mantissa // 1024, power + 10
        return f"{sign}{mantissa}{next(s for s, p in _BINARY.items() if p == power) if power else ''}"
    # Nano precision is the finest a quantity keeps; round up to it.
    mantissa, exponent = math.ceil(value * 10**9), -9
    while mantissa % 1000 == 0 and (form == "exponent" or exponent < 18):
        mantissa, exponent = mantissa // 1000, exponent + 3
    if form == "exponent":
        return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"
