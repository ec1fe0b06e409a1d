"""The operator's foundation scenarios on both API servers; on the embedded one its write log is the witness."""

from __future__ import annotations

import asyncio
import time

import pytest

from devkube.cluster import DevCluster
from devkube.writelog import WriteRecord
from tests.integration.conftest import TEST_USER_AGENT
from tests.support import scenarios
from tests.support.backends import Backend
from tests.support.kube import condition
from tests.support.scenarios import ScenarioEnv, create_and_settle, is_current, owned_versions, wait_for_quiet
from tests.support.waiting import eventually


def operator_writes(cluster: DevCluster, since: int) -> list[WriteRecord]:
    """What the operator wrote to act: its leader election's Lease renewals (every 1.5 s) are not acting."""
    return [w for w in cluster.writes(since) if w.user_agent != TEST_USER_AGENT and w.succeeded
            and w.resource != "leases"]


def summary(writes: list[WriteRecord]) -> list[tuple[str, str, str | None]]:
    """(verb, resource, name); an Event is named by its reason, so a failure says which Event it was."""
    return [(w.method, w.resource + (f"/{w.subresource}" if w.subresource else ""),
             f"{w.name} ({_reason(w)})" if w.resource == "events" else w.name) for w in writes]


def _reason(write: WriteRecord) -> str:
    return str(write.body.get("reason")) if isinstance(write.body, dict) else "?"


@pytest.mark.embedded_only("counts every write in the embedded server's write log")
def test_creating_a_pool_creates_its_objects(env: ScenarioEnv, cluster: DevCluster) -> None:
    start = cluster.mark()
    scenarios.creating_a_pool_creates_its_objects(env)
    writes = summary(operator_writes(cluster, start))
    for kind, name in (("deployments", "qwen-on-demand"), ("deployments", "qwen-spot"), ("services", "qwen"),
                       ("services", "qwen-replicas"), ("poddisruptionbudgets", "qwen-on-demand"),
                       ("poddisruptionbudgets", "qwen-spot")):
        assert writes.count(("POST", kind, name)) == 1, writes
    assert not [w for w in writes if w[0] in ("PUT", "DELETE")], writes


@pytest.mark.embedded_only("counts every write in the embedded server's write log")
def test_changing_the_spec_patches_the_deployments_and_nothing_else(env: ScenarioEnv, cluster: DevCluster) -> None:
    scenarios.create_and_settle(env, "other", {"model": {"name": "m"}})  # a neighbour that must stay untouched
    scenarios.create_and_settle(env, "qwen")
    start = cluster.mark()
    scenarios.changing_the_spec_patches_only_what_changed(env)
    writes = summary(operator_writes(cluster, start))
    owned_writes = [w for w in writes if w[1] not in ("events", "inferencepools/status", "inferencepools")]
    assert sorted(owned_writes) == [("PATCH", "deployments", "qwen-on-demand"),
                                    ("PATCH", "deployments", "qwen-spot")]
    assert not [w for w in writes if w[2] and w[2].startswith("other")], writes


@pytest.mark.embedded_only("counts every write in the embedded server's write log")
def test_restarting_the_operator_writes_nothing(env: ScenarioEnv, cluster: DevCluster) -> None:
    scenarios.create_and_settle(env, "qwen")
    # Kopf posts Events from a queue: the Warning of the evaluation that made the pool Ready (its replicas
    # answer no scrape here) can land after the status did. Count from when the first operator is quiet.
    scenarios.wait_for_quiet()
    start = cluster.mark()
    scenarios.restarting_the_operator_writes_nothing(env)
    assert summary(operator_writes(cluster, start)) == []


def test_deleting_the_pool_removes_its_objects(env: ScenarioEnv) -> None:
    scenarios.create_and_settle(env, "qwen")
    scenarios.deleting_the_pool_removes_its_objects(env)


