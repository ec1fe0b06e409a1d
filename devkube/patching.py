"""
The three PATCH content types of the Kubernetes API.

* ``application/merge-patch+json`` — RFC 7386: dicts merge, ``null`` deletes a key,
  lists are replaced whole. Kopf and ``patch_namespaced_custom_object`` send this.
* ``application/json-patch+json`` — RFC 6902 operations (via the ``jsonpatch`` library,
  a dependency of kmock). The ``kubernetes`` client sends this when the body is a list.
* ``application/strategic-merge-patch+json`` — **an approximation**: a merge patch, except
  that lists of objects are merged by a per-field merge key (below), and kubectl's directives
  ``$patch: delete|replace``, ``$setElementOrder/<list>``, ``$retainKeys`` and
  ``$deleteFromPrimitiveList/<list>`` are honoured. A real server takes the merge keys and
  strategies from the Go types of each kind, by the field's full path; here they are looked up
  by the field's name only, for the usual fields of workloads. The ``kubernetes`` client sends
  this for built-in kinds (``patch_namespaced_deployment(body=dict)``); ``kubectl apply`` sends
  it for built-in kinds. Custom resources reject it with 415, as a real server does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import jsonpointer

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = frozenset({MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH})

# The merge keys of lists of objects, by the list's field name (a real server knows them by path).
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars that merge as sets instead of being replaced.
_MERGED_SCALAR_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch cannot be applied (malformed, or a JSON-patch ``test`` failed)."""


def apply_patch(content_type: str, current: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == MERGE_PATCH:
        result = merge_patch(current, _require_dict(patch))
    elif media_type == JSON_PATCH:
        result = json_patch(current, patch)
    elif media_type == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(current, _require_dict(patch))
    else:
        raise LookupError(media_type)
    if not isinstance(result, dict):
        raise PatchError("the patch turns the object into a non-object")
    return result


def _require_dict(patch: Any) -> Mapping[str, Any]:
    if not isinstance(patch, Mapping):
        raise PatchError(f"a merge patch must be a JSON object, not {type(patch).__name__}")
    return patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Mapping[str, Any], patch: Any) -> Any:
    """RFC 6902 JSON Patch."""
    if not isinstance(patch, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    try:
        return jsonpatch.apply_patch(copy.deepcopy(dict(target)), patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, TypeError) as e:
        raise PatchError(f"the JSON patch cannot be applied: {e}") from e


def strategic_merge_patch(target: Any, patch: Mapping[str, Any]) -> Any:
    """An approximation of the strategic merge patch (see the module docstring)."""
    if patch.get("$patch") == "replace":
        return _strip_directives(patch)
    result: dict[str, Any] = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue  # ordering and retaining directives are applied after the merge
        elif value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, Mapping):
            result[key] = strategic_merge_patch(result.get(key), value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    _apply_element_orders(result, patch)
    if isinstance(patch.get("$retainKeys"), list):
        retained = set(patch["$retainKeys"])
        result = {key: value for key, value in result.items() if key in retained}
    return result


def _merge_list(field: str, current: Any, patch_items: list[Any]) -> list[Any]:
    current_items: list[Any] = list(current) if isinstance(current, list) else []
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch_items):
        return [_strip_directives(item) for item in patch_items if not _is_directive_only(item)]
    if field in _MERGED_SCALAR_LISTS:
        merged = current_items + [item for item in patch_items if item not in current_items]
        return _server_order(merged, patch_items, current_items, lambda item: item)
    merge_key = _merge_key(field, patch_items)
    if merge_key is None:
        return [_strip_directives(item) for item in patch_items]
    return _merge_object_list(merge_key, current_items, patch_items)


def _merge_key(field: str, patch_items: list[Any]) -> str | None:
    if not patch_items or not all(isinstance(item, Mapping) for item in patch_items):
        return None
    if field == "ports":  # container ports merge by containerPort, service ports by port
        return "containerPort" if any("containerPort" in item for item in patch_items) else "port"
    return _MERGE_KEYS.get(field)


def _merge_object_list(merge_key: str, current: list[Any], patch_items: list[Any]) -> list[Any]:
    result = copy.deepcopy(current)
    for item in patch_items:
        if merge_key not in item:
            return [_strip_directives(item) for item in patch_items]  # not mergeable: replace whole
        index = next((i for i, old in enumerate(result) if _key_of(old, merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    kept = [item for item in patch_items if item.get("$patch") != "delete"]
    return _server_order(result, kept, current, lambda item: _key_of(item, merge_key))


def _server_order(merged: list[Any], patch_items: list[Any], original: list[Any],
                  key: Callable[[Any], Any]) -> list[Any]:
    """The order a real server gives a merged list (apimachinery strategicpatch, normalizeElementOrder):
    the patch's items in the patch's order, the others in their original order, interleaved where
    the original orders both, and a new item before an original one it cannot be ordered against."""
    patch_keys = [key(item) for item in patch_items]
    original_keys = [key(item) for item in original]
    from_patch = sorted((i for i in merged if key(i) in patch_keys), key=lambda i: patch_keys.index(key(i)))
    server_only = [i for i in merged if key(i) not in patch_keys]
    server_only.sort(key=lambda i: original_keys.index(key(i)) if key(i) in original_keys else len(original_keys))
    ordered: list[Any] = []
    left, right = 0, 0
    while left < len(server_only) or right < len(from_patch):
        if right >= len(from_patch) or (left < len(server_only) and _before(
                key(server_only[left]), key(from_patch[right]), original_keys)):
            ordered.append(server_only[left])
            left += 1
        else:
            ordered.append(from_patch[right])
            right += 1
    return ordered


def _before(left: Any, right: Any, original_keys: list[Any]) -> bool:
    if left in original_keys and right in original_keys:
        return original_keys.index(left) < original_keys.index(right)
    return False


def _key_of(item: Any, merge_key: str) -> Any:
    return item.get(merge_key) if isinstance(item, Mapping) else None


def _apply_element_orders(result: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """``$setElementOrder/containers: [{name: b}, {name: a}]`` — reorder by the given keys."""
    for key, order in patch.items():
        field = key.removeprefix("$setElementOrder/")
        items = result.get(field)
        if field == key or not isinstance(items, list) or not isinstance(order, list) or not order:
            continue
        # Entries are {mergeKey: value} for lists of objects, or the plain values for lists of scalars.
        merge_key = next(iter(order[0])) if isinstance(order[0], Mapping) and order[0] else None
        ranks = {_order_token(entry, merge_key): rank for rank, entry in enumerate(order)}
        result[field] = sorted(items, key=lambda item: ranks.get(_order_token(item, merge_key), len(ranks)))


def _order_token(item: Any, merge_key: str | None) -> str:
    value = item.get(merge_key) if merge_key is not None and isinstance(item, Mapping) else item
    return repr(value)


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, Mapping) and all(str(key).startswith("$") for key in item)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_directives(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return copy.deepcopy(value)
