"""fallback.route httpRoute against the embedded API server, with a hand-written HTTPRoute CRD: the weights
per mode, nothing else touched, no write when they are right, and clear failures."""

from __future__ import annotations

import asyncio
import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from controller.api.spec import InferencePoolSpec
from controller.api.status import FallbackMode
from controller.core.plan import AppliedChange
from controller.kube.client import KubeApi, build_api_client
from controller.kube.httproute import GATEWAY_GROUP, GATEWAY_VERSION, route_weights, set_route_weights, weight_patch
from controller.kube.render import PoolRef
from devkube import DevCluster

NS = "team-a"
POOL = PoolRef("llama", NS, "pool-uid")
CRD = pathlib.Path(__file__).parent / "data" / "httproute-crd.yaml"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(crd_paths=[CRD], namespaces=[NS, "gateways"], fake_pods=False) as c:
        yield c


def spec(route: str = "llama", namespace: str | None = None) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate({"model": {"name": "m"}, "fallback": {
        "enabled": True, "route": "httpRoute", "provider": {"baseURL": "http://api/v1", "model": "m"},
        "httpRoute": {"name": route, **({"namespace": namespace} if namespace else {})}}})


def a_route(rules: list[dict[str, Any]], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "llama", "namespace": namespace, "labels": {"team": "a"}},
        "spec": {"parentRefs": [{"name": "public", "namespace": "gateways"}], "hostnames": ["llm.example.com"],
                 "rules": rules},
    }


SPLIT_RULE = {
    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}],
    "backendRefs": [{"name": "llama", "port": 8000},
                    {"name": "hosted-api", "port": 443, "weight": 0}],
}
OTHER_RULE = {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
              "backendRefs": [{"name": "admin", "port": 80, "weight": 7}]}


def create_route(cluster: DevCluster, route: dict[str, Any]) -> None:
    cluster.create(f"{GATEWAY_GROUP}/{GATEWAY_VERSION}/httproutes", route)


def live_route(cluster: DevCluster, namespace: str = NS) -> dict[str, Any]:
    found = cluster.get(f"{GATEWAY_GROUP}/{GATEWAY_VERSION}/httproutes", namespace, "llama")
    assert found is not None
    return found


def set_weights(cluster: DevCluster, mode: FallbackMode, pool_spec: InferencePoolSpec | None = None
                ) -> AppliedChange | None:
    async def run() -> AppliedChange | None:
        api = KubeApi(build_api_client(str(cluster.kubeconfig_path)))
        try:
            return await set_route_weights(api, POOL, pool_spec or spec(), mode)
        finally:
            api.close()

    return asyncio.run(run())


def weights(route: dict[str, Any]) -> list[list[int | None]]:
    return [[ref.get("weight") for ref in rule.get("backendRefs", [])] for rule in route["spec"]["rules"]]


