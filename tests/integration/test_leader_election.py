"""Two operator replicas and one Lease: one acts, the other stands by, and takes over when the leader dies.

The operators run as processes (``poolpilot run``), with leader election on as in a cluster. On the
embedded server the write log says who wrote what: every write carries its replica's identity in the
User-Agent (``poolpilot/<version> (<identity>)``), Kopf's too.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.crd import generate_crd
from controller.leadership import LOST_LEASE_EXIT_CODE
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import OperatorProcess, free_port
from devkube.nodes import NodeSpec
from devkube.wiring import PodReplicas
from devkube.writelog import WriteRecord
from tests.integration.test_spot_drain import (
    DOOMED_NODE,
    NAMESPACE,
    blocking_budget,
    events,
    interruption_records,
    on_node,
    pool_pods,
    settle,
)
from tests.support.backends import Backend, open_backend
from tests.support.operator_metrics import pool_series, scrape, value
from tests.support.scenarios import ScenarioEnv, create_and_settle, is_current
from tests.support.waiting import eventually

Manifest = dict[str, Any]
# Short timings where the test is not about the defaults: a takeover within about 5 s.
FAST = {"POOLPILOT_LEASE_DURATION_SECONDS": "4", "POOLPILOT_LEASE_RENEW_DEADLINE_SECONDS": "3",
        "POOLPILOT_LEASE_RETRY_PERIOD_SECONDS": "0.5"}
TAKEOVER_LIMIT_SECONDS = 15.0  # issue 11: the standby takes over within 15 s of the leader's death


def replicas_pair(backend: Backend, env: dict[str, str] | None = None) -> tuple[OperatorProcess, OperatorProcess]:
    """replica-a, started first, leads; replica-b stands by."""
    leader = backend.operator(env={**(env or {}), "POOLPILOT_REPORTING_INSTANCE": "replica-a"})
    leader.wait_for_log("became leader", what="replica-a leading")  # /healthz answers on a standby too
    standby = backend.operator(start=False, env={**(env or {}), "POOLPILOT_REPORTING_INSTANCE": "replica-b"})
    standby.start(wait_until_live=False)
    standby.wait_for_log(re.escape(f"standing by: {leader.identity} leads"), what="replica-b standing by")
    return leader, standby


def lease_holder(backend: Backend) -> str | None:
    lease = backend.kube.get("Lease", backend.namespace, "poolpilot")
    return None if lease is None else lease["spec"].get("holderIdentity")


def role(operator: OperatorProcess) -> str:
    """What the replica's /healthz says it is: leader or standby."""
    with urllib.request.urlopen(operator.probe_url("127.0.0.1"), timeout=5) as response:
        role: str = json.loads(response.read())["role"]
        return role


def writes_by(cluster: DevCluster, operator: OperatorProcess, since: int = 0) -> list[WriteRecord]:
    return cluster.writes(since, user_agent=f"({operator.identity})")


def acting_writes(writes: list[WriteRecord]) -> list[tuple[str, str, str | None, int]]:
    """Everything but the replica's own Lease: what acting on the pools looks like."""
    return [(w.method, w.resource, w.name, w.status) for w in writes if w.resource != "leases"]


