"""One real Prometheus for the monitoring tests, configured from manifests/monitoring/ itself
(the session fixture ``monitoring_world`` of tests/monitoring/conftest.py).

It runs the scrape jobs of ``scrape-configs.yaml`` exactly as written but for their service discovery:
``kubernetes_sd_configs`` becomes ``file_sd_configs`` over targets that carry the meta labels Kubernetes
discovery would give them (Prometheus' discovery/kubernetes/pod.go and endpoints.go), for pods whose labels
and ports are what controller/kube/render.py renders. Beside them, a third job is the PodMonitor as the
Prometheus Operator translates it. It loads the rules of ``prometheus-rules.yaml``. The targets:

- the operator: a leader and a standby serving every series of the metric contract
  (tests/monitoring/operator_metrics.py), and an endpoint of another Service that must be dropped;
- the pool ``llama-8b`` (manifests/examples/spot-fallback-pool.yaml) in namespace ``llm``: two spot
  replicas, an on-demand one, one released for a reclaim (still serving) and the router, all fake vLLM
  (devkube/fakevllm.py) or the router's fake metrics; and pods that must be dropped: one not managed by
  PoolPilot, one managed with another port, one that Succeeded, one managed that is neither replica nor router;
- the same pods again in namespace ``llm-podmonitor`` for the PodMonitor's job (same fake servers).

Scrapes every second (the jobs' own intervals are the one other change); everything on loopback.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from controller.api.spec import InferencePoolSpec
from controller.core.capacity import CapacityType
from controller.core.notices import NoticeKind
from controller.core.pool import validate_pool
from controller.core.replicas import DrainMark, DrainStage
from controller.kube.render import (
    MANAGED_BY_LABEL,
    PoolRef,
    release_patch,
    render_deployment,
    render_router_deployment,
)
from devkube.fakevllm import FakeVLLMFleet, FakeVLLMReplica
from devkube.prometheus import PrometheusNotInstalled, PrometheusServer
from tests.monitoring.generate import MONITORING, PLAIN_RULES, REPO
from tests.monitoring.operator_metrics import FakeOperatorPool, MetricsServer, operator_registry, serve_registry
from tests.support.router_metrics import FakeRouterMetrics

__all__ = ["MonitoringWorld", "PodTarget", "monitoring_world", "plain_jobs", "podmonitor_scrape_config",
           "sanitize_label_name"]

SCRAPE_CONFIGS = MONITORING / "scrape-configs.yaml"
PODMONITOR = MONITORING / "podmonitor.yaml"
EXAMPLE_POOL = REPO / "manifests" / "examples" / "spot-fallback-pool.yaml"
OPERATOR_JOB = "poolpilot-metrics"
REPLICAS_JOB = "poolpilot-pool-replicas"
PLAIN_NAMESPACE = "llm"
PODMONITOR_NAMESPACE = "llm-podmonitor"
OPERATOR_NAMESPACE = "poolpilot-system"
SCRAPE_SECONDS = 1.0
# What each kept replica reports: (waiting, running, KV use).
REPLICA_VALUES = {"spot-0": (3, 5, 0.5), "spot-1": (4, 2, 0.7), "on-demand-0": (2, 1, 0.3), "released": (1, 1, 0.1)}
# The dropped pods' fakes report numbers no sum of the kept ones can reach.
DROPPED_VALUES = {"not-managed": 100, "other-port": 200, "succeeded": 300, "no-role": 400}
ROUTER_IN_FLIGHT = {"pool": 3, "api": 2}


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as Prometheus' discovery spells it in a meta label (strutil.SanitizeLabelName)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass(frozen=True)
class PodTarget:
    """One container port of one pod, as Kubernetes pod discovery lists it."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    container: str
    port_name: str
    address: str
    phase: str = "Running"
    ready: bool = True

    def file_sd_group(self) -> dict[str, Any]:
        meta = {
            "__meta_kubernetes_namespace": self.namespace,
            "__meta_kubernetes_pod_name": self.name,
            "__meta_kubernetes_pod_phase": self.phase,
            "__meta_kubernetes_pod_ready": "true" if self.ready else "false",
            "__meta_kubernetes_pod_container_name": self.container,
            "__meta_kubernetes_pod_container_port_name": self.port_name,
            "__meta_kubernetes_pod_container_port_number": self.address.rsplit(":", 1)[1],
            "__meta_kubernetes_pod_container_port_protocol": "TCP",
        }
        for key, value in self.labels.items():
            meta[f"__meta_kubernetes_pod_label_{sanitize_label_name(key)}"] = value
            meta[f"__meta_kubernetes_pod_labelpresent_{sanitize_label_name(key)}"] = "true"
        return {"targets": [self.address], "labels": meta}


