"""manifests/monitoring/ as a kustomize Component: it builds with the operator's manifests, every object lands
in the operator's namespace, the dashboard ConfigMap is the JSON file with the sidecar's label, and the
Service reaches the operator's metrics port."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.monitoring.generate import DASHBOARD, MONITORING, PLAIN_RULES, REPO
from tests.support.tools import kubectl_binary

__all__: list[str] = []

MANIFESTS = REPO / "manifests"
OPERATOR_NAMESPACE = "poolpilot-system"
COMPONENT_LINE = "# components: [monitoring]"
# kubectl's client-side apply keeps the whole object in one annotation; all of an object's annotations
# together may not exceed 256 KiB (k8s.io/apimachinery validation, TotalAnnotationSizeLimitB).
ANNOTATIONS_LIMIT = 256 * 1024
KUBERNETES_VERSION = "1.30"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    """``kubectl kustomize manifests/`` with its commented components line turned on."""
    copy = tmp_path_factory.mktemp("kustomize") / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization = copy / "Kustomization"
    text = kustomization.read_text()
    assert COMPONENT_LINE in text.splitlines(), f"manifests/Kustomization has no {COMPONENT_LINE!r} line"
    kustomization.write_text(text.replace(COMPONENT_LINE, COMPONENT_LINE.removeprefix("# ")))
    rendered = subprocess.run([kubectl_binary(), "kustomize", str(copy)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def _the(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def test_the_component_is_a_component() -> None:
    component = yaml.safe_load((MONITORING / "Kustomization").read_text())
    assert (component["apiVersion"], component["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")


def test_the_component_adds_the_monitoring_objects_in_the_operators_namespace(built: list[Obj]) -> None:
    monitoring = {(obj["kind"], obj["metadata"]["name"]) for obj in built
                  if obj["apiVersion"].startswith("monitoring.coreos.com/") or obj["kind"] in ("Service", "ConfigMap")}
    assert monitoring == {("Service", "poolpilot-metrics"), ("ServiceMonitor", "poolpilot"),
                          ("PodMonitor", "poolpilot-pool-replicas"), ("PrometheusRule", "poolpilot"),
                          ("ConfigMap", "poolpilot-grafana-dashboard")}
    for obj in built:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == OPERATOR_NAMESPACE, obj["metadata"]["name"]


def test_the_operator_alone_is_unchanged_without_the_component() -> None:
    rendered = subprocess.run([kubectl_binary(), "kustomize", str(MANIFESTS)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


def test_the_dashboard_configmap_is_the_json_file_for_grafanas_sidecar(built: list[Obj]) -> None:
    configmap = _the(built, "ConfigMap", "poolpilot-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(configmap["data"]) == ["poolpilot.json"]
    assert json.loads(configmap["data"]["poolpilot.json"]) == json.loads(DASHBOARD.read_text())
    assert len(json.dumps(configmap)) < ANNOTATIONS_LIMIT / 2, "too large for kubectl's client-side apply"


def test_the_built_prometheusrule_holds_the_plain_rules(built: list[Obj]) -> None:
    rule = _the(built, "PrometheusRule", "poolpilot")
    assert rule["spec"]["groups"] == yaml.safe_load(PLAIN_RULES.read_text())["groups"]


@pytest.mark.parametrize(("kind", "name"), [("Service", "poolpilot-metrics"),
                                            ("ConfigMap", "poolpilot-grafana-dashboard")])
def test_the_builtin_objects_validate(built: list[Obj], kind: str, name: str) -> None:
    kubernetes_validate.validate(_the(built, kind, name), KUBERNETES_VERSION, strict=True)


def test_the_service_selects_the_operators_pods(built: list[Obj]) -> None:
    service = _the(built, "Service", "poolpilot-metrics")
    deployment = _the(built, "Deployment", "poolpilot")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert port["port"] in {p["containerPort"] for p in container["ports"]}


def test_the_service_reaches_the_operators_port_by_name(built: list[Obj]) -> None:
    service = _the(built, "Service", "poolpilot-metrics")
    (container,) = _the(built, "Deployment", "poolpilot")["spec"]["template"]["spec"]["containers"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}


def test_no_plain_file_is_listed_as_a_kubernetes_object() -> None:
    component = yaml.safe_load((MONITORING / "Kustomization").read_text())
    for name in component["resources"]:
        for obj in yaml.safe_load_all((MONITORING / name).read_text()):
            assert {"apiVersion", "kind", "metadata"} <= obj.keys(), name
    plain = {"prometheus-rules.yaml", "scrape-configs.yaml", "grafana-dashboard.json"}
    assert plain <= {path.name for path in pathlib.Path(MONITORING).iterdir()}
    assert not plain & set(component["resources"])