def test_one_replica_acts_and_the_standby_takes_over_within_15_s_of_a_kill(backend: Backend) -> None:
    """The default timings: the standby leads and evaluates the pool again within 15 s of a SIGKILL."""
    leader, standby = replicas_pair(backend)
    assert lease_holder(backend) == leader.identity
    env = ScenarioEnv(kube=backend.kube, operator=leader, namespace=backend.namespace,
                      replicas_become_ready=backend.replicas_become_ready)
    create_and_settle(env, "qwen")
    assert "PoolPilot started" in leader.log() and "PoolPilot started" not in standby.log()  # no Kopf on standby
    assert (role(leader), role(standby)) == ("leader", "standby")
    assert value(scrape(leader), "poolpilot_leader") == 1 and value(scrape(standby), "poolpilot_leader") == 0
    assert pool_series(scrape(leader), "qwen") and not pool_series(scrape(standby), "qwen")
    if backend.dev is not None:
        assert acting_writes(writes_by(backend.dev, standby)) == []
        assert acting_writes(writes_by(backend.dev, leader))  # the leader did the work

    killed_at = time.monotonic()
    leader.kill()
    # A change only a live leader can evaluate: the dead one never will.
    generation = backend.kube.patch_pool(backend.namespace, "qwen", {"spec": {"replicas": {"min": 4}}})[
        "metadata"]["generation"]
    eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
               lambda p: is_current(p) and p is not None and p["metadata"]["generation"] == generation,
               timeout=30, interval=0.05, what="the pool evaluated by the new leader")
    takeover = time.monotonic() - killed_at
    print(f"takeover after SIGKILL ({backend.name} API server, default timings): {takeover:.1f} s")
    assert takeover < TAKEOVER_LIMIT_SECONDS
    assert lease_holder(backend) == standby.identity
    assert role(standby) == "leader" and value(scrape(standby), "poolpilot_leader") == 1
    lease = backend.kube.get("Lease", backend.namespace, "poolpilot")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1
    spot = backend.kube.get("Deployment", backend.namespace, "qwen-spot")
    assert spot is not None and spot["spec"]["replicas"] == 3
    if backend.dev is not None:
        assert acting_writes(writes_by(backend.dev, standby))


@pytest.mark.embedded_only("needs the write log: which replica wrote what")
def test_a_clean_shutdown_releases_the_lease_and_the_standby_takes_over_at_once(
        backend: Backend, cluster: DevCluster) -> None:
    leader, standby = replicas_pair(backend)  # default timings: an expiry would take 8 s or more
    env = ScenarioEnv(kube=backend.kube, operator=leader, namespace=backend.namespace, replicas_become_ready=True)
    create_and_settle(env, "qwen")
    stopped_at = time.monotonic()
    assert leader.stop() == 0
    assert lease_holder(backend) in ("", standby.identity)  # released on the way out
    standby.wait_for_log("became leader", timeout=10)
    assert time.monotonic() - stopped_at < 4  # one look of the standby (1.5 s), not an expiry (8 s)
    released = [w for w in writes_by(cluster, leader) if w.resource == "leases"][-1]
    assert released.succeeded and released.body["spec"]["holderIdentity"] == ""


@pytest.mark.embedded_only("needs the write log: no write from the frozen leader after its lease lapsed")
def test_a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes_and_exits(
        backend: Backend, cluster: DevCluster) -> None:
    leader, standby = replicas_pair(backend, FAST)
    env = ScenarioEnv(kube=backend.kube, operator=leader, namespace=backend.namespace, replicas_become_ready=True)
    create_and_settle(env, "qwen")
    leader.freeze()  # SIGSTOP: a stalled node, a long pause; its Lease goes unrenewed
    frozen = cluster.mark()
    standby.wait_for_log("became leader", timeout=15)
    # Work the frozen leader will find waiting when it wakes: its watch brings the change, its pool loop runs.
    generation = backend.kube.patch_pool(backend.namespace, "qwen", {"spec": {"replicas": {"min": 4}}})[
        "metadata"]["generation"]
    eventually(lambda: backend.kube.get_pool(backend.namespace, "qwen"),
               lambda p: p is not None and p["status"].get("observedGeneration") == generation,
               what="the new leader evaluated the change")
    first_by_standby = min(w.seq for w in writes_by(cluster, standby, frozen) if w.resource != "leases")
    leader.thaw()
    assert leader.wait(timeout=15) == LOST_LEASE_EXIT_CODE
    after_loss = writes_by(cluster, leader, frozen)
    # At most a Lease renewal, refused (409): nothing that acts, nothing that succeeded.
    assert [(w.resource, w.status) for w in after_loss] in ([], [("leases", 409)]), acting_writes(after_loss)
    assert all(w.seq > first_by_standby for w in after_loss)
    assert "stopping at once (exit 3)" in leader.log()
    assert lease_holder(backend) == standby.identity
    assert acting_writes(writes_by(cluster, standby, frozen))


