import copy
import json
from typing import Any

from controller.kube.diff import (
    LAST_APPLIED_ANNOTATION,
    drifted_fields,
    merge_patch_for,
    replacing_patch,
    with_last_applied,
)

WANTED: dict[str, Any] = {
    "metadata": {"name": "d", "labels": {"a": "1"}},
    "spec": {"replicas": 2, "template": {"spec": {"nodeSelector": {"k": "v"},
                                                  "containers": [{"name": "vllm", "image": "i:1"}]}}},
}


def as_live(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the API server hands back: our fields, plus server-side defaults and metadata."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="u", resourceVersion="7", generation=1)
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["status"] = {"readyReplicas": 2}
    return live


def test_server_defaults_are_not_drift() -> None:
    wanted = with_last_applied(WANTED)
    assert merge_patch_for(wanted, as_live(wanted)) is None


def test_a_changed_field_is_patched_and_named() -> None:
    live = as_live(with_last_applied(WANTED))
    changed = copy.deepcopy(WANTED)
    changed["spec"]["replicas"] = 5
    patch = merge_patch_for(with_last_applied(changed), live)
    assert patch is not None and patch["spec"]["replicas"] == 5
    assert drifted_fields(changed, live) == ["spec.replicas"]


def test_a_field_we_stop_wanting_is_removed_with_null() -> None:
    live = as_live(with_last_applied(WANTED))
    changed = copy.deepcopy(WANTED)
    del changed["spec"]["template"]["spec"]["nodeSelector"]
    patch = merge_patch_for(with_last_applied(changed), live)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["nodeSelector"] is None
    assert json.loads(patch["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]) == changed


def test_hand_edits_to_our_fields_are_reverted() -> None:
    wanted = with_last_applied(WANTED)
    live = as_live(wanted)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "i:hacked"
    patch = merge_patch_for(wanted, live)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["containers"][0]["image"] == "i:1"


def test_list_length_changes_count_as_drift() -> None:
    wanted = with_last_applied(WANTED)
    live = as_live(wanted)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert merge_patch_for(wanted, live) is not None


def test_a_garbled_last_applied_annotation_falls_back_to_the_subset_check() -> None:
    wanted = with_last_applied(WANTED)
    live = as_live(wanted)
    live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = "{not json"
    patch = merge_patch_for(wanted, live)
    assert patch is not None  # the annotation itself differs, and is rewritten
    assert json.loads(patch["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]) == WANTED


def test_a_replacing_patch_nulls_what_became_empty_at_any_depth() -> None:
    previous = {"signals": {"queueDepth": 3, "kvCachePercent": 50}, "lastDecision": {"toReplicas": 2}}
    wanted = {"signals": {"queueDepth": 0}}
    assert replacing_patch(previous, wanted) == {"signals": {"queueDepth": 0, "kvCachePercent": None},
                                                 "lastDecision": None}
    assert replacing_patch(wanted, wanted) == wanted
