"""Scaling on vLLM's signals, end to end, on both API servers: fake vLLM replicas, the real Prometheus,
the real operator process.

Each pool pod gets a fake replica serving at the pod's own IP (``PodReplicas`` plays the
kubelet), and the test sets the same load on all of them (uniform load balancing). For the
prometheus source, a sync thread mirrors the pool's pods into Prometheus' file-based
discovery, as kubernetes_sd would.
"""

from __future__ import annotations

import json
import time
from typing import Any

from devkube.fakevllm import FakeVLLMFleet, KVMetric
from devkube.localrun import OperatorProcess
from devkube.prometheus import PrometheusServer
from devkube.wiring import PodReplicas, PodTargetSync
from tests.support.backends import Backend
from tests.support.kube import condition
from tests.support.waiting import eventually

Manifest = dict[str, Any]
MAX_REPLICAS = 5


def set_load(fleet: FakeVLLMFleet, *, waiting: float, running: float | None = None, kv: float | None = None) -> None:
    fleet.set_all(waiting=waiting, running=running, kv=kv)


SCALE_DOWN_WINDOW_SECONDS = 6
# The window starts at the operator's last evaluation under high load, which comes up to one
# evaluation interval (more on a loaded machine) before the test lowers the load.
EVALUATION_SLACK_SECONDS = 2


def pool_spec(fleet: FakeVLLMFleet, **metrics: Any) -> Manifest:
    return {
        "model": {"name": "m", "port": fleet.port, "gpusPerReplica": 0},
        "replicas": {"min": 1, "max": MAX_REPLICAS},
        "scaling": {"evaluationIntervalSeconds": 1, "targetQueueDepthPerReplica": 4,
                    "targetKVCacheUtilization": 0.8,
                    "scaleDown": {"stabilizationSeconds": SCALE_DOWN_WINDOW_SECONDS, "maxStepReplicas": 5}},
        "capacity": {"onDemandBase": 1, "spotPercentage": 100},
        "metrics": metrics or {"source": "pods"},
    }


def total_replicas(backend: Backend, pool: str) -> int:
    total = 0
    for suffix in ("on-demand", "spot"):
        deployment = backend.kube.get("Deployment", backend.namespace, f"{pool}-{suffix}")
        total += deployment["spec"]["replicas"] if deployment else 0
    return total


def wait_for_replicas(backend: Backend, pool: str, count: int, timeout: float = 20.0) -> None:
    eventually(lambda: total_replicas(backend, pool), lambda n: n == count, timeout=timeout,
               what=f"{pool} at {count} replicas")


def wait_for_serving(fleet: FakeVLLMFleet, count: int) -> None:
    """Every pod has its IP and a replica serving there (pods take a moment to start on a real cluster)."""
    eventually(lambda: len(fleet.endpoints), lambda n: n == count, what=f"{count} replicas serving")


def at_max_under_load(fleet: FakeVLLMFleet, backend: Backend, *, kv: float | None = None) -> None:
    """Pool `qwen` under a queue of 12 per replica (target 4): at its maximum, every replica serving."""
    set_load(fleet, waiting=12, kv=kv)
    backend.kube.create_pool(backend.namespace, "qwen", pool_spec(fleet))
    wait_for_replicas(backend, "qwen", MAX_REPLICAS)
    wait_for_serving(fleet, MAX_REPLICAS)


def events(backend: Backend, pool: str, reason: str) -> list[Manifest]:
    return [e for e in backend.kube.events_for(backend.namespace, pool) if e["reason"] == reason]


def events_eventually(backend: Backend, pool: str, reason: str, count: int = 1) -> list[Manifest]:
    """Kopf posts Events from a queue: they may trail the change they describe by a moment."""
    return eventually(lambda: events(backend, pool, reason), lambda found: len(found) >= count,
                      what=f"{count} {reason} event(s) on {pool}")


def test_the_pods_source_scales_up_on_a_queue_spike_and_down_after_the_window(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    backend.kube.create_pool(backend.namespace, "qwen", pool_spec(fleet))
    pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                      lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True",
                      what="signals read from the replica")
    assert "via pods" in (condition(pool, "MetricsAvailable") or {})["message"]
    assert total_replicas(backend, "qwen") == 1

    spiked_at = time.monotonic()
    set_load(fleet, waiting=12)  # 12 waiting per replica against a target of 4
    wait_for_replicas(backend, "qwen", 5)
    assert time.monotonic() - spiked_at < 10
    # Events carry second-resolution times: two in one second come back in any order.
    scaled_up = [e["message"] for e in events_eventually(backend, "qwen", "ScaledUp", count=2)]
    assert any("1 -> 3" in m and "queue" in m for m in scaled_up), scaled_up
    status = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                        lambda p: p is not None and p["status"].get("lastDecision", {}).get("toReplicas") == 5,
                        what="the last decision in the status")["status"]  # type: ignore[index]
    assert status["lastDecision"]["reason"] == "ScaledUp"

    set_load(fleet, waiting=0, running=0, kv=0.1)
    calmed_at = time.monotonic()
    time.sleep(SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS - 1)
    assert total_replicas(backend, "qwen") == 5, "scaled down inside the stabilization window"
    wait_for_replicas(backend, "qwen", 1)
    assert time.monotonic() - calmed_at >= SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS
    events_eventually(backend, "qwen", "ScaledDown")