# --- killed mid-drain ------------------------------------------------------------------------------


@pytest.fixture
def drain_world() -> Iterator[tuple[Backend, DevCluster, FakeVLLMFleet]]:
    """As the spot drain suite's world (tests/integration/test_spot_drain.py): the spot replicas share one node."""
    nodes = [NodeSpec("gpu-on-demand-a", zone="us-east-1a"), NodeSpec(DOOMED_NODE, capacity_type="spot")]
    with open_backend("embedded", None, namespace=NAMESPACE, crds=[generate_crd()],
                      dev_options={"nodes": nodes, "pod_ready_delay": 0.5}) as opened, \
            FakeVLLMFleet.in_thread(0, port=free_port()) as fleet:
        fleet.set_all(waiting=0, running=0, kv=0.2, tokens_per_second=20)
        assert opened.dev is not None
        with PodReplicas(fleet, opened.pods, attach=opened.dev.attach_container):
            yield opened, opened.dev, fleet


def test_a_leader_killed_mid_drain_leaves_exactly_one_replacement_per_doomed_replica(
        drain_world: tuple[Backend, DevCluster, FakeVLLMFleet]) -> None:
    backend, cluster, fleet = drain_world
    leader, standby = replicas_pair(backend, FAST)
    settle(backend, cluster, fleet)
    blocking_budget(backend)  # the drain cannot finish before the kill: every eviction is refused
    doomed = on_node(cluster, DOOMED_NODE)
    before = {p["metadata"]["name"] for p in pool_pods(cluster)}
    cluster.taint_node(DOOMED_NODE, "karpenter.sh/disrupted", effect="NoSchedule")  # Karpenter's notice

    def records() -> list[Manifest]:
        return interruption_records(backend)

    # The leader released both doomed replicas (their records are in the status) and tries to evict them.
    released = eventually(records, lambda r: len(r) == 2 and all(x["evictionAttempts"] >= 1 for x in r),
                          timeout=20, interval=0.05, what="the doomed replicas released")
    # Kopf posts Events from a queue, which a SIGKILL loses: wait for them, or no duplicate could show.
    eventually(lambda: events(backend, "ReplacementOrdered"), lambda m: len(m) == 2, interval=0.05,
               what="the leader's ReplacementOrdered Events")
    leader.kill()
    standby.wait_for_log("became leader", timeout=15)
    eventually(records, lambda r: all(x["evictionAttempts"] > y["evictionAttempts"] for x, y in zip(
        r, released, strict=True)), timeout=20, what="the new leader retrying the same drains")
    created = {p["metadata"]["name"] for p in pool_pods(cluster)} - before
    assert len(created) == 2, created  # one replacement per doomed replica, not two
    spot = backend.kube.get("Deployment", NAMESPACE, "qwen-spot")
    assert spot is not None and spot["spec"]["replicas"] == 2  # the count never moved
    backend.kube.policy.delete_namespaced_pod_disruption_budget("hold-drains", NAMESPACE)
    eventually(records, lambda r: [x["outcome"] for x in r] == ["Drained", "Drained"], timeout=30,
               what="both drains completed")
    assert set(doomed).isdisjoint(p["metadata"]["name"] for p in pool_pods(cluster))
    assert {p["metadata"]["name"] for p in pool_pods(cluster)} - before == created
    eventually(lambda: events(backend, "ReplicaDrained"), lambda m: len(m) == 2, what="one ReplicaDrained each")
    assert len(events(backend, "ReplacementOrdered")) == 2  # no duplicate from the new leader
    assert len(events(backend, "ReplicaDrained")) == 2
    # Who did what: the dead leader released, the new one finished; the standby wrote nothing before.
    releases = [w for w in cluster.writes(resource="pods", method="PATCH") if w.name in doomed and w.succeeded]
    assert releases and all(f"({leader.identity})" in w.user_agent for w in releases[:2])
    evictions = [w for w in cluster.writes(resource="pods", subresource="eviction") if w.succeeded]
    assert evictions and all(f"({standby.identity})" in w.user_agent for w in evictions)