@pytest.mark.older_crd
@pytest.mark.embedded_only("needs a server without CEL (an older CRD); the real one refuses the patch: tests/e2e")
def test_an_invalid_spec_is_reported_once_and_changes_nothing(env: ScenarioEnv, cluster: DevCluster) -> None:
    create_and_settle(env, "qwen")
    before = owned_versions(env, "qwen")
    start = cluster.mark()
    # The embedded server runs without the CRD's rules here, like a cluster with an older CRD: the
    # operator is the last line.
    env.kube.patch_pool(env.namespace, "qwen", {"spec": {"replicas": {"min": 9}, "capacity": {"spotPercentage": 150}}})
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
                      lambda p: (condition(p, "SpecValid") or {}).get("status") == "False",
                      what="SpecValid=False")
    spec_valid = condition(pool, "SpecValid") or {}
    assert spec_valid["reason"] == "InvalidSpec"
    assert "spec.replicas.min: replicas.min must not exceed replicas.max" in spec_valid["message"]
    assert "spec.capacity.spotPercentage" in spec_valid["message"]
    assert (condition(pool, "Ready") or {}).get("reason") == "InvalidSpec"
    wait_for_quiet()  # several more evaluations
    warnings = eventually(lambda: [e for e in env.kube.events_for(env.namespace, "qwen")
                                   if e["reason"] == "InvalidSpec"], lambda found: len(found) >= 1,
                          what="the InvalidSpec event")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert "spec.replicas.min" in warnings[0]["message"]
    after = owned_versions(env, "qwen")
    assert {k: v for k, v in after.items() if not k.startswith("InferencePool")} == {
        k: v for k, v in before.items() if not k.startswith("InferencePool")}
    owned_writes = [w for w in summary(operator_writes(cluster, start))
                    if w[1] not in ("events", "inferencepools/status")]
    assert owned_writes == []

    env.kube.patch_pool(env.namespace, "qwen", {"spec": {"replicas": {"min": 3}, "capacity": {"spotPercentage": 100}}})
    eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
               lambda p: is_current(p) and (condition(p, "SpecValid") or {}).get("status") == "True",
               what="SpecValid=True again")
    eventually(lambda: env.kube.events_for(env.namespace, "qwen"),
               lambda found: any(e["reason"] == "SpecAccepted" for e in found), what="the SpecAccepted event")


@pytest.mark.older_crd
@pytest.mark.embedded_only("needs a server without CEL (an older CRD); the real one refuses the pool: tests/e2e")
def test_a_pool_invalid_from_the_start_gets_no_objects(env: ScenarioEnv, cluster: DevCluster) -> None:
    env.kube.create_pool(env.namespace, "broken", {"model": {"name": "m", "args": ["--port=9000"]}})
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "broken"), is_current, what="the pool evaluated")
    assert "spec.model.args" in (condition(pool, "SpecValid") or {}).get("message", "")
    wait_for_quiet(1.5)
    assert cluster.list("deployments", env.namespace) == []
    assert cluster.list("services", env.namespace) == []


def test_values_the_server_rewrites_cause_no_update_loop(env: ScenarioEnv) -> None:
    scenarios.values_the_server_rewrites_cause_no_update_loop(env)


def test_objects_the_server_refuses_are_reported_and_the_rest_applies(env: ScenarioEnv) -> None:
    scenarios.objects_the_server_refuses_are_reported_and_the_rest_applies(env)


def test_hand_edits_to_owned_objects_are_reverted(env: ScenarioEnv) -> None:
    create_and_settle(env, "qwen")
    env.kube.patch("Deployment", env.namespace, "qwen-spot", {"spec": {"template": {"spec": {
        "terminationGracePeriodSeconds": 5}}}})
    eventually(lambda: env.kube.get("Deployment", env.namespace, "qwen-spot"),
               lambda d: d is not None and d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90,
               what="the grace period restored")
    eventually(lambda: [e["message"] for e in env.kube.events_for(env.namespace, "qwen") if e["reason"] == "Updated"],
               lambda updated: any("spec.template.spec.terminationGracePeriodSeconds" in m for m in updated),
               what="an Updated event naming the grace period")


def test_an_object_owned_by_somebody_else_is_left_alone(env: ScenarioEnv) -> None:
    env.kube.create_service(env.namespace, {"metadata": {"name": "qwen"}, "spec": {
        "selector": {"app": "legacy"}, "ports": [{"port": 80}]}})
    version = env.kube.resource_version("Service", env.namespace, "qwen")
    env.kube.create_pool(env.namespace, "qwen", scenarios.POOL_SPEC)
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
                      lambda p: (condition(p, "Ready") or {}).get("reason") == "ObjectConflict",
                      what="Ready=False with ObjectConflict")
    assert "Service qwen" in (condition(pool, "Ready") or {})["message"]
    wait_for_quiet(1.5)
    assert env.kube.resource_version("Service", env.namespace, "qwen") == version
    conflicts = eventually(lambda: [e for e in env.kube.events_for(env.namespace, "qwen")
                                    if e["reason"] == "ObjectConflict"], lambda found: len(found) >= 1,
                           what="the ObjectConflict event")
    assert len(conflicts) == 1 and conflicts[0]["type"] == "Warning"
    assert env.kube.get("Deployment", env.namespace, "qwen-spot") is not None  # the rest is still managed


