"""The simulated world one policy runs in: replicas, nodes, spot reclaims, the router and the hosted API.

A discrete-event simulation with a simulated clock. What happens, in the order the world applies it:

* **Requests** arrive from the trace and go through the router's own decision
  (``controller.router.picking.route``, least outstanding requests first, spilling to the API as the
  fallback mode says). A replica is a :class:`~controller.sim.replica.ReplicaEngine` (continuous batching,
  KV cache, preemption); the API answers after its latency and charges per token.
* **Replicas** are asked for by capacity type, as a Deployment's ReplicaSet would bring them: a new pod
  needs a node (on-demand always has one; spot only while the spot trace has a free node, else it stays
  pending and unschedulable), then cold-starts, then serves. A scale-down deletes the newest pods first
  (pending, then not ready, then ready: the ReplicaSet's ranking); a deleted replica stops taking
  requests and finishes what it holds within its grace period.
* **Spot reclaims** come from the spot trace: a node's removal is its termination; the notice comes
  ``notice_seconds`` earlier. What happens at the notice is the policy's: PoolPilot's ``plan`` releases and
  drains (``controller/core/drain.py``); a plain Deployment (the baselines) is evicted at the notice by the
  Node Termination Handler and vLLM's default ``--shutdown-timeout 0`` aborts what the replica holds. At the
  termination whatever is still on the node is aborted. An aborted request that produced no token yet
  goes to the API when the router's ``spill_after`` says so (the pool answered 503 or refused before a
  byte went out); every other aborted request is lost.
* **The operator** (``controller/sim/operator.py``) evaluates every ``scaling.evaluationIntervalSeconds``
  and at once on a notice, reading the signals a Prometheus scrape every 15 s would give it.

Simplifications, each small against what is measured: one router stands for the pool's routers (their
budgets summed); the Service's endpoint update and the router's status watch take no time; a replica's
TTFT is counted into the signals when it finishes (vLLM observes it at the first token); the run starts
warm (the first decision's replicas are ready at t = 0).
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from controller.api.spec import InferencePoolSpec
from controller.api.status import FallbackMode
from controller.core.capacity import CapacityType
from controller.core.notices import NoticeKind
from controller.core.replicas import DrainMark, DrainStage
from controller.core.signals import VLLM_TTFT_BUCKETS
from controller.router.picking import PoolLoad, Route, budget_per_replica, route, spill_after
from controller.sim.profiles import HostedApiProfile, ReplicaProfile
from controller.sim.replica import ReplicaEngine
from controller.sim.request import SimRequest
from controller.sim.spot_traces import SpotTrace
from controller.sim.timeline import Sample, Timeline

__all__ = ["EPOCH", "NoticeHandling", "Prices", "SimPod", "World", "WorldConfig"]

# vLLM's TTFT histogram buckets, +Inf last: what a replica's histogram counts.
TTFT_BUCKETS: tuple[float, ...] = (*VLLM_TTFT_BUCKETS, math.inf)
_HOUR = 3600.0
_MILLION = 1_000_000.0
_SIGKILL_MARGIN_SECONDS = 5.0  # a drained replica stops this long before its node goes
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # simulated time 0, where the core needs a datetime

# What happens to a replica whose node got a reclaim notice: the operator's plan decides ("plan"), the world
# drains it gracefully ("drain", the oracle's perfect drain), or the Node Termination Handler evicts it and
# vLLM's default --shutdown-timeout 0 aborts what it holds ("evict", a plain Deployment).
NoticeHandling = Literal["plan", "drain", "evict"]


@dataclass(frozen=True)
class Prices:
    spot_hourly: float
    on_demand_hourly: float
    api_input_per_million: float
    api_output_per_million: float

    def api_charge(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.api_input_per_million + output_tokens * self.api_output_per_million) / _MILLION


@dataclass(frozen=True)
class WorldConfig:
    spec: InferencePoolSpec
    profile: ReplicaProfile
    api: HostedApiProfile
    prices: Prices
    cold_start_seconds: float
    max_num_seqs: int
    max_model_len: int
    notice_seconds: float = 120.0  # AWS's two-minute warning (data/README.md)
    scrape_seconds: float = 15.0  # Prometheus' scrape interval: the signals are this stale at most
    rate_window_seconds: float = 60.0  # the window of rates (token counters, router arrivals, TTFT)
    sample_seconds: float = 60.0  # the timeline's resolution
    eviction_grace_seconds: float = 30.0  # a plain pod's terminationGracePeriodSeconds (the Kubernetes default)
    scale_down_grace_seconds: float | None = None  # None: the spec's interruption.drainSeconds
    drain_after_seconds: float = 900.0  # after the trace ends, in-flight requests get this long to finish


class SimPod:
    """One replica pod: where it runs, whether it serves, and its engine once it started."""

    __slots__ = ("billed_from", "capacity_type", "created_at", "drain", "engine", "gone", "name", "node", "ready",
                 "ready_at", "serving", "terminating_until", "uid", "unschedulable_since")

    def __init__(self, name: str, capacity_type: CapacityType, created_at: float) -> None:
        self.name = name
        self.uid = f"uid-{name}"
        self.capacity_type = capacity_type
        self.created_at = created_at
        self.node: str | None = None
        self.unschedulable_since: float | None = None
        self.ready = False
        self.ready_at: float | None = None
        self.engine: ReplicaEngine | None = None
        self.serving = False  # in the Service's endpoints: the router may pick it
        self.drain: DrainMark | None = None  # released by PoolPilot: out of its Deployment
        self.terminating_until: float | None = None  # deleted: gone by then at the latest
        self.gone = False
        self.billed_from: float | None = None  # a node runs for it (billed) since then

    @property
    def live(self) -> bool:
        """Counted by its Deployment: not released, not being deleted, not gone."""
        return self.drain is None and self.terminating_until is None and not self.gone


@dataclass
class Totals:
    """What a run adds up to."""

    requests: int = 0
    served_pool: int = 0
    served_api: int = 0
    lost: int = 0
    rejected: int = 0  # longer than the model's context: vLLM answers 400 (counted apart, not lost)
    within_slo: int = 0
    ttfts: list[float] = field(default_factory=list)
    pool_tokens: int = 0
    api_tokens: int = 0
    api_cost: float = 0.0
    spot_seconds: float = 0.0  # replica-seconds billed
    on_demand_seconds: float = 0.0
    reclaims: int = 0
    preemptions: int = 0
    events: dict[str, int] = field(default_factory=dict)  # Events by reason (PoolPilot's)


class World:
    """One policy's run over one trace. ``controller`` is called as ``controller(world, now)``."""

    def __init__(self, config: WorldConfig, requests: Sequence[SimRequest], spot: SpotTrace, *,
                 controller: Callable[[World, float], None], interval_seconds: float, on_notice: NoticeHandling,
                 name: str, duration_seconds: float) -> None:
        self.config = config
        self.name = name
        self.requests = requests
        self.controller = controller
        self.interval_seconds = interval_seconds
        self.on_notice = on_notice
        self.duration = duration_seconds
        self.spec = config.spec
        self.has_provider = config.spec.fallback.enabled and config.spec.fallback.provider is not None
        self.mode: FallbackMode = "Off"
        self.pods: dict[str, SimPod] = {}
        self.desired: dict[CapacityType, int] = {CapacityType.SPOT: 0, CapacityType.ON_DEMAND: 0}
        self.load = PoolLoad()
        # The router's configured budget (--max-num-seqs plus the saturation queue, both routers together);
        # the operator's status may report less (status.fallback.inFlightPerReplica), see ``observe_budget``.
        self.configured_budget = config.max_num_seqs + max(
            1, math.ceil(config.spec.fallback.saturation.queue_depth_per_replica))
        self.budget_per_replica = self.configured_budget
        self.totals = Totals()
        self.timeline = Timeline(policy=name, interval_seconds=config.sample_seconds)
        self._names = itertools.count()
        self._queue: list[tuple[float, int, str, Any]] = []
        self._sequence = itertools.count()
        self._serving: tuple[str, ...] = ()
        self._serving_dirty = True
        self._engines: dict[str, ReplicaEngine] = {}  # pods whose engine may still hold requests
        self._request_pod: dict[int, str] = {}
        # Spot capacity: free nodes, nodes doomed by a notice, which pod runs where.
        self.free_nodes: list[str] = sorted(spot.initial_nodes)
        self._doomed: dict[str, float] = {}  # node -> termination time
        self._node_pod: dict[str, str] = {}
        self._pending: list[str] = []  # spot pods waiting for a node, oldest first
        self.notices: dict[str, tuple[str, float]] = {}  # node -> (event id, termination time)
        # Counters the signals are formed from (cumulative, as Prometheus sees them).
        self.router_arrivals = 0
        self.router_spills = 0
        self.api_prompt_tokens = 0
        self.api_generation_tokens = 0
        self._retired_prompt = 0
        self._retired_generation = 0
        self.ttft_counts = [0] * len(TTFT_BUCKETS)  # cumulative per bucket (non-cumulative over buckets)
        self.scrapes: list[Scrape] = []
        self._last_accrual = 0.0
        self._billed = {CapacityType.SPOT: 0, CapacityType.ON_DEMAND: 0}
        self._interval = _IntervalCounts()
        self.api_in_flight: list[float] = []  # finish times of API requests (a heap)
        self._ended = False  # the trace is over: nothing is billed or replaced any more
        for event in spot.events:
            if event.kind == "remove":
                self._push(max(0.0, event.t - config.notice_seconds), "notice", (event.node, event.t))
                self._push(event.t, "reclaim", event.node)
            else:
                self._push(event.t, "add_node", event.node)

    # ------------------------------------------------------------------------------------------ running

    def run(self, progress: Callable[[float], None] | None = None) -> Totals:
        end = self.duration
        self._push(0.0, "evaluate", None)
        self._push(0.0, "scrape", None)
        self._push(self.config.sample_seconds, "sample", None)
        prepare = getattr(self.controller, "prepare", None)
        if prepare is not None:
            prepare(self)  # a pool that has been running: its Deployments exist, at their minimum
        else:
            self.controller(self, 0.0)  # a baseline's first decision
        self._warm_start()
        arrivals = iter(self.requests)
        upcoming = next(arrivals, None)
        last_progress = 0.0
        while True:
            next_event = self._queue[0][0] if self._queue else math.inf
            if upcoming is not None and upcoming.arrival <= next_event and upcoming.arrival <= end:
                now = upcoming.arrival
                self._advance(now)
                self._arrive(upcoming, now)
                upcoming = next(arrivals, None)
                continue
            if next_event > end:
                break
            now, _, kind, payload = heapq.heappop(self._queue)
            self._advance(now)
            self._handle(kind, payload, now)
            if progress is not None and now - last_progress >= 60.0:
                progress(now)
                last_progress = now
        self._advance(end)
        self._finish(end)
        return self.totals

    def _push(self, at: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._sequence), kind, payload))

    def _handle(self, kind: str, payload: Any, now: float) -> None:
        if kind == "evaluate":
            self.controller(self, now)
            self._push(now + self.interval_seconds, "evaluate", None)
        elif kind == "evaluate_now":
            self.controller(self, now)
        elif kind == "scrape":
            self.scrapes.append(self._scrape(now))
            self._push(now + self.config.scrape_seconds, "scrape", None)
        elif kind == "sample":
            self._sample(now)
            self._push(now + self.config.sample_seconds, "sample", None)
        elif kind == "ready":
            self._become_ready(payload, now)
        elif kind == "gone":
            self._terminate(payload, now)
        elif kind == "notice":
            self._notice(*payload, now=now)
        elif kind == "reclaim":
            self._reclaim(payload, now)
        elif kind == "add_node":
            self.free_nodes.append(payload)
            self._place_pending(now)

    def _warm_start(self) -> None:
        """The run starts warm: what the first decision asked for is placed and ready at t = 0."""
        for pod in self.pods.values():
            if pod.node is not None and not pod.ready:
                self._become_ready(pod.name, 0.0)

    # ------------------------------------------------------------------------------------------ time

    def _advance(self, now: float) -> None:
        """Bill the nodes up to ``now`` and collect what the engines finished by then."""
        elapsed = now - self._last_accrual
        if elapsed > 0 and not self._ended:
            self.totals.spot_seconds += elapsed * self._billed[CapacityType.SPOT]
            self.totals.on_demand_seconds += elapsed * self._billed[CapacityType.ON_DEMAND]
            self._last_accrual = now
        drained: list[str] = []
        for name, engine in self._engines.items():
            if engine.next_change <= now:
                engine.advance(now)
                for request in engine.pop_finished():
                    self._served(request, name, "pool")
            pod = self.pods[name]
            if pod.terminating_until is not None and engine.outstanding == 0:
                drained.append(name)
        for name in drained:
            self._terminate(name, now)

    # ------------------------------------------------------------------------------------------ requests

    def _arrive(self, request: SimRequest, now: float) -> None:
        self.totals.requests += 1
        self._interval.arrivals += 1
        self.router_arrivals += 1
        decision = route(self.mode, self._serving_pods(), self.load, budget_per_replica=self.budget_per_replica,
                         has_provider=self.has_provider)
        self._send(request, decision, now)

    def _send(self, request: SimRequest, decision: Route, now: float) -> None:
        if decision.backend == "pool" and decision.replica is not None:
            engine = self.pods[decision.replica].engine
            assert engine is not None
            if not engine.submit(request, now):
                self.totals.rejected += 1
                request.served_by = "lost"
                return
            self.load.started(decision.replica)
            self._request_pod[request.id] = decision.replica
        elif decision.backend == "api":
            self.router_spills += 1
            self._to_api(request, now)
        else:
            self._lose(request)

    def _to_api(self, request: SimRequest, now: float) -> None:
        api = self.config.api
        request.first_token_at = now + api.ttft_seconds
        request.finished_at = request.first_token_at + request.output_tokens / api.output_tokens_per_second
        heapq.heappush(self.api_in_flight, request.finished_at)
        self.api_prompt_tokens += request.prompt_tokens
        self.api_generation_tokens += request.output_tokens
        self._interval.api += 1
        charge = self.config.prices.api_charge(request.prompt_tokens, request.output_tokens)
        self.totals.api_cost += charge
        self._interval.api_cost += charge
        self._served(request, None, "api")

    def _served(self, request: SimRequest, pod: str | None, by: str) -> None:
        totals = self.totals
        if pod is not None:
            self.load.finished(pod)
            self._request_pod.pop(request.id, None)
            totals.served_pool += 1
            totals.pool_tokens += request.prompt_tokens + request.output_tokens
        else:
            totals.served_api += 1
            totals.api_tokens += request.prompt_tokens + request.output_tokens
        request.served_by = "pool" if by == "pool" else "api"
        ttft = request.ttft
        assert ttft is not None
        totals.ttfts.append(ttft)
        if ttft <= self.spec.slo.ttft_seconds:
            totals.within_slo += 1
        if pod is not None:  # what the replica's own TTFT histogram counts
            self.ttft_counts[bisect_left(TTFT_BUCKETS, ttft)] += 1

    def _lose(self, request: SimRequest) -> None:
        request.served_by = "lost"
        self.totals.lost += 1
        self._interval.lost += 1

    def _aborted(self, requests: Sequence[SimRequest], pod: str, status: int | None, now: float) -> None:
        """Requests a replica dropped: to the API if none of their bytes went out and the router spills."""
        for request in requests:
            self.load.finished(pod)
            self._request_pod.pop(request.id, None)
            if request.first_token_at is None and spill_after(self.mode, has_provider=self.has_provider,
                                                                status=status) is not None:
                self.router_spills += 1
                self._to_api(request, now)
            else:
                request.first_token_at = None
                self._lose(request)

    def observe_budget(self, observed: int | None) -> None:
        """The router follows the pool's status: its budget per replica, as ``poolpilot router`` computes it."""
        self.budget_per_replica = budget_per_replica(self.configured_budget, observed)

    def _serving_pods(self) -> tuple[str, ...]:
        if self._serving_dirty:
            self._serving = tuple(sorted(name for name, pod in self.pods.items() if pod.serving and pod.ready))
            self._serving_dirty = False
        return self._serving

    # ------------------------------------------------------------------------------------------ replicas

    def set_desired(self, capacity_type: CapacityType, replicas: int, now: float) -> None:
        """A Deployment's replica count: the ReplicaSet creates or deletes pods to match."""
        self.desired[capacity_type] = replicas
        self.reconcile_replicas(now)

    def reconcile_replicas(self, now: float) -> None:
        for capacity_type, wanted in self.desired.items():
            live = [p for p in self.pods.values() if p.capacity_type is capacity_type and p.live]
            for _ in range(wanted - len(live)):
                self._create(capacity_type, now)
            if len(live) > wanted:
                # The ReplicaSet deletes unscheduled pods first, then not ready, then the newest.
                ranked = sorted(live, key=lambda p: (p.node is not None, p.ready, -p.created_at))
                for pod in ranked[:len(live) - wanted]:
                    self.delete(pod.name, now, grace=self._scale_down_grace())

    def _scale_down_grace(self) -> float:
        grace = self.config.scale_down_grace_seconds
        return float(self.spec.interruption.drain_seconds) if grace is None else grace

    def _create(self, capacity_type: CapacityType, now: float) -> None:
        pod = SimPod(f"{self.name}-{capacity_type.value}-{next(self._names)}", capacity_type, now)
        self.pods[pod.name] = pod
        if capacity_type is CapacityType.ON_DEMAND:
            self._place(pod, f"od-{pod.name}", now)
        elif self.free_nodes:
            self._place(pod, self.free_nodes.pop(0), now)
        else:
            pod.unschedulable_since = now
            self._pending.append(pod.name)

    def _place(self, pod: SimPod, node: str, now: float) -> None:
        pod.node = node
        pod.unschedulable_since = None
        pod.billed_from = now
        self._billed[pod.capacity_type] += 1
        self._node_pod[node] = pod.name
        pod.ready_at = now + self.config.cold_start_seconds
        self._push(pod.ready_at, "ready", pod.name)

    def _place_pending(self, now: float) -> None:
        while self._pending and self.free_nodes:
            pod = self.pods[self._pending.pop(0)]
            if pod.gone or pod.terminating_until is not None:
                continue
            self._place(pod, self.free_nodes.pop(0), now)

    def _become_ready(self, name: str, now: float) -> None:
        pod = self.pods.get(name)
        if pod is None or pod.gone or pod.ready or pod.terminating_until is not None:
            return
        pod.ready = True
        pod.ready_at = now
        config = self.config
        pod.engine = ReplicaEngine(config.profile, max_num_seqs=config.max_num_seqs,
                                   max_model_len=config.max_model_len, start=now)
        self._engines[name] = pod.engine
        pod.serving = pod.drain is None
        self._serving_dirty = True

    def release(self, name: str, mark: DrainMark, *, serving: bool) -> None:
        """PoolPilot's release patch: out of its Deployment (the ReplicaSet replaces it), in routing or not."""
        pod = self.pods[name]
        pod.drain = mark
        pod.serving = serving and pod.ready
        self._serving_dirty = True

    def delete(self, name: str, now: float, *, grace: float) -> None:
        """Graceful deletion: out of the endpoints at once, the process finishes what it holds until ``grace``."""
        pod = self.pods.get(name)
        if pod is None or pod.gone or pod.terminating_until is not None:
            return
        pod.serving = False
        self._serving_dirty = True
        if name in self._pending:
            self._pending.remove(name)
        if pod.engine is None or pod.engine.outstanding == 0 or grace <= 0:
            self._terminate(name, now, status=503)
            return
        pod.terminating_until = now + grace
        self._push(pod.terminating_until, "gone", name)

    def _terminate(self, name: str, now: float, *, status: int | None = 503) -> None:
        """The replica's process is gone: what it still holds is aborted, its node freed (or gone)."""
        pod = self.pods.get(name)
        if pod is None or pod.gone:
            return
        pod.gone = True
        pod.serving = False
        pod.ready = False
        self._serving_dirty = True
        engine = self._engines.pop(name, None)
        if engine is not None:
            self._aborted(engine.abort(now), name, status, now)
            self._retired_prompt += engine.prompt_tokens_total
            self._retired_generation += engine.generation_tokens_total
            self.totals.preemptions += engine.preemptions_total
        if pod.billed_from is not None and not self._ended:
            self._billed[pod.capacity_type] -= 1
        if pod.node is not None:
            self._node_pod.pop(pod.node, None)
            if pod.capacity_type is CapacityType.SPOT and pod.node not in self._doomed:
                self.free_nodes.append(pod.node)
                self._place_pending(now)
        del self.pods[name]
        if name in self._pending:
            self._pending.remove(name)
        if not self._ended:
            self.reconcile_replicas(now)

    # ------------------------------------------------------------------------------------------ spot

    def _notice(self, node: str, terminates_at: float, *, now: float) -> None:
        self._doomed[node] = terminates_at
        if node in self.free_nodes:
            self.free_nodes.remove(node)
        name = self._node_pod.get(node)
        if name is None:
            return
        self.totals.reclaims += 1
        self.timeline.reclaims.append(now)
        self.notices[node] = (f"reclaim-{node}-{terminates_at:.0f}", terminates_at)
        if self.on_notice == "plan":
            self._push(now, "evaluate_now", None)  # the operator reacts to a notice at once
        elif self.on_notice == "drain":
            # Out of the Deployment (the ReplicaSet replaces it at once) and out of routing; it finishes
            # what it holds until shortly before the node goes.
            pod = self.pods[name]
            pod.drain = DrainMark(stage=DrainStage.DRAINING, kind=NoticeKind.SPOT_INTERRUPTION, source="oracle",
                                  capacity_type=pod.capacity_type, noticed_at=EPOCH, deadline=EPOCH)
            self.delete(name, now, grace=max(0.0, terminates_at - now - _SIGKILL_MARGIN_SECONDS))
            self.reconcile_replicas(now)
            self._push(now, "evaluate_now", None)
        else:
            # The Node Termination Handler drains the node: an eviction, and vLLM's default
            # --shutdown-timeout 0 aborts what the replica holds.
            self._terminate(name, now, status=503)

    def _reclaim(self, node: str, now: float) -> None:
        self._doomed.pop(node, None)
        self.notices.pop(node, None)
        name = self._node_pod.get(node)
        if name is not None:
            self._terminate(name, now, status=None)

    # ------------------------------------------------------------------------------------------ signals

    def _scrape(self, now: float) -> Scrape:
        waiting = running = 0
        kv: list[float] = []
        prompt = self._retired_prompt
        generation = self._retired_generation
        for name, engine in self._engines.items():
            prompt += engine.prompt_tokens_total
            generation += engine.generation_tokens_total
            pod = self.pods[name]
            if pod.ready and pod.terminating_until is None:
                waiting += engine.waiting
                running += engine.running
                kv.append(engine.kv_usage)
        in_flight = self.load.total
        while self.api_in_flight and self.api_in_flight[0] <= now:
            heapq.heappop(self.api_in_flight)
        return Scrape(at=now, waiting=waiting, running=running, kv=sum(kv) / len(kv) if kv else None,
                      reporting=len(kv), prompt_tokens=prompt, generation_tokens=generation,
                      router_arrivals=self.router_arrivals, router_spills=self.router_spills,
                      router_in_flight=in_flight + len(self.api_in_flight), api_prompt_tokens=self.api_prompt_tokens,
                      api_generation_tokens=self.api_generation_tokens, ttft_counts=tuple(self.ttft_counts))

    def latest_scrape(self) -> Scrape | None:
        return self.scrapes[-1] if self.scrapes else None

    def scrape_before(self, at: float) -> Scrape | None:
        """The newest scrape at or before ``at``: the start of a rate window."""
        for scrape in reversed(self.scrapes):
            if scrape.at <= at:
                return scrape
        return self.scrapes[0] if self.scrapes else None

    def prune_scrapes(self, keep_seconds: float) -> None:
        if len(self.scrapes) > 64:
            cutoff = self.scrapes[-1].at - keep_seconds
            self.scrapes = [s for s in self.scrapes if s.at >= cutoff]

    # ------------------------------------------------------------------------------------------ report

    def counts(self) -> tuple[int, int, int]:
        """(spot asked for, on-demand asked for, ready and serving)."""
        spot = sum(1 for p in self.pods.values() if p.capacity_type is CapacityType.SPOT and not p.gone)
        on_demand = sum(1 for p in self.pods.values() if p.capacity_type is CapacityType.ON_DEMAND and not p.gone)
        return spot, on_demand, len(self._serving_pods())

    def _sample(self, now: float) -> None:
        interval = self._interval
        seconds = self.config.sample_seconds
        spot, on_demand, ready = self.counts()
        scrape = self.scrapes[-1] if self.scrapes else None
        prices = self.config.prices
        replica_hourly = (self._billed[CapacityType.SPOT] * prices.spot_hourly
                          + self._billed[CapacityType.ON_DEMAND] * prices.on_demand_hourly)
        self.timeline.samples.append(Sample(
            t=now, arrivals_per_second=interval.arrivals / seconds, spot_replicas=spot, on_demand_replicas=on_demand,
            ready_replicas=ready, queue_depth=float(scrape.waiting) if scrape else 0.0,
            api_share=interval.api / interval.arrivals if interval.arrivals else 0.0,
            cost_per_hour=replica_hourly + interval.api_cost * _HOUR / seconds, lost=interval.lost))
        self._interval = _IntervalCounts()
        self.prune_scrapes(keep_seconds=max(600.0, 2 * self.config.rate_window_seconds))

    def _finish(self, end: float) -> None:
        """The trace is over: nodes stop being billed; what is in flight gets time to finish."""
        self._ended = True
        limit = end + self.config.drain_after_seconds
        self.mode = "Off"
        while self._engines:
            upcoming = min(engine.next_change for engine in self._engines.values())
            if upcoming > limit:
                break
            self._advance(upcoming)
            for name in [n for n, e in self._engines.items() if e.outstanding == 0]:
                self._terminate(name, upcoming)
        for name in list(self._engines):
            self._terminate(name, limit, status=None)


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one Prometheus scrape of the pool saw (gauges) and the counters so far."""

    at: float
    waiting: int
    running: int
    kv: float | None
    reporting: int
    prompt_tokens: int
    generation_tokens: int
    router_arrivals: int
    router_spills: int
    router_in_flight: int
    api_prompt_tokens: int
    api_generation_tokens: int
    ttft_counts: tuple[int, ...]


@dataclass(slots=True)
class _IntervalCounts:
    arrivals: int = 0
    api: int = 0
    lost: int = 0
    api_cost: float = 0.0