def test_unreadable_metrics_hold_the_replicas_warn_once_and_recover(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    at_max_under_load(fleet, backend)

    for replica in fleet.replicas:  # every replica's /metrics now refuses connections
        fleet.call(replica.stop())
    pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                      lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "False",
                      what="MetricsAvailable=False")
    assert (condition(pool, "MetricsAvailable") or {})["reason"] == "SourceUnreachable"
    time.sleep(3)  # several evaluations during the outage
    assert total_replicas(backend, "qwen") == 5, "scaled while blind"
    warnings = events_eventually(backend, "qwen", "MetricsUnavailable")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    for replica in fleet.replicas:
        fleet.call(replica.start())
    eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
               lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True", what="recovered")
    assert len(events_eventually(backend, "qwen", "MetricsRecovered")) == 1


def test_a_restart_does_not_cut_the_scale_down_window_short(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    at_max_under_load(fleet, backend)
    # The load drops while the operator is down: its memory of high recommendations is gone with it.
    operator.stop()
    set_load(fleet, waiting=0, running=0, kv=0.1)
    operator.start()
    restarted_at = time.monotonic()
    time.sleep(SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS - 1)
    assert total_replicas(backend, "qwen") == 5, "scaled down at once after a restart: the window was skipped"
    wait_for_replicas(backend, "qwen", 1)
    assert time.monotonic() - restarted_at >= SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS


def test_a_missing_signal_never_scales_down_and_leaves_no_stale_figure(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    at_max_under_load(fleet, backend, kv=0.5)
    eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
               lambda p: p is not None and "kvCachePercent" in p["status"].get("signals", {}),
               what="KV% in the status")

    # The queue empties but the replicas stop reporting KV-cache use: the queue alone says 1 replica.
    fleet.set_all(waiting=0, running=0, kv_metric=KVMetric.NONE)
    pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                      lambda p: (condition(p, "MetricsAvailable") or {}).get("reason") == "SignalMissing",
                      what="MetricsAvailable says a signal is missing")
    assert "no KV-cache use" in (condition(pool, "MetricsAvailable") or {})["message"]
    # A figure nobody reads any more is removed from the status, not left there stale.
    pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
                      lambda p: p is not None and "kvCachePercent" not in p["status"].get("signals", {"kv": 1}),
                      what="the stale KV% gone from the status")
    assert pool is not None and pool["status"]["signals"]["queueDepth"] == 0
    time.sleep(SCALE_DOWN_WINDOW_SECONDS + 1)  # past the scale-down window
    assert total_replicas(backend, "qwen") == 5, "scaled down blind on the missing KV signal"

    fleet.set_all(kv_metric=KVMetric.CURRENT, kv=0.1)  # both signals back, both low
    wait_for_replicas(backend, "qwen", 1, timeout=SCALE_DOWN_WINDOW_SECONDS + 20)


def test_the_prometheus_source_scales_like_the_pods_source_and_holds_when_prometheus_stops(
        fleet: FakeVLLMFleet, backend: Backend, replicas: PodReplicas) -> None:
    assert fleet.port is not None
    with PrometheusServer(scrape_interval_seconds=1.0) as prometheus, \
            PodTargetSync(backend.pods, prometheus, fleet.port):
        # The pool names its own Prometheus, which the operator queries only if its admin allowed it.
        backend.operator(env={"POOLPILOT_ALLOWED_PROMETHEUS_URLS": json.dumps([prometheus.url])})
        backend.kube.create_pool(backend.namespace, "via-prom", pool_spec(fleet, source="prometheus",
                                                          prometheus={"url": prometheus.url}))
        backend.kube.create_pool(backend.namespace, "via-pods", pool_spec(fleet))
        for name in ("via-prom", "via-pods"):
            eventually(lambda name=name: backend.kube.get_pool(backend.namespace, name),  # type: ignore[misc]
                       lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True",
                       timeout=30, what=f"{name} reads its signals")
        set_load(fleet, waiting=12)
        # The same load gives the same decisions, whichever way the signals travel.
        wait_for_replicas(backend, "via-pods", 5)
        wait_for_replicas(backend, "via-prom", 5, timeout=30)
        prom_pool = backend.kube.get_pool(backend.namespace, "via-prom")
        assert prom_pool is not None and prom_pool["status"]["signals"]["source"] == "prometheus"

        prometheus.stop()
        set_load(fleet, waiting=0, running=0, kv=0.1)  # would scale down, if the operator could see it
        pool = eventually(lambda: backend.kube.get_pool(backend.namespace, "via-prom"),
                          lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "False",
                          timeout=20, what="MetricsAvailable=False once Prometheus is gone")
        assert (condition(pool, "MetricsAvailable") or {})["reason"] in ("SourceUnreachable", "SourceTimeout")
        time.sleep(SCALE_DOWN_WINDOW_SECONDS + 1)  # past the scale-down window
        assert total_replicas(backend, "via-prom") == 5, "scaled down blind"
        wait_for_replicas(backend, "via-pods", 1)  # the pods-sourced pool still sees the replicas
