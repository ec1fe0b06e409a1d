"""Operator scenarios that run the same way against the embedded API server and a real cluster.

Each scenario drives the real operator process through a kubeconfig and asserts
what a cluster admin can see: owned objects, the pool's status, its Events, and
resourceVersions (an unchanged resourceVersion proves no write happened, on any
API server). The embedded server's write log adds stricter checks on top, in
``tests/integration``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devkube.localrun import OperatorProcess
from tests.support.kube import TestKube, condition
from tests.support.waiting import eventually

__all__ = [
    "OWNED",
    "POOL_SPEC",
    "ScenarioEnv",
    "changing_the_spec_patches_only_what_changed",
    "create_and_settle",
    "creating_a_pool_creates_its_objects",
    "deleting_the_pool_removes_its_objects",
    "is_current",
    "objects_the_server_refuses_are_reported_and_the_rest_applies",
    "owned_versions",
    "restarting_the_operator_writes_nothing",
    "values_the_server_rewrites_cause_no_update_loop",
]

Manifest = dict[str, Any]

# A pool that exercises the split and a provider preset; evaluated every second so tests need not wait long.
POOL_SPEC: Manifest = {
    "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "args": ["--max-model-len=4096"]},
    "replicas": {"min": 3, "max": 5},
    "scaling": {"evaluationIntervalSeconds": 1},
    "capacity": {"provider": "eks", "onDemandBase": 1, "spotPercentage": 100},
}

OWNED = (("Deployment", "{}-on-demand"), ("Deployment", "{}-spot"), ("Service", "{}"), ("Service", "{}-replicas"),
         ("PodDisruptionBudget", "{}-on-demand"), ("PodDisruptionBudget", "{}-spot"))


@dataclass
class ScenarioEnv:
    kube: TestKube
    operator: OperatorProcess
    namespace: str
    # Whether replicas become ready here (the embedded server's stand-in Deployment controller);
    # on a real cluster without GPUs they stay pending.
    replicas_become_ready: bool


def _fingerprint(obj: Manifest | None) -> str | None:
    """What only a writer of spec or metadata changes: the Deployment controller's status writes do not count."""
    if obj is None:
        return None
    metadata = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return json.dumps({"metadata": metadata, "spec": obj.get("spec")}, sort_keys=True)


def owned_versions(env: ScenarioEnv, pool: str) -> dict[str, str | None]:
    """The pool's resourceVersion (only the admin and the operator write it) and its objects' fingerprints."""
    versions = {f"InferencePool {pool}": env.kube.resource_version("InferencePool", env.namespace, pool)}
    for kind, pattern in OWNED:
        name = pattern.format(pool)
        versions[f"{kind} {name}"] = _fingerprint(env.kube.get(kind, env.namespace, name))
    return versions


def _evaluated(env: ScenarioEnv, name: str) -> Callable[[], Manifest | None]:
    def probe() -> Manifest | None:
        return env.kube.get_pool(env.namespace, name)
    return probe


def is_current(pool: Manifest | None) -> bool:
    """The operator has evaluated the pool's latest generation."""
    return bool(pool) and pool is not None and (
        pool.get("status", {}).get("observedGeneration") == pool["metadata"].get("generation"))


def create_and_settle(env: ScenarioEnv, name: str, spec: Manifest | None = None) -> Manifest:
    env.kube.create_pool(env.namespace, name, spec or POOL_SPEC)
    pool = eventually(_evaluated(env, name), lambda p: is_current(p) and all(
        env.kube.get(kind, env.namespace, pattern.format(name)) for kind, pattern in OWNED),
        what=f"pool {name} evaluated with its objects created")
    if env.replicas_become_ready:
        pool = eventually(_evaluated(env, name),
                          lambda p: (condition(p, "Ready") or {}).get("status") == "True",
                          what=f"pool {name} Ready")
    assert pool is not None
    return pool


def wait_for_quiet(seconds: float = 3.0) -> None:
    """Let the operator run several evaluations (interval 1 s) before checking that nothing changed."""
    time.sleep(seconds)


# --- the scenarios ------------------------------------------------------------------------------------------