@pytest.mark.embedded_only("injects 503s with the embedded server's reactions")
def test_the_operator_outlives_api_errors_and_converges(env: ScenarioEnv, cluster: DevCluster) -> None:
    create_and_settle(env, "qwen")
    # The next three patches of the spot Deployment fail as an overloaded API server would.
    cluster.emulator[f"patch /apis/apps/v1/namespaces/{env.namespace}/deployments/qwen-spot"][:3] << 503
    env.kube.patch_pool(env.namespace, "qwen", {"spec": {"replicas": {"min": 4}}})
    eventually(lambda: env.kube.get("Deployment", env.namespace, "qwen-spot"),
               lambda d: d is not None and d["spec"]["replicas"] == 3, timeout=30,
               what="the spot Deployment scaled once the API recovered")
    failed = [w for w in cluster.writes(resource="deployments", name="qwen-spot", method="PATCH")
              if w.status == 503]
    assert len(failed) == 3
    assert "evaluation of pool llm/qwen failed (3 in a row)" in env.operator.log()
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
                      lambda p: is_current(p) and (condition(p, "Ready") or {}).get("status") == "True",
                      what="the pool Ready at generation 2")
    assert pool is not None and pool["status"]["replicas"]["desired"] == 4


@pytest.mark.embedded_only("stalls responses with the embedded server's reactions")
def test_a_stalled_api_server_times_out_backs_off_and_recovers(backend: Backend, cluster: DevCluster) -> None:
    operator = backend.operator(env={"POOLPILOT_API_TIMEOUT_SECONDS": "1.5"})
    env = ScenarioEnv(kube=backend.kube, operator=operator, namespace=backend.namespace,
                      replicas_become_ready=True)
    create_and_settle(env, "qwen")

    async def stall() -> None:  # a half-open connection: no answer, for longer than the test waits
        await asyncio.sleep(120)

    # The next two patches of the spot Deployment never get an answer.
    cluster.emulator[f"patch /apis/apps/v1/namespaces/{env.namespace}/deployments/qwen-spot"][:2] << stall
    stalled_at = time.monotonic()
    env.kube.patch_pool(env.namespace, "qwen", {"spec": {"replicas": {"min": 4}}})
    eventually(lambda: env.kube.get("Deployment", env.namespace, "qwen-spot"),
               lambda d: d is not None and d["spec"]["replicas"] == 3, timeout=30,
               what="the spot Deployment scaled once the server answered again")
    # Two timeouts of 1.5 s and two backoffs (1 s, 2 s), not two waits of 120 s.
    assert time.monotonic() - stalled_at < 25
    log = operator.log()
    assert "evaluation of pool" in log and "timed out" in log.lower(), log[-3000:]
    pool = eventually(lambda: env.kube.get_pool(env.namespace, "qwen"),
                      lambda p: is_current(p) and (condition(p, "Ready") or {}).get("status") == "True",
                      what="the pool Ready again")
    assert pool is not None and pool["status"]["replicas"]["desired"] == 4


FOREIGN_PODS = 2000


@pytest.mark.embedded_only("counts what the embedded server sent to each client")
def test_the_operator_receives_only_its_own_objects_and_lists_them_in_pages(
        backend: Backend, cluster: DevCluster) -> None:
    for index in range(FOREIGN_PODS):  # a busy cluster's other workloads
        cluster.put_object("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"web-{index}", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]}, "status": {"phase": "Running"}})
    operator = backend.operator(env={"POOLPILOT_LIST_CHUNK_SIZE": "2"})
    env = ScenarioEnv(kube=backend.kube, operator=operator, namespace=backend.namespace,
                      replicas_become_ready=True)
    create_and_settle(env, "qwen")  # three pool pods
    operator.restart()  # the initial list now has three pods of ours: two pages of two
    wait_for_quiet()
    assert (condition(env.kube.get_pool(env.namespace, "qwen"), "Ready") or {}).get("status") == "True"
    received = sum(count for (agent, plural), count in cluster.emulator.objects_sent.items()
                   if plural == "pods" and agent != TEST_USER_AGENT)
    assert received < 100, f"the operator was sent {received} pods; the cluster has {FOREIGN_PODS} foreign ones"
    pod_lists = [r for r in cluster.emulator.recent_requests()
                 if r.method == "GET" and r.url.path.endswith("/pods") and not r.params.get("watch")]
    assert pod_lists and all("app.kubernetes.io/managed-by=poolpilot" in r.params.get("labelSelector", "")
                             for r in pod_lists)
    assert any(r.params.get("continue") for r in pod_lists), "no second page was asked for"