def _endpoint_group(address: str, *, service: str, port_name: str, pod: str, ready: bool) -> dict[str, Any]:
    """One address of one Service port, as Kubernetes endpoints discovery lists it."""
    return {"targets": [address], "labels": {
        "__meta_kubernetes_namespace": OPERATOR_NAMESPACE,
        "__meta_kubernetes_service_name": service,
        "__meta_kubernetes_endpoint_port_name": port_name,
        "__meta_kubernetes_endpoint_ready": "true" if ready else "false",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_port_name": port_name,
    }}


def _template(deployment: Mapping[str, Any]) -> tuple[dict[str, str], str, str]:
    """A rendered Deployment's pod labels, its container's name and (only) port name."""
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (port,) = container["ports"]
    return dict(template["metadata"]["labels"]), container["name"], port["name"]


def _example_spec() -> tuple[str, InferencePoolSpec]:
    example = yaml.safe_load(EXAMPLE_POOL.read_text())
    spec = validate_pool(example["metadata"]["name"], example["spec"])
    assert isinstance(spec, InferencePoolSpec), spec
    return example["metadata"]["name"], spec


def pool_pods(namespace: str, addresses: Mapping[str, str]) -> tuple[list[PodTarget], list[PodTarget]]:
    """The pool's pods that must be scraped, and the pods beside them that must not (addresses by role)."""
    name, spec = _example_spec()
    pool = PoolRef(name, namespace, uid="5b0c1d9e-0000-4000-8000-000000000001")
    spot_labels, vllm, http = _template(render_deployment(pool, spec, CapacityType.SPOT, 2))
    on_demand_labels, _, _ = _template(render_deployment(pool, spec, CapacityType.ON_DEMAND, 1))
    router_labels, router_container, router_port = _template(render_router_deployment(pool, spec))
    now = datetime(2025, 1, 1, tzinfo=UTC)
    mark = DrainMark(DrainStage.REPLACING, NoticeKind.REBALANCE_RECOMMENDATION, "aws-sqs", CapacityType.SPOT,
                     noticed_at=now, deadline=now)
    patch = release_patch(pool, mark, serving=True)["metadata"]["labels"]
    released_labels = {key: value for key, value in {**spot_labels, **patch}.items() if value is not None}
    kept = [
        PodTarget(f"{name}-spot-5d8f-a1", namespace, spot_labels, vllm, http, addresses["spot-0"]),
        PodTarget(f"{name}-spot-5d8f-b2", namespace, spot_labels, vllm, http, addresses["spot-1"]),
        PodTarget(f"{name}-on-demand-7c4e-c3", namespace, on_demand_labels, vllm, http, addresses["on-demand-0"]),
        # Released for a reclaim: out of its Deployment, still a replica of the pool until it is gone.
        PodTarget(f"{name}-spot-5d8f-d4", namespace, released_labels, vllm, http, addresses["released"], ready=False),
        PodTarget(f"{name}-router-6b9a-e5", namespace, router_labels, router_container, router_port,
                  addresses["router"]),
    ]
    not_managed = {**spot_labels, MANAGED_BY_LABEL: "helm"}
    no_role = {key: value for key, value in spot_labels.items() if key != "poolpilot.io/pool"}
    dropped = [
        PodTarget(f"{name}-copy-9f9f-f6", namespace, not_managed, vllm, http, addresses["not-managed"]),
        PodTarget(f"{name}-spot-5d8f-a1", namespace, spot_labels, "sidecar", "metrics", addresses["other-port"]),
        PodTarget(f"{name}-spot-5d8f-z9", namespace, spot_labels, vllm, http, addresses["succeeded"],
                  phase="Succeeded", ready=False),
        PodTarget(f"{name}-tool-1a1a-g7", namespace, no_role, vllm, http, addresses["no-role"]),
    ]
    return kept, dropped


