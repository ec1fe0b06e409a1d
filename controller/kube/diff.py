"""Decide whether an owned object needs a write, and what patch makes it right. Pure.

The live object is compared with what we want as a subset: the API server adds
defaults (``imagePullPolicy``, ``protocol``, ...) that must not count as drift.
A subset test cannot see a field we stopped wanting, so the last manifest we
applied rides along in an annotation (as ``kubectl apply`` does) and every key
it has that the new manifest lacks is sent as ``null`` in the merge patch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controller.api.spec import API_GROUP

__all__ = ["LAST_APPLIED_ANNOTATION", "drifted_fields", "last_applied", "last_applied_text", "merge_patch_for",
           "replacing_patch", "with_last_applied"]

LAST_APPLIED_ANNOTATION = f"{API_GROUP}/last-applied"

Manifest = dict[str, Any]


def _is_subset(wanted: Any, live: Any) -> bool:
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and _is_subset(value, live[key]) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (isinstance(live, list) and len(wanted) == len(live)
                and all(_is_subset(w, v) for w, v in zip(wanted, live, strict=True)))
    return bool(wanted == live)


def drifted_fields(wanted: Mapping[str, Any], live: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the fields whose live value is not what we want (defaults ignored)."""
    drifted: list[str] = []
    for key, value in wanted.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in live:
            drifted.append(path)
        elif isinstance(value, Mapping) and isinstance(live[key], Mapping):
            drifted.extend(drifted_fields(value, live[key], path))
        elif not _is_subset(value, live[key]):
            drifted.append(path)
    return drifted


def last_applied_text(manifest: Mapping[str, Any]) -> str | None:
    """The last-applied annotation as stored: a JSON string, or None."""
    text = ((manifest.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    return text if isinstance(text, str) else None


def last_applied(live: Mapping[str, Any]) -> Manifest | None:
    raw = last_applied_text(live)
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None  # a hand-edited annotation: fall back to a plain subset comparison
    return parsed if isinstance(parsed, dict) else None


def with_last_applied(manifest: Mapping[str, Any]) -> Manifest:
    """The manifest with its own compact JSON in the last-applied annotation."""
    metadata = dict(manifest.get("metadata", {}))
    annotations = dict(metadata.get("annotations", {}))
    annotations[LAST_APPLIED_ANNOTATION] = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    metadata["annotations"] = annotations
    return {**manifest, "metadata": metadata}


def _removals(previous: Mapping[str, Any], wanted: Mapping[str, Any]) -> Manifest:
    """A merge patch that nulls the keys ``previous`` had and ``wanted`` dropped (lists are replaced whole)."""
    patch: Manifest = {}
    for key, old_value in previous.items():
        if key not in wanted:
            patch[key] = None
        elif isinstance(old_value, Mapping) and isinstance(wanted[key], Mapping):
            nested = _removals(old_value, wanted[key])
            if nested:
                patch[key] = nested
    return patch


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> Manifest:
    merged: Manifest = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_patch_for(wanted: Mapping[str, Any], live: Mapping[str, Any]) -> Manifest | None:
    """The merge patch that brings ``live`` to ``wanted``, or None when nothing differs.

    ``wanted`` must already carry its last-applied annotation (see :func:`with_last_applied`).
    """
    previous = last_applied(live)
    removals = _removals(previous, _strip_last_applied(wanted)) if previous else {}
    if not removals and not drifted_fields(wanted, live):
        return None
    return _deep_merge(dict(wanted), removals)


def replacing_patch(previous: Mapping[str, Any], wanted: Mapping[str, Any]) -> Manifest:
    """The merge patch that turns ``previous`` into exactly ``wanted``: what it no longer has is nulled.

    A merge patch keeps every key it does not mention (RFC 7386), so a status field that became
    empty would stay in the object, stale, without its null.
    """
    return _deep_merge(dict(wanted), _removals(previous, wanted))


def _strip_last_applied(manifest: Mapping[str, Any]) -> Manifest:
    metadata = dict(manifest.get("metadata", {}))
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if k != LAST_APPLIED_ANNOTATION}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return {**manifest, "metadata": metadata}
