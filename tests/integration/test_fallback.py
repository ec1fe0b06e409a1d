"""Where traffic goes, end to end on both API servers: the real operator, fake vLLM replicas under load.

The mode is the operator's decision, written to ``status.fallback`` with the ``FallbackActive`` and
``Saturated`` conditions and an Event per change; the router (tests/router) and the HTTPRoute weights
follow it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import OperatorProcess
from tests.integration.test_scaling import events_eventually, set_load, wait_for_replicas, wait_for_serving
from tests.support.backends import Backend
from tests.support.kube import condition
from tests.support.waiting import eventually

Manifest = dict[str, Any]
HTTPROUTE_CRD = "tests/kube/data/httproute-crd.yaml"  # a minimal one: our tests' Gateway API
FOR_SECONDS = 2
RECOVER_AFTER_SECONDS = 5


def fallback_pool(fleet: FakeVLLMFleet, *, min_replicas: int = 1, max_replicas: int = 2) -> Manifest:
    return {
        "model": {"name": "m", "port": fleet.port, "gpusPerReplica": 0},
        "replicas": {"min": min_replicas, "max": max_replicas},
        "scaling": {"evaluationIntervalSeconds": 1, "targetQueueDepthPerReplica": 4,
                    "scaleDown": {"stabilizationSeconds": 2, "maxStepReplicas": 5}},
        "capacity": {"onDemandBase": 1, "spotPercentage": 100},
        "metrics": {"source": "pods"},
        "fallback": {"enabled": True, "route": "httpRoute", "httpRoute": {"name": "front"},
                     "provider": {"baseURL": "https://api.example.com/v1", "model": "m-hosted"},
                     "saturation": {"queueDepthPerReplica": 8, "forSeconds": FOR_SECONDS},
                     "recoverAfterSeconds": RECOVER_AFTER_SECONDS},
        "cost": {"spotReplicaHourly": 0.45, "onDemandReplicaHourly": 1.21},
    }


def mode_becomes(backend: Backend, pool: str, mode: str, timeout: float = 30.0) -> Manifest:
    found = eventually(lambda: backend.kube.get_pool(backend.namespace, pool),
                       lambda p: (p or {}).get("status", {}).get("fallback", {}).get("mode") == mode,
                       timeout=timeout, what=f"{pool} in fallback mode {mode}")
    assert found is not None
    return found


def install_route(backend: Backend, pool: str) -> None:
    """The HTTPRoute `front` the pool steers: the pool's Service, and a hosted API behind a Service of its own."""
    backend.kubectl("apply", "-f", HTTPROUTE_CRD)
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "front", "namespace": backend.namespace},
             "spec": {"parentRefs": [{"name": "gateway"}],
                      "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                                 "backendRefs": [{"name": pool, "port": 8000, "weight": 1},
                                                 {"name": "hosted-api", "port": 443, "weight": 0}]}]}}
    eventually(lambda: backend.kubectl("apply", "-f", "-", input=json.dumps(route), check=False).returncode,
               lambda code: code == 0, timeout=30, what="the HTTPRoute kind served")


def route_weights(backend: Backend) -> list[int]:
    found = json.loads(backend.kubectl("get", "httproute", "front", "-n", backend.namespace, "-o", "json").stdout)
    return [ref.get("weight") for ref in found["spec"]["rules"][0]["backendRefs"]]


def test_a_pool_saturated_at_max_overflows_after_for_seconds_and_comes_back_after_the_hysteresis(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    install_route(backend, "qwen")
    backend.kube.create_pool(backend.namespace, "qwen", fallback_pool(fleet))
    wait_for_replicas(backend, "qwen", 1)
    pool = mode_becomes(backend, "qwen", "Off", timeout=RECOVER_AFTER_SECONDS + 30)
    assert (condition(pool, "FallbackActive") or {}).get("reason") == "PoolServing"
    assert route_weights(backend) == [100, 0]  # the Gateway sends everything to the pool

    set_load(fleet, waiting=20)  # 20 per replica: the scaler goes to max 2, still 10 per replica > 8
    wait_for_replicas(backend, "qwen", 2)
    wait_for_serving(fleet, 2)
    pool = mode_becomes(backend, "qwen", "Overflow")
    assert (condition(pool, "FallbackActive") or {})["status"] == "True"
    assert (condition(pool, "Saturated") or {})["reason"] in ("AtMaximum", "ColdStart")
    # A new pool starts in Full (nothing ready), steps to Overflow at its first ready replica, then Off.
    overflow = [e for e in events_eventually(backend, "qwen", "FallbackOverflow", count=2)
                if "Off -> Overflow" in e["message"]]
    assert overflow and overflow[0]["type"] == "Warning"
    assert route_weights(backend) == [50, 50]  # a weighted split is how a Gateway overflows
    eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),  # one on-demand and one spot replica
               lambda p: (p or {}).get("status", {}).get("cost", {}).get("hourly") == 1.66, what="the cost of 2")

    set_load(fleet, waiting=2)
    calmed_at = time.monotonic()
    pool = mode_becomes(backend, "qwen", "Off", timeout=RECOVER_AFTER_SECONDS + 20)
    assert time.monotonic() - calmed_at >= RECOVER_AFTER_SECONDS - 1  # not before the window (1 s: whole seconds)
    recovered = events_eventually(backend, "qwen", "FallbackRecovered")
    assert recovered[0]["type"] == "Normal" and "Overflow -> Off" in recovered[0]["message"]
    assert (condition(pool, "Saturated") or {})["status"] == "False"
    assert route_weights(backend) == [100, 0]
    assert (condition(pool, "Ready") or {})["reason"] == "ReplicasReady"  # the route was found and written


def test_a_pool_scaled_to_zero_sends_everything_to_the_api(
        fleet: FakeVLLMFleet, backend: Backend, operator: OperatorProcess) -> None:
    set_load(fleet, waiting=0, running=0, kv=0.0)
    install_route(backend, "idle")
    backend.kube.create_pool(backend.namespace, "idle", fallback_pool(fleet, min_replicas=0))
    wait_for_replicas(backend, "idle", 0, timeout=40)  # zero load for the scale-down window
    pool = mode_becomes(backend, "idle", "Full")
    assert (condition(pool, "Saturated") or {})["reason"] == "NoReadyReplicas"
    assert (condition(pool, "FallbackActive") or {})["reason"] == "AllToAPI"
    full = events_eventually(backend, "idle", "FallbackFull")
    assert full[0]["type"] == "Warning"
    assert pool["status"]["cost"]["hourly"] == 0  # nothing runs
    eventually(lambda: route_weights(backend), lambda weights: weights == [0, 100], what="the route all on the API")
