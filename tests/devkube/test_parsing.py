"""Pure functions: URL paths, selectors, JSONPath, ages, patches."""

from typing import Any

import pytest

from devkube import errors
from devkube.jsonpath import JsonPathError, evaluate
from devkube.patching import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
)
from devkube.paths import ApiPath, parse_api_path
from devkube.selectors import parse_field_selector, parse_label_selector
from devkube.tables import human_duration, wanted_table_version


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/namespaces", ApiPath("", "v1", "namespaces")),
        ("/api/v1/namespaces/ns1", ApiPath("", "v1", "namespaces", None, "ns1")),
        ("/api/v1/namespaces/ns1/status", ApiPath("", "v1", "namespaces", None, "ns1", "status")),
        ("/api/v1/namespaces/ns1/pods", ApiPath("", "v1", "pods", "ns1")),
        ("/api/v1/namespaces/ns1/pods/p1/log", ApiPath("", "v1", "pods", "ns1", "p1", "log")),
        ("/api/v1/pods", ApiPath("", "v1", "pods")),
        (
            "/apis/apps/v1/namespaces/ns1/deployments/d1/status",
            ApiPath("apps", "v1", "deployments", "ns1", "d1", "status"),
        ),
        ("/apis/example.dev/v1/workerpools", ApiPath("example.dev", "v1", "workerpools")),
        ("/api/v1", ApiPath("", "v1")),
        ("/apis/apps/v1", ApiPath("apps", "v1")),
        ("/apis/apps", None),
        ("/apis", None),
        ("/version", None),
    ],
)
def test_api_paths(path: str, expected: ApiPath | None) -> None:
    assert parse_api_path(path) == expected


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier in (a,b)", {"tier": "c"}, False),
        ("tier notin (a)", {}, True),
        ("tier notin (a)", {"tier": "a"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier in (a,b),!legacy", {"app": "web", "tier": "a"}, True),
        ("app=web,tier in (a,b),!legacy", {"app": "web", "tier": "a", "legacy": "1"}, False),
        ("size>2", {"size": "3"}, True),
        ("size<2", {"size": "3"}, False),
        ("example.dev/pool=p1", {"example.dev/pool": "p1"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector).matches({"metadata": {"labels": labels}}) is expected


def test_label_selector_syntax_errors_are_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        parse_label_selector("app in x")
    assert info.value.status == 400


EVENT = {
    "metadata": {"name": "e1", "namespace": "ns1"},
    "involvedObject": {"kind": "WorkerPool", "name": "p1", "namespace": "ns1", "uid": "u-1"},
    "reason": "Scaled",
    "type": "Normal",
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("involvedObject.name=p1", True),
        ("involvedObject.name==p1,involvedObject.namespace=ns1,involvedObject.uid=u-1", True),
        ("involvedObject.kind=WorkerPool,reason=Scaled,type=Normal", True),
        ("involvedObject.kind!=WorkerPool", False),
        ("type!=Warning", True),
        ("metadata.name=e1,metadata.namespace=ns1", True),
        ("metadata.name=e2", False),
    ],
)
def test_field_selectors_of_events(selector: str, expected: bool) -> None:
    assert parse_field_selector("events", selector).matches(EVENT) is expected


def test_unsupported_field_labels_are_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        parse_field_selector("deployments", "spec.replicas=3")
    assert info.value.status == 400
    assert "field label not supported" in str(info.value.message)


OBJ = {
    "metadata": {"name": "p1", "annotations": {"example.dev/owner": "team-a"}},
    "spec": {"replicas": 3, "pools": [{"name": "a"}, {"name": "b"}]},
    "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]},
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.replicas", [3]),
        (".spec.pools[1].name", ["b"]),
        (".spec.pools[-1].name", ["b"]),
        (".spec.pools[*].name", ["a", "b"]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type=='Synced')].status", ["False"]),
        ('.status.conditions[?(@.type!="Ready")].type', ["Synced"]),
        ('.status.conditions[?(@.type=="Missing")].status', []),
        (".metadata.annotations.example\\.dev/owner", ["team-a"]),
        (".metadata.annotations['example.dev/owner']", ["team-a"]),
        ("{.spec.replicas}", [3]),
        (".status.phase", []),
    ],
)
def test_jsonpath(path: str, expected: list[Any]) -> None:
    assert evaluate(path, OBJ) == expected


def test_jsonpath_rejects_unsupported_syntax() -> None:
    with pytest.raises(JsonPathError):
        evaluate("..name", OBJ)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (190, "3m10s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 120, "3h2m"),
        (9 * 3600, "9h"),
        (4 * 86400, "4d"),
        (4 * 86400 + 3600, "4d1h"),
        (30 * 86400, "30d"),
        (800 * 86400, "2y70d"),
        (3000 * 86400, "8y"),
    ],
)
def test_human_duration_like_kubectl(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_table_negotiation() -> None:
    kubectl = ",".join(
        [
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            "application/json",
        ]
    )
    assert wanted_table_version(kubectl) == "meta.k8s.io/v1"
    assert wanted_table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "meta.k8s.io/v1beta1"
    assert wanted_table_version("application/json") is None
    assert wanted_table_version(None) is None


def test_merge_patch_deletes_with_null_and_replaces_lists() -> None:
    current = {"spec": {"a": 1, "b": 2, "items": [1, 2, 3]}, "keep": True}
    patched = apply_patch(MERGE_PATCH, current, {"spec": {"a": None, "items": [9], "c": {"d": 4}}})
    assert patched == {"spec": {"b": 2, "items": [9], "c": {"d": 4}}, "keep": True}
    assert current == {"spec": {"a": 1, "b": 2, "items": [1, 2, 3]}, "keep": True}  # not mutated


def test_json_patch_operations_and_failing_tests() -> None:
    current = {"spec": {"replicas": 1, "tags": ["a"]}}
    patched = apply_patch(
        JSON_PATCH,
        current,
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 2},
            {"op": "add", "path": "/spec/tags/-", "value": "b"},
            {"op": "remove", "path": "/spec/tags/0"},
        ],
    )
    assert patched == {"spec": {"replicas": 2, "tags": ["b"]}}
    with pytest.raises(PatchError):
        apply_patch(JSON_PATCH, current, [{"op": "test", "path": "/spec/replicas", "value": 5}])


def test_strategic_merge_patch_merges_named_lists() -> None:
    current = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        },
                        {"name": "sidecar", "image": "sc:1"},
                    ]
                }
            }
        }
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:2",
                            "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                        },
                    ],
                }
            }
        }
    }
    patched = apply_patch(STRATEGIC_MERGE_PATCH, current, patch)
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert containers == [
        {"name": "sidecar", "image": "sc:1"},
        # A new item goes before an original one it cannot be ordered against, as on a real server
        # (apimachinery strategicpatch normalizeElementOrder; tests/fidelity checks it on one).
        {"name": "app", "image": "app:2", "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "1"}]},
    ]


def test_strategic_merge_patch_directives() -> None:
    current = {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {}}},
        "data": {"x": 1},
        "ports": [{"port": 80, "name": "http"}],
    }
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": None},
        "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}},
        "data": {"$patch": "replace", "y": 2},
        "ports": [{"port": 443, "name": "https"}],
    }
    patched = apply_patch(STRATEGIC_MERGE_PATCH, current, patch)
    assert patched == {
        "metadata": {"finalizers": ["b"]},
        "spec": {"strategy": {"type": "Recreate"}},
        "data": {"y": 2},
        "ports": [{"port": 443, "name": "https"}, {"port": 80, "name": "http"}],  # new items first, as for real
    }