def without_weights_and_metadata(route: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(route)
    for rule in stripped["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            ref.pop("weight", None)
    for key in ("resourceVersion", "generation", "managedFields"):
        stripped["metadata"].pop(key, None)
    return stripped


@pytest.mark.parametrize(("mode", "expected"), [
    ("Off", [[100, 0], [7]]), ("Overflow", [[50, 50], [7]]), ("Full", [[0, 100], [7]])])
def test_the_weights_follow_the_mode_and_nothing_else_changes(cluster: DevCluster, mode: FallbackMode,
                                                              expected: list[list[int]]) -> None:
    create_route(cluster, a_route([SPLIT_RULE, OTHER_RULE]))
    before = live_route(cluster)
    change = set_weights(cluster, mode)
    assert change is not None and change.action == "updated", change
    after = live_route(cluster)
    assert weights(after) == expected
    assert without_weights_and_metadata(after) == without_weights_and_metadata(before)
    assert after.get("status") == before.get("status")


def test_weights_already_right_are_not_written(cluster: DevCluster) -> None:
    create_route(cluster, a_route([SPLIT_RULE, OTHER_RULE]))
    assert set_weights(cluster, "Full") is not None
    mark = cluster.mark()
    assert set_weights(cluster, "Full") is None
    assert cluster.writes(mark) == []
    # The pool's ref had no weight (the Gateway API's default is 1): Off must write it, then never again.
    assert set_weights(cluster, "Off") is not None
    assert set_weights(cluster, "Off") is None


def test_several_fallbacks_share_the_fallbacks_part_and_the_pool_keeps_its_share(cluster: DevCluster) -> None:
    rule = {"backendRefs": [{"name": "api-a", "port": 443}, {"group": "", "kind": "Service", "name": "llama",
                                                              "port": 8000}, {"name": "api-b", "port": 443}]}
    create_route(cluster, a_route([rule]))
    change = set_weights(cluster, "Overflow")
    assert change is not None and change.fields == ("spec.rules[0].backendRefs[0].weight",
                                                    "spec.rules[0].backendRefs[1].weight",
                                                    "spec.rules[0].backendRefs[2].weight")
    assert weights(live_route(cluster)) == [[50, 100, 50]]  # the pool: 100 of 200, half


def test_the_route_may_live_in_another_namespace(cluster: DevCluster) -> None:
    rule = {"backendRefs": [{"name": "llama", "namespace": NS, "port": 8000},
                            {"name": "llama", "port": 8000}]}  # this one is gateways/llama: a fallback
    create_route(cluster, a_route([rule], namespace="gateways"))
    change = set_weights(cluster, "Full", spec(namespace="gateways"))
    assert change is not None and change.action == "updated"
    assert weights(live_route(cluster, "gateways")) == [[0, 100]]


@pytest.mark.parametrize(("rules", "message"), [
    ([OTHER_RULE], "no rule has a backendRef to Service llama"),
    ([{"backendRefs": [{"name": "llama", "port": 8000}]}], "rule 0 sends to Service llama but names no fallback"),
    ([{"backendRefs": [{"kind": "Backend", "group": "gateway.envoyproxy.io", "name": "llama"},
                       {"name": "api"}]}], "no rule has a backendRef to Service llama"),
])
def test_a_route_without_the_pools_backend_or_a_fallback_fails_clearly(cluster: DevCluster,
                                                                       rules: list[dict[str, Any]],
                                                                       message: str) -> None:
    create_route(cluster, a_route(rules))
    before = live_route(cluster)
    change = set_weights(cluster, "Full")
    assert change is not None and change.action == "failed"
    assert message in change.message
    assert live_route(cluster) == before


def test_a_missing_route_fails_clearly(cluster: DevCluster) -> None:
    change = set_weights(cluster, "Full", spec(route="nowhere"))
    assert change == AppliedChange("HTTPRoute", "nowhere", "failed",
                                   message="HTTPRoute team-a/nowhere not found (is the Gateway API installed?)")


def test_a_missing_httproute_kind_fails_clearly() -> None:
    with DevCluster.in_thread(namespaces=[NS], fake_pods=False) as cluster:  # no Gateway API CRDs
        change = set_weights(cluster, "Off")
    assert change is not None and change.action == "failed" and "not found" in change.message


def test_a_write_prepared_from_an_older_read_is_refused_not_applied(cluster: DevCluster) -> None:
    """What makes a concurrent edit safe: the patch tests the resourceVersion it was computed from."""
    create_route(cluster, a_route([SPLIT_RULE]))
    read = live_route(cluster)
    operations, _ = weight_patch(read, route_weights(read, POOL, "Full")[0])
    api_client = build_api_client(str(cluster.kubeconfig_path))
    custom = kubernetes.client.CustomObjectsApi(api_client)
    try:
        custom.patch_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, "httproutes", "llama",
                                              {"spec": {"hostnames": ["other.example.com"]}},
                                              _content_type="application/merge-patch+json")
        with pytest.raises(ApiException) as refused:
            custom.patch_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, NS, "httproutes", "llama",
                                                  operations, _content_type="application/json-patch+json")
        assert refused.value.status == 422
    finally:
        api_client.close()
    assert weights(live_route(cluster)) == [[None, 0]]
    # set_route_weights itself reads again and writes over the new version.
    change = set_weights(cluster, "Full")
    assert change is not None and change.action == "updated"
    assert live_route(cluster)["spec"]["hostnames"] == ["other.example.com"]
    assert weights(live_route(cluster)) == [[0, 100]]