def creating_a_pool_creates_its_objects(env: ScenarioEnv) -> None:
    pool = create_and_settle(env, "qwen")
    ns = env.namespace
    on_demand = env.kube.get("Deployment", ns, "qwen-on-demand")
    spot = env.kube.get("Deployment", ns, "qwen-spot")
    service = env.kube.get("Service", ns, "qwen")
    pdb = env.kube.get("PodDisruptionBudget", ns, "qwen-spot")
    assert on_demand and spot and service and pdb and env.kube.get("PodDisruptionBudget", ns, "qwen-on-demand")
    assert pdb["spec"]["selector"] == {"matchLabels": {"poolpilot.io/pool": "qwen",
                                                       "poolpilot.io/capacity-type": "spot"}}
    # min 3 with one on-demand base and the rest on spot.
    assert (on_demand["spec"]["replicas"], spot["spec"]["replicas"]) == (1, 2)
    assert spot["spec"]["template"]["spec"]["nodeSelector"] == {"eks.amazonaws.com/capacityType": "SPOT"}
    assert on_demand["spec"]["template"]["spec"]["nodeSelector"] == {"eks.amazonaws.com/capacityType": "ON_DEMAND"}
    vllm = spot["spec"]["template"]["spec"]["containers"][0]
    assert vllm["args"][0] == "Qwen/Qwen2.5-0.5B-Instruct" and "--max-model-len=4096" in vllm["args"]
    for owned in (on_demand, spot, service, pdb):
        (owner,) = owned["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("InferencePool", "qwen", pool["metadata"]["uid"])
    assert service["spec"]["selector"] == {"poolpilot.io/pool": "qwen", "poolpilot.io/serving": "true"}
    status = pool["status"]
    assert status["replicas"]["desired"] == 3
    assert (status["replicas"]["spotDesired"], status["replicas"]["onDemandDesired"]) == (2, 1)
    assert (condition(pool, "SpecValid") or {}).get("status") == "True"
    if env.replicas_become_ready:
        ready = condition(pool, "Ready") or {}
        assert ready.get("reason") == "ReplicasReady" and status["replicas"]["ready"] == 3
    created = eventually(lambda: [e["message"] for e in env.kube.events_for(ns, "qwen") if e["reason"] == "Created"],
                         lambda messages: len(messages) == 6, what="six Created events")
    assert "Created Service qwen-replicas" in created  # headless: what the router discovers replicas by
    assert "Created Deployment qwen-spot (2 replicas)" in created


def changing_the_spec_patches_only_what_changed(env: ScenarioEnv) -> None:
    """Starts from the settled pool `qwen` (see create_and_settle)."""
    before = owned_versions(env, "qwen")
    env.kube.patch_pool(env.namespace, "qwen", {"spec": {
        "model": {"image": "vllm/vllm-openai:v0.30.0"}, "replicas": {"min": 4}}})
    spot = eventually(lambda: env.kube.get("Deployment", env.namespace, "qwen-spot"),
                      lambda d: d is not None and d["spec"]["replicas"] == 3
                      and d["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.30.0",
                      what="the spot Deployment rolled to the new image and 3 replicas")
    assert spot is not None
    on_demand = env.kube.get("Deployment", env.namespace, "qwen-on-demand")
    assert on_demand is not None
    assert on_demand["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.30.0"
    eventually(lambda: env.kube.get_pool(env.namespace, "qwen"), is_current, what="status of generation 2")
    wait_for_quiet()
    after = owned_versions(env, "qwen")
    for unchanged in ("Service qwen", "Service qwen-replicas", "PodDisruptionBudget qwen-spot",
                      "PodDisruptionBudget qwen-on-demand"):
        assert after[unchanged] == before[unchanged], f"{unchanged} was written though nothing of it changed"
    eventually(lambda: [e["message"] for e in env.kube.events_for(env.namespace, "qwen") if e["reason"] == "Updated"],
               lambda updated: any("qwen-spot" in m and "spec.replicas" in m for m in updated),
               what="an Updated event for qwen-spot's replicas")


def restarting_the_operator_writes_nothing(env: ScenarioEnv) -> None:
    """Starts from the settled pool `qwen`."""
    wait_for_quiet()
    before = owned_versions(env, "qwen")
    env.operator.restart()
    wait_for_quiet()
    assert owned_versions(env, "qwen") == before
    assert len([e for e in env.kube.events_for(env.namespace, "qwen") if e["reason"] == "Created"]) == 6


def deleting_the_pool_removes_its_objects(env: ScenarioEnv) -> None:
    """Starts from the settled pool `qwen`."""
    env.kube.delete_pool(env.namespace, "qwen")
    eventually(lambda: env.kube.get_pool(env.namespace, "qwen"), lambda p: p is None,
               what="the pool gone (the operator removes its finalizer)")
    for kind, pattern in OWNED:
        name = pattern.format("qwen")

        def current(kind: str = kind, name: str = name) -> Manifest | None:
            return env.kube.get(kind, env.namespace, name)

        eventually(current, lambda o: o is None, timeout=60, what=f"{kind} {name} garbage-collected")


def values_the_server_rewrites_cause_no_update_loop(env: ScenarioEnv) -> None:
    """The server stores `0.5` as `500m`, `1024Mi` as `1Gi` and drops an empty env value: the operator
    must take its own objects for settled, not patch them (and post `Updated`) every evaluation."""
    spec = {**POOL_SPEC, "model": {**POOL_SPEC["model"],
                                   "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"},
                                                 "limits": {"memory": "1.5Gi"}},
                                   "env": [{"name": "VLLM_LOGGING_LEVEL", "value": ""}]}}
    create_and_settle(env, "qwen", spec)
    spot = env.kube.get("Deployment", env.namespace, "qwen-spot")
    assert spot is not None
    stored = spot["spec"]["template"]["spec"]["containers"][0]
    requests = stored["resources"]["requests"]
    assert (requests["cpu"], requests["memory"], stored["resources"]["limits"]["memory"]) == ("500m", "1Gi",
                                                                                              "1536Mi")
    wait_for_quiet()
    before = owned_versions(env, "qwen")
    wait_for_quiet()
    assert owned_versions(env, "qwen") == before, "the operator kept rewriting what the server stores"
    updated = [e for e in env.kube.events_for(env.namespace, "qwen") if e["reason"] == "Updated"]
    assert updated == [], [e["message"] for e in updated]


def objects_the_server_refuses_are_reported_and_the_rest_applies(env: ScenarioEnv) -> None:
    """A ResourceQuota that allows no Deployment in the namespace (403 from the quota admission
    plugin) makes both Deployments unacceptable: the Service and the PDB are still applied, the pool
    says why it is not Ready, one Warning per refused object, and lifting the quota brings them."""
    env.kube.core.create_namespaced_resource_quota(env.namespace, {
        "metadata": {"name": "no-deployments"}, "spec": {"hard": {"count/deployments.apps": "0"}}})
    env.kube.create_pool(env.namespace, "qwen", POOL_SPEC)
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
                      lambda p: (condition(p, "Ready") or {}).get("reason") == "ApplyFailed",
                      what="Ready=False with ApplyFailed")
    message = (condition(pool, "Ready") or {})["message"]
    assert "Deployment qwen-on-demand" in message and "Deployment qwen-spot" in message, message
    assert "quota" in message, message
    assert env.kube.get("Service", env.namespace, "qwen") and env.kube.get("PodDisruptionBudget", env.namespace,
                                                                           "qwen-spot")
    assert env.kube.get("Deployment", env.namespace, "qwen-spot") is None
    wait_for_quiet()  # more evaluations: still one Warning per object
    warnings = [e for e in env.kube.events_for(env.namespace, "qwen") if e["reason"] == "ApplyFailed"]
    assert sorted(w["message"].split(":")[0] for w in warnings) == [
        "The API server refused Deployment qwen-on-demand", "The API server refused Deployment qwen-spot"]
    assert all(w["type"] == "Warning" for w in warnings)

    env.kube.core.delete_namespaced_resource_quota("no-deployments", env.namespace)
    eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
               lambda p: is_current(p) and (condition(p, "Ready") or {}).get("reason") != "ApplyFailed"
               and env.kube.get("Deployment", env.namespace, "qwen-spot") is not None,
               what="the Deployments created once the quota is lifted")