# --- the PodMonitor as the Prometheus Operator translates it -------------------------------------------

_RELABELING_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex",
                    "replacement": "replacement", "separator": "separator", "modulus": "modulus", "action": "action"}


def podmonitor_scrape_config(podmonitor: Mapping[str, Any], target_files: list[str]) -> dict[str, Any]:
    """The scrape job the Prometheus Operator generates for a PodMonitor, as its documentation and generated
    configs show it (pkg/prometheus/promcfg.go, generatePodMonitorConfig): drop pods that Succeeded or
    Failed; keep pods matching the selector (``matchLabels`` as ``(VALUE);true`` over the label and its
    labelpresent meta label); keep the endpoint's port by name; set ``namespace``, ``container``, ``pod``,
    ``job`` (``NAMESPACE/NAME``) and ``endpoint``; then the endpoint's own relabelings, keys in snake case."""
    metadata, spec = podmonitor["metadata"], podmonitor["spec"]
    (endpoint,) = spec["podMetricsEndpoints"]
    selector = spec["selector"]
    assert set(selector) == {"matchLabels"}, "the translation here knows matchLabels only"
    assert spec.get("namespaceSelector") == {"any": True}, "the translation here knows namespaceSelector any"
    relabel: list[dict[str, Any]] = [
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]
    for key, value in sorted(selector["matchLabels"].items()):
        label = sanitize_label_name(key)
        relabel.append({"action": "keep", "regex": f"({value});true",
                        "source_labels": [f"__meta_kubernetes_pod_label_{label}",
                                          f"__meta_kubernetes_pod_labelpresent_{label}"]})
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"]},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{metadata['namespace']}/{metadata['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    for relabeling in endpoint.get("relabelings", []):
        unknown = set(relabeling) - set(_RELABELING_KEYS)
        assert not unknown, f"the translation here does not know {unknown}"
        converted = {_RELABELING_KEYS[key]: value for key, value in relabeling.items()}
        if "action" in converted:
            converted["action"] = str(converted["action"]).lower()
        relabel.append(converted)
    return {
        "job_name": f"podMonitor/{metadata['namespace']}/{metadata['name']}/0",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "file_sd_configs": [{"files": target_files, "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }


def plain_jobs() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(SCRAPE_CONFIGS.read_text())
    return {job["job_name"]: job for job in document["scrape_configs"]}


def _with_file_discovery(job: Mapping[str, Any], target_file: pathlib.Path) -> dict[str, Any]:
    """The job as written, but discovering its targets from ``target_file`` (and scraped every second)."""
    rewritten = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    assert "kubernetes_sd_configs" in job, f"{job['job_name']}: expected Kubernetes discovery"
    rewritten["file_sd_configs"] = [{"files": [str(target_file)], "refresh_interval": "1s"}]
    if "scrape_interval" in rewritten:
        rewritten["scrape_interval"] = f"{SCRAPE_SECONDS:g}s"
    return rewritten


# --- the world ---------------------------------------------------------------------------------------

@dataclass
class MonitoringWorld:
    prom: PrometheusServer
    replicas: dict[str, FakeVLLMReplica]  # by role: spot-0, ..., and the dropped ones
    router: FakeRouterMetrics
    operators: dict[str, MetricsServer]  # leader, standby
    decoy: MetricsServer  # an endpoint of another Service
    kept: dict[str, list[PodTarget]]  # by namespace
    dropped: dict[str, list[PodTarget]]
    pool_name: str


def _write_targets(path: pathlib.Path, groups: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump(groups), encoding="utf-8")  # file_sd reads YAML as well as JSON


@contextlib.contextmanager
def monitoring_world(directory: pathlib.Path) -> Iterator[MonitoringWorld]:
    """The world, its target files in ``directory``; everything stopped on exit."""
    pool_name = yaml.safe_load(EXAMPLE_POOL.read_text())["metadata"]["name"]
    leader_pools = [
        FakeOperatorPool(PLAIN_NAMESPACE, pool_name, mode="Overflow"),
        FakeOperatorPool(PLAIN_NAMESPACE, "batch"),
        FakeOperatorPool("tenant-b", "idle", mode="Full", desired={"spot": 0, "on-demand": 0},
                         ready={"spot": 0, "on-demand": 0}, metrics_available=False),
    ]
    roles = [*REPLICA_VALUES, *DROPPED_VALUES]
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(FakeVLLMFleet.in_thread(len(roles)))
        replicas = dict(zip(roles, fleet.replicas, strict=True))
        for role, (waiting, running, kv) in REPLICA_VALUES.items():
            replicas[role].set(waiting=waiting, running=running, kv=kv)
        for role, waiting in DROPPED_VALUES.items():
            replicas[role].set(waiting=waiting, running=waiting, kv=0.99)
        router = stack.enter_context(FakeRouterMetrics.in_thread())
        for backend, in_flight in ROUTER_IN_FLIGHT.items():
            router.in_flight.labels(backend).set(in_flight)
        router.grow("poolpilot_router_requests", {"backend": "pool", "outcome": "ok"}, 4.0)
        router.grow("poolpilot_router_spills", {"reason": "saturated"}, 0.5)
        leader = stack.enter_context(serve_registry(operator_registry(leader=True, pools=leader_pools)))
        standby = stack.enter_context(serve_registry(operator_registry(leader=False)))
        decoy = stack.enter_context(serve_registry(operator_registry(leader=False)))
        addresses = {role: replica.address for role, replica in replicas.items()} | {"router": router.address}

        kept: dict[str, list[PodTarget]] = {}
        dropped: dict[str, list[PodTarget]] = {}
        for namespace in (PLAIN_NAMESPACE, PODMONITOR_NAMESPACE):
            kept[namespace], dropped[namespace] = pool_pods(namespace, addresses)
        jobs = plain_jobs()
        operator_file, replicas_file, podmonitor_file = (directory / f"{name}.yaml"
                                                          for name in ("operator", "replicas", "podmonitor"))
        _write_targets(operator_file, [
            _endpoint_group(leader.address, service="poolpilot-metrics", port_name="http-metrics",
                            pod="poolpilot-5f7c9d-leadr", ready=True),
            _endpoint_group(standby.address, service="poolpilot-metrics", port_name="http-metrics",
                            pod="poolpilot-5f7c9d-stdby", ready=False),
            _endpoint_group(decoy.address, service="kube-dns", port_name="metrics", pod="coredns-1", ready=True),
        ])
        _write_targets(replicas_file, [pod.file_sd_group() for pod in [*kept[PLAIN_NAMESPACE],
                                                                    *dropped[PLAIN_NAMESPACE]]])
        _write_targets(podmonitor_file, [pod.file_sd_group() for pod in [*kept[PODMONITOR_NAMESPACE],
                                                                      *dropped[PODMONITOR_NAMESPACE]]])
        podmonitor = yaml.safe_load(PODMONITOR.read_text())
        extra_jobs = [
            _with_file_discovery(jobs[OPERATOR_JOB], operator_file),
            _with_file_discovery(jobs[REPLICAS_JOB], replicas_file),
            podmonitor_scrape_config(podmonitor, [str(podmonitor_file)]),
        ]
        prom = PrometheusServer(scrape_interval_seconds=SCRAPE_SECONDS, job_name="unused",
                                extra_scrape_configs=extra_jobs, rule_files=[PLAIN_RULES])
        try:
            prom.start()
        except PrometheusNotInstalled as error:
            pytest.fail(str(error))
        stack.callback(prom.stop)
        # Five scrapes of every kept target (four seconds of samples): a rate window of three seconds is full.
        kept_targets = sum(len(pods) for pods in kept.values()) + 2
        deadline = time.monotonic() + 25
        while True:
            scraped = prom.query("count(count_over_time(up[1m]) >= 5)")
            if scraped and float(scraped[0]["value"][1]) >= kept_targets:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the targets were not scraped in time: {prom.target_health()}\n"
                                     f"{prom.log_tail()}")
            time.sleep(0.2)
        yield MonitoringWorld(prom, replicas, router, {"leader": leader, "standby": standby}, decoy, kept, dropped,
                              pool_name)
