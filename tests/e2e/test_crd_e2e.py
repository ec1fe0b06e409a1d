"""The real API server's verdict on the CRD and on pools: schema, defaults, every CEL rule, the cost budget.

``tests/api`` runs the same tables through ``devkube/crd_schema.py``, which does what the
API server does; here the API server itself answers, so a rule over the CEL cost budget, an
expression that does not compile or a non-structural schema fails for real.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from controller.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from tests.support.backends import CRD_PATH, Backend, RealCluster
from tests.support.crd_cases import BAD_OBJECTS, BASE_SPEC, BROKEN_SCHEMAS, GOOD_OBJECTS, merged

Json = dict[str, Any]


def create_pool(backend: Backend, name: str, spec: Json, *, dry_run: bool = True) -> Json:
    body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": backend.namespace}, "spec": spec}
    created: Json = backend.kube.custom.create_namespaced_custom_object(
        API_GROUP, API_VERSION, backend.namespace, PLURAL, body, **({"dry_run": "All"} if dry_run else {}))
    return created


def test_the_checked_in_crd_is_established_with_its_schema_intact(real_cluster: RealCluster) -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    extensions = kubernetes.client.ApiextensionsV1Api(real_cluster.kube.api_client)
    stored = extensions.read_custom_resource_definition(crd["metadata"]["name"], _preload_content=False)
    stored_crd = yaml.safe_load(stored.data)
    conditions = {c["type"]: c["status"] for c in stored_crd["status"]["conditions"]}
    # NamesAccepted and Established; NonStructuralSchema would appear here if the schema were not structural.
    assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions
    (version,) = stored_crd["spec"]["versions"]
    # The server keeps every rule and default we declared (nothing pruned from the schema itself).
    assert version["schema"] == crd["spec"]["versions"][0]["schema"]


@pytest.mark.parametrize(("name", "patch", "message", "path"), BAD_OBJECTS)
def test_the_api_server_refuses_each_bad_pool_with_the_rules_message(
        backend: Backend, name: str, patch: Json, message: str, path: str) -> None:
    with pytest.raises(ApiException) as refused:
        create_pool(backend, name, merged(BASE_SPEC, patch))
    assert refused.value.status == 422, refused.value.body
    body = str(refused.value.body)
    assert message in body
    # The real server names the field the rule's fieldPath points at (the root for rules on the object).
    if path:
        assert path in body, body


@pytest.mark.parametrize(("name", "patch"), GOOD_OBJECTS)
def test_the_api_server_accepts_each_pool_at_the_edge_of_a_rule(backend: Backend, name: str, patch: Json) -> None:
    created = create_pool(backend, name, merged(BASE_SPEC, patch))
    assert created["metadata"]["name"] == name


def test_the_api_server_fills_the_schema_defaults(backend: Backend) -> None:
    created = create_pool(backend, "defaults", copy.deepcopy(BASE_SPEC))
    spec = created["spec"]
    assert spec["replicas"]["max"] >= spec["replicas"]["min"]
    assert spec["interruption"]["drainSeconds"] >= spec["interruption"]["preStopSeconds"] + 10
    assert spec["scaling"]["evaluationIntervalSeconds"] > 0
    assert spec["metrics"]["source"] in ("pods", "prometheus")


def _crd_with(fragment: Json, group: str) -> Json:
    plural = f"probes{uuid.uuid4().hex[:6]}"
    schema = {"type": "object", "properties": {"spec": {"type": "object", **copy.deepcopy(fragment)}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": plural, "kind": plural.capitalize()},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema}}]},
    }


def _create_crd(real_cluster: RealCluster, crd: Json) -> None:
    extensions = kubernetes.client.ApiextensionsV1Api(real_cluster.kube.api_client)
    extensions.create_custom_resource_definition(crd, dry_run="All")


@pytest.mark.parametrize(("broken", "complaint"), BROKEN_SCHEMAS)
def test_the_api_server_refuses_what_the_structural_check_refuses(
        real_cluster: RealCluster, broken: Json, complaint: str) -> None:
    if "has no description" in complaint:
        # Our own bar (every field documented for kubectl explain), not the API server's.
        _create_crd(real_cluster, _crd_with(broken, "probes.poolpilot.io"))
        return
    with pytest.raises(ApiException) as refused:
        _create_crd(real_cluster, _crd_with(broken, "probes.poolpilot.io"))
    assert refused.value.status == 422, refused.value.body


def test_a_rule_over_the_cel_cost_budget_is_refused(real_cluster: RealCluster) -> None:
    """Unbounded lists of unbounded strings make a nested all() too costly; bounding them fixes it."""
    def rule_on(items: Json) -> Json:
        return {"properties": {"names": {"type": "array", "items": items}},
                "x-kubernetes-validations": [{"rule": "self.names.all(a, self.names.all(b, a == b || a != b))",
                                              "message": "m"}]}

    with pytest.raises(ApiException) as refused:
        _create_crd(real_cluster, _crd_with(rule_on({"type": "string"}), "probes.poolpilot.io"))
    assert refused.value.status == 422
    assert "cost" in str(refused.value.body) and "budget" in str(refused.value.body)
    bounded = rule_on({"type": "string", "maxLength": 64})
    bounded["properties"]["names"]["maxItems"] = 16
    _create_crd(real_cluster, _crd_with(bounded, "probes.poolpilot.io"))
