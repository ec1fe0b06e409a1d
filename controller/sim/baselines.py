"""The baseline autoscalers the simulator runs beside PoolPilot, each modelled after its documented defaults.

Every baseline is a :class:`~controller.sim.policy.Policy`: the world calls ``decide(view)`` every
``interval_seconds`` of simulated time and brings the spot and on-demand replica counts to the returned
:class:`~controller.sim.policy.Target`, as a Deployment's ReplicaSet would. ``make_policy(name, context)``
builds one by name (``BASELINE_NAMES``). The policies are deterministic and pure: time is ``view.now``,
there is no I/O, and the only state is what the real autoscaler keeps between its own decisions.

``static-ondemand``
    What you would buy for the peak: ``ceil(peak_requests_per_second / replica_requests_per_second)``
    on-demand replicas (at least ``replicas.min``), constant. It is deliberately *not* capped by
    ``replicas.max``: it stands for "provision for the peak", whatever bounds the autoscaled pool has.
``keda`` / ``keda-spot``
    KEDA's Prometheus scaler on ``sum(vllm:num_requests_waiting)``, ``metricType: AverageValue`` with
    the pool's ``scaling.targetQueueDepthPerReplica`` as ``threshold``: one queue trigger, no KV-cache
    trigger (what a plain KEDA install of vLLM scales on). The HPA KEDA generates runs its v2 algorithm
    with the default behaviour. ``keda`` runs on-demand replicas; ``keda-spot`` runs every replica on
    spot, and a spot replica that finds no capacity stays pending: neither KEDA nor the HPA knows of
    spot. Modelled (k8s-autoscaling-and-spot.md §1, §2):

    * KEDA refreshes the metric it serves every ``pollingInterval`` (30 s); the HPA reads it at each
      15 s sync, so it sees a queue change only at KEDA's next poll. This is exactly the served value
      with the trigger's ``useCachedMetrics: true`` (§1.1); without it the metrics server asks
      Prometheus at each HPA sync and the staleness is Prometheus' scrape interval instead.
    * ``desired = ceil(metric / threshold)`` (AverageValue, independent of the current count), skipped
      while ``|metric / (threshold * current) - 1| <= 0.1``.
    * Stabilization: scale-up takes the minimum of the recommendations of the last 0 s (none: at
      once), scale-down the maximum of those of the last 300 s. Rate: up by at most
      ``max(+4 pods, +100 %)`` per 15 s, down by at most 100 % per 15 s. Bounds: the HPA's
      ``minReplicas = max(1, minReplicaCount)`` .. ``maxReplicaCount`` (``replicas.min`` .. ``.max``).
    * With ``replicas.min`` 0, KEDA itself moves 0 <-> 1 at its polls: active while the metric
      exceeds ``activationThreshold`` (0), back to 0 after ``cooldownPeriod`` (300 s) inactive. A queue
      trigger at zero replicas reads 0 (no pod reports the series; ``ignoreNullValues`` makes it 0), so
      such a pool never wakes up: that is the real limitation of a queue-only trigger, kept as is.
    * The Deployment starts at ``max(1, replicas.min)`` replicas (the HPA's floor; a Deployment's
      default is 1), and the HPA's ``currentReplicas`` is the count it last set (``scale.spec.replicas``).
``skyserve``
    SkyServe's ``FallbackRequestRateAutoscaler`` with its defaults (papers-and-traces.md §1.1, SkyPilot
    ``sky/serve/autoscalers.py`` and ``sky/serve/constants.py``): a request rate over 60 s
    (``view.arrivals_per_second``), ``target = clip(ceil(rate / target_qps_per_replica), min, max)``
    with ``target_qps_per_replica = replica_requests_per_second``. A higher target is taken only when
    15 consecutive decisions (300 s / 20 s) asked for more, a lower one after 60 (1,200 s / 20 s): the
    counters SkyPilot keeps (``upscale_counter`` / ``downscale_counter``), reset when a decision asks
    for the current target or the other way; from a target of 0 it scales up at once. Decisions every
    20 s, every 5 s while the final target is 0. The final target adds ``num_overprovision`` (1) spot
    replicas; spot = final - ``base_ondemand_fallback_replicas`` (1); with ``dynamic_ondemand_fallback``
    on-demand = base + max(0, spot - ready spot), at most the target without the overprovision (as
    SkyPilot caps it). The run starts warm: the first decision takes the target from the current rate
    at once, as SkyServe does after a service update. A preempted replica is relaunched and its
    requests are lost (``drains_on_notice`` False: "SkyServe relies on the user side to retry",
    SkyPilot ``docs/source/serving/spot-policy.rst``). It never uses the hosted API.
``api-only``
    No replica at all; every request goes to the hosted API (fallback ``Full``).
``oracle``
    A hindsight policy: see :class:`Oracle` for exactly how it is computed and what it assumes.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque

from controller.api.status import FallbackMode
from controller.sim.policy import Policy, PolicyContext, PoolView, Target

__all__ = [
    "BASELINE_NAMES",
    "ApiOnly",
    "KedaHpa",
    "Oracle",
    "SkyServeFallback",
    "StaticOnDemand",
    "make_policy",
]

BASELINE_NAMES: tuple[str, ...] = ("static-ondemand", "keda", "keda-spot", "skyserve", "api-only", "oracle")

_HOUR = 3600.0
_MILLION = 1_000_000.0
_TIME_SLACK = 1e-6  # seconds: float slack when comparing simulated times (accumulated sums of intervals)
_CEIL_SLACK = 1e-9  # so an exact multiple (2.0000000001 from float division) does not round up a replica

# ------------------------------------------------------------------------------------------ KEDA / HPA
# k8s-autoscaling-and-spot.md §1.1 (kedacore/keda apis/keda/v1alpha1/withtriggers_types.go
# defaultPollingInterval = 30)
KEDA_POLLING_INTERVAL_SECONDS = 30.0
# §1.1 (kedacore/keda pkg/scaling/executor/scale_executor.go defaultCooldownPeriod = 5 * 60): only for -> 0
KEDA_COOLDOWN_SECONDS = 300.0
# §1.2 (kedacore/keda pkg/scalers/prometheus_scaler.go: activationThreshold default 0, active iff value > it)
KEDA_ACTIVATION_THRESHOLD = 0.0
# §2 (kubernetes pkg/controller/podautoscaler/config/v1alpha1/defaults.go: sync period 15 s)
HPA_SYNC_SECONDS = 15.0
# §2 (same defaults.go: HorizontalPodAutoscalerTolerance = 0.1)
HPA_TOLERANCE = 0.1
# §2 (kubernetes pkg/apis/autoscaling/v2/defaults.go: scaleUp stabilizationWindowSeconds 0, policies
# Pods 4 / 15 s and Percent 100 / 15 s, selectPolicy Max)
HPA_SCALE_UP_STABILIZATION_SECONDS = 0.0
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_PERCENT = 100
# §2 (same file: scaleDown stabilizationWindowSeconds = controller flag, default 300; Percent 100 / 15 s)
HPA_SCALE_DOWN_STABILIZATION_SECONDS = 300.0
HPA_SCALE_DOWN_PERCENT = 100
# §2: both default policies have periodSeconds 15, the sync period: the previous sync's change is outside
# the period at the next sync, so every sync's limit is relative to the current count.
HPA_POLICY_PERIOD_SECONDS = 15.0

# ------------------------------------------------------------------------------------------ SkyServe
# papers-and-traces.md §1.1 (skypilot sky/serve/constants.py @ 6c4a928):
SKYSERVE_DECISION_INTERVAL_SECONDS = 20.0  # AUTOSCALER_DEFAULT_DECISION_INTERVAL_SECONDS
SKYSERVE_NO_REPLICA_DECISION_INTERVAL_SECONDS = 5.0  # AUTOSCALER_NO_REPLICA_DECISION_INTERVAL_SECONDS
SKYSERVE_UPSCALE_DELAY_SECONDS = 300.0  # AUTOSCALER_DEFAULT_UPSCALE_DELAY_SECONDS
SKYSERVE_DOWNSCALE_DELAY_SECONDS = 1200.0  # AUTOSCALER_DEFAULT_DOWNSCALE_DELAY_SECONDS
# The rate window (AUTOSCALER_QPS_WINDOW_SIZE_SECONDS = 60) is view.arrivals_per_second's own 60 s.
# SkyPilot's code default is 0; 1 is what SkyServe's spot examples keep on on-demand: the "Base on-demand
# Fallback" example of docs/source/serving/spot-policy.rst and examples/serve/policy/
# base_on_demand_fallback_replicas.yaml ("Ensures that one of the replicas is run on on-demand
# instances"). The SpotHedge examples themselves (spot-hedge.rst, e2e/spot_hedge.yaml) leave it unset.
SKYSERVE_BASE_ONDEMAND_FALLBACK_REPLICAS = 1
# papers-and-traces.md §1.1: SpotHedge's artifact (MaoZiming/spothedge_ae e2e/spot_hedge.yaml) sets
# num_overprovision 1 and its main simulated runs use overprovision 1; SkyPilot's own examples
# (docs/source/serving/spot-hedge.rst, examples/serve/policy/spot_hedge.yaml) set 1 as well. SkyPilot's
# code default is none (0): 1 is the examples' value, not the code's.
SKYSERVE_NUM_OVERPROVISION = 1
SKYSERVE_DYNAMIC_ONDEMAND_FALLBACK = True  # papers-and-traces.md §1.1: SpotHedge's dynamic_ondemand_fallback

# ------------------------------------------------------------------------------------------ the others
STATIC_INTERVAL_SECONDS = 60.0  # a constant count: how often it is restated does not matter
API_ONLY_INTERVAL_SECONDS = 60.0
# The oracle's "minimum useful life" of a replica: a spike shorter than a cold start plus this is a
# candidate for the API. A modelling choice (10 min), not a measured figure.
ORACLE_MIN_USEFUL_LIFE_SECONDS = 600.0


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _CEIL_SLACK))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


# ------------------------------------------------------------------------------------------ static


class StaticOnDemand:
    """On-demand replicas bought for the trace's peak, never changed, no API."""

    def __init__(self, context: PolicyContext) -> None:
        self.name = "static-ondemand"
        self.interval_seconds = STATIC_INTERVAL_SECONDS
        self.drains_on_notice = False
        peak_replicas = _ceil(context.peak_requests_per_second / context.replica_requests_per_second)
        # Not capped by replicas.max: this is the peak's purchase, not an autoscaler inside the pool's bounds.
        self.replicas = max(context.spec.replicas.min, peak_replicas)
        self._target = Target(spot=0, on_demand=self.replicas, fallback="Off")

    def decide(self, view: PoolView) -> Target:
        return self._target


# ------------------------------------------------------------------------------------------ api only


class ApiOnly:
    """No replicas: the hosted API serves everything."""

    def __init__(self) -> None:
        self.name = "api-only"
        self.interval_seconds = API_ONLY_INTERVAL_SECONDS
        self.drains_on_notice = False
        self._target = Target(spot=0, on_demand=0, fallback="Full")

    def decide(self, view: PoolView) -> Target:
        return self._target


# ------------------------------------------------------------------------------------------ KEDA


class KedaHpa:
    """KEDA's Prometheus queue trigger driving the HPA it generates (module docstring: ``keda``)."""

    def __init__(self, context: PolicyContext, *, spot: bool,
                 polling_interval_seconds: float = KEDA_POLLING_INTERVAL_SECONDS) -> None:
        spec = context.spec
        self.name = "keda-spot" if spot else "keda"
        self.interval_seconds = HPA_SYNC_SECONDS
        self.drains_on_notice = False
        self.spot = spot
        self.threshold = spec.scaling.target_queue_depth_per_replica
        self.min_replica_count = spec.replicas.min
        self.hpa_min = max(1, spec.replicas.min)  # KEDA's GetHPAMinReplicas (§1.1)
        self.hpa_max = spec.replicas.max
        self.polling_interval_seconds = polling_interval_seconds
        self.replicas = self.hpa_min  # scale.spec.replicas: what KEDA or the HPA last wrote
        self.metric = 0.0  # the value KEDA serves the HPA, as of its last poll
        self._next_poll_at = 0.0
        self._last_active_at: float | None = None
        self._recommendations: deque[tuple[float, int]] = deque()  # (time, unstabilized desired)

    def decide(self, view: PoolView) -> Target:
        now = view.now
        if now + _TIME_SLACK >= self._next_poll_at:
            self._poll(view.queue_depth, now)
            while self._next_poll_at <= now + _TIME_SLACK:
                self._next_poll_at += self.polling_interval_seconds
        if self.replicas > 0:  # at 0 the HPA is disabled (ScalingDisabled) and only KEDA can wake the target
            self.replicas = self._hpa_sync(now)
        if self.spot:
            return Target(spot=self.replicas, on_demand=0, fallback="Off")
        return Target(spot=0, on_demand=self.replicas, fallback="Off")

    def _poll(self, queue_depth: float, now: float) -> None:
        """KEDA's poll: refresh the served metric; with minReplicaCount 0, move the target 0 <-> 1."""
        self.metric = queue_depth
        active = queue_depth > KEDA_ACTIVATION_THRESHOLD
        if active:
            self._last_active_at = now
        if self.min_replica_count > 0:
            return
        if active and self.replicas == 0:
            self.replicas = 1
        elif not active and self.replicas > 0:
            # Never active: KEDA counts from creation + initialCooldownPeriod, 0 s by default (§1.1).
            last_active = self._last_active_at
            if last_active is None or now + _TIME_SLACK >= last_active + KEDA_COOLDOWN_SECONDS:
                self.replicas = 0

    def _hpa_sync(self, now: float) -> int:
        current = self.replicas
        if current > self.hpa_max:
            return self.hpa_max
        if current < self.hpa_min:
            return self.hpa_min
        desired = self._metric_replicas(current)
        return self._normalize(desired, current, now)

    def _metric_replicas(self, current: int) -> int:
        """External metric, AverageValue target: ceil(metric / target) unless within the tolerance."""
        usage_ratio = self.metric / (self.threshold * current)
        if abs(1.0 - usage_ratio) <= HPA_TOLERANCE:
            return current
        return math.ceil(self.metric / self.threshold)

    def _normalize(self, desired: int, current: int, now: float) -> int:
        """Stabilization windows, then the rate policies and the bounds (HPA ``normalizeDesiredReplicas...``)."""
        up_recommendation = desired
        down_recommendation = desired
        up_cutoff = now - HPA_SCALE_UP_STABILIZATION_SECONDS
        down_cutoff = now - HPA_SCALE_DOWN_STABILIZATION_SECONDS
        for at, recommendation in self._recommendations:
            if at > up_cutoff + _TIME_SLACK:
                up_recommendation = min(up_recommendation, recommendation)
            if at > down_cutoff + _TIME_SLACK:
                down_recommendation = max(down_recommendation, recommendation)
        stabilized = current
        stabilized = max(stabilized, up_recommendation)
        stabilized = min(stabilized, down_recommendation)
        self._recommendations.append((now, desired))
        oldest_kept = now - max(HPA_SCALE_UP_STABILIZATION_SECONDS, HPA_SCALE_DOWN_STABILIZATION_SECONDS)
        while self._recommendations and self._recommendations[0][0] <= oldest_kept + _TIME_SLACK:
            self._recommendations.popleft()

        low, high = self.hpa_min, self.hpa_max
        if stabilized > current:
            up_limit = max(current + HPA_SCALE_UP_PODS, math.ceil(current * (1 + HPA_SCALE_UP_PERCENT / 100)))
            high = min(high, up_limit)
        elif stabilized < current:
            down_limit = math.ceil(current * (1 - HPA_SCALE_DOWN_PERCENT / 100))
            low = max(low, down_limit)
        return _clamp(stabilized, low, high)


# ------------------------------------------------------------------------------------------ SkyServe


class SkyServeFallback:
    """SkyServe's FallbackRequestRateAutoscaler with SpotHedge's settings (module docstring: ``skyserve``)."""

    def __init__(self, context: PolicyContext, *,
                 base_ondemand_fallback_replicas: int = SKYSERVE_BASE_ONDEMAND_FALLBACK_REPLICAS,
                 num_overprovision: int = SKYSERVE_NUM_OVERPROVISION,
                 dynamic_ondemand_fallback: bool = SKYSERVE_DYNAMIC_ONDEMAND_FALLBACK) -> None:
        spec = context.spec
        self.name = "skyserve"
        # The world asks every 5 s; SkyServe decides every 20 s (5 s at a final target of 0) on its own clock.
        self.interval_seconds = SKYSERVE_NO_REPLICA_DECISION_INTERVAL_SECONDS
        self.drains_on_notice = False
        self.target_qps_per_replica = context.replica_requests_per_second
        self.min_replicas = spec.replicas.min
        self.max_replicas = spec.replicas.max
        self.base_ondemand_fallback_replicas = base_ondemand_fallback_replicas
        self.num_overprovision = num_overprovision
        self.dynamic_ondemand_fallback = dynamic_ondemand_fallback
        # SkyPilot: scale_up_consecutive_periods = int(upscale_delay / decision interval), the same for down.
        self.scale_up_consecutive_periods = int(SKYSERVE_UPSCALE_DELAY_SECONDS / SKYSERVE_DECISION_INTERVAL_SECONDS)
        self.scale_down_consecutive_periods = int(
            SKYSERVE_DOWNSCALE_DELAY_SECONDS / SKYSERVE_DECISION_INTERVAL_SECONDS)
        self.target_num_replicas: int | None = None  # None until the first decision (warm start)
        self.upscale_counter = 0
        self.downscale_counter = 0
        self._next_decision_at = 0.0
        self._target = Target(spot=0, on_demand=0, fallback="Off")

    def decide(self, view: PoolView) -> Target:
        if view.now + _TIME_SLACK < self._next_decision_at:
            return self._target
        self._set_target_with_hysteresis(view.arrivals_per_second)
        assert self.target_num_replicas is not None
        final_target = self.target_num_replicas + self.num_overprovision
        spot = max(0, final_target - self.base_ondemand_fallback_replicas)
        on_demand = self.base_ondemand_fallback_replicas
        if self.dynamic_ondemand_fallback:
            on_demand += max(0, spot - view.ready_spot)
        on_demand = min(on_demand, self.target_num_replicas)  # no on-demand fallback for the overprovision
        self._target = Target(spot=spot, on_demand=on_demand, fallback="Off")
        interval = (SKYSERVE_NO_REPLICA_DECISION_INTERVAL_SECONDS if final_target == 0
                    else SKYSERVE_DECISION_INTERVAL_SECONDS)
        self._next_decision_at = view.now + interval
        return self._target

    def _replicas_for_rate(self, requests_per_second: float) -> int:
        wanted = math.ceil(requests_per_second / self.target_qps_per_replica)
        return _clamp(wanted, self.min_replicas, self.max_replicas)

    def _set_target_with_hysteresis(self, requests_per_second: float) -> None:
        wanted = self._replicas_for_rate(requests_per_second)
        current = self.target_num_replicas
        if current is None or current == 0:  # the warm start; SkyServe scales up at once from 0
            self.target_num_replicas = wanted
        elif wanted > current:
            self.upscale_counter += 1
            self.downscale_counter = 0
            if self.upscale_counter >= self.scale_up_consecutive_periods:
                self.upscale_counter = 0
                self.target_num_replicas = wanted
        elif wanted < current:
            self.downscale_counter += 1
            self.upscale_counter = 0
            if self.downscale_counter >= self.scale_down_consecutive_periods:
                self.downscale_counter = 0
                self.target_num_replicas = wanted
        else:
            self.upscale_counter = 0
            self.downscale_counter = 0


# ------------------------------------------------------------------------------------------ oracle


class Oracle:
    """The hindsight policy: provisions exactly for the load it knows is coming, on the cheapest capacity.

    How it is computed (all at construction, from ``PolicyContext``'s hindsight fields; ``decide`` only
    looks its plan up at ``view.now``). ``W`` is the demand window and the decision interval
    (``context.window_seconds``), ``C`` the cold start, ``R`` ``replica_requests_per_second``:

    1. **Need per window.** ``need_i = ceil(demand_i / R)`` within ``replicas.min .. replicas.max`` (the
       pool's own bounds, as every autoscaler here keeps; what exceeds them spills to the API).
    2. **Spikes to the API.** Take the need as stacked replica layers: layer ``k`` is needed in the
       windows where ``need_i >= k``. A maximal run of such windows shorter than ``C`` plus a replica's
       minimum useful life (``ORACLE_MIN_USEFUL_LIFE_SECONDS``, 10 min) is a spike. Its replica would
       cost ``(run + C) * hourly`` (spot's price if spot is usable then, else on-demand's; the cold start
       is billed). The API would charge the layer's share of the traffic, ``min(R, demand_i - (k-1)R)``
       requests per second in each window of the run, at the mean prompt and output tokens per request
       and the API's prices. When the API is cheaper, the layer is not provisioned in that run and its
       requests spill to the API (fallback ``Overflow``). Layers up to ``replicas.min`` always stay; no
       spike goes to the API when the spec has no fallback provider.
    3. **Spot or on-demand.** A spot replica serving at ``t`` was placed when it was asked for and must
       not meet a span without spot capacity (``spot_missing``) between then and ``t``: the oracle
       assumes such a span takes the running spot replicas with it (their nodes are reclaimed). So at
       each moment all capacity is spot, except where a missing span lies between the ask and the
       moment: there it is on-demand. On-demand therefore starts a cold start before a missing span
       begins (ready as spot goes) and ends a cold start after it ends (when the spot replicas asked at
       its end are ready).
    4. **Reclaims.** Before each notice in ``context.reclaims`` that falls while it runs spot, it asks for
       one more spot replica a cold start ahead, so the replacement is ready when the notice comes; the
       noticed replica drains (``drains_on_notice`` True) and the extra ends at the notice. It assumes
       each notice hits one of its spot replicas, and that the world takes the noticed replica out of
       the Deployment's count at the notice (as PoolPilot's release does), so the replacement stands in.
    5. **The target at a decision** ``now`` is, per capacity type, the most replicas serving at any
       moment of ``[now, now + C + W)`` (a replica asked now is ready at ``now + C`` and the next
       decision's at ``now + W + C``), plus the reclaim replacements due in ``(now, now + C + W)``.
       Keeping the most over the horizon starts each replica exactly one cold start (at most one
       decision interval more) ahead of its load and never queues for capacity it could have had.

    What it assumes: perfect knowledge of the demand per window, of the reclaims and of the spans
    without spot capacity; a replica serves exactly ``R`` requests per second within the SLO and
    nothing above it (no queueing, no burst inside a window); capacity of one type is fungible; pending
    spot costs nothing. Why its cost is a near lower bound for any policy that meets the SLO, and not a
    proof: any such policy must have about ``ceil(demand / R)`` replicas ready in each window (or pay the
    API for the excess), ready replicas cost at least a cold start each, and the oracle buys exactly that,
    on spot wherever spot can be had, with the API only where it is cheaper. But the bound rests on its
    model: ``R`` is an estimate, real replicas serve bursts from queues, a window's average hides its
    peaks, the world spills only past the pool's budget (so some of a spike's excess queues first),
    decisions on a ``W`` grid start replicas up to ``W`` early, a run-by-run API choice is greedy rather
    than a joint optimum, and it is not the ILP optimum SkyServe's paper computes. A policy can beat it
    where these approximations are loose (e.g. by running replicas slightly above ``R``).
    """

    def __init__(self, context: PolicyContext, *, mean_prompt_tokens: float, mean_output_tokens: float) -> None:
        spec = context.spec
        self.name = "oracle"
        self.interval_seconds = context.window_seconds
        self.drains_on_notice = True
        self.window = context.window_seconds
        self.cold_start = context.cold_start_seconds
        self.horizon = self.cold_start + self.interval_seconds
        self.fallback: FallbackMode = "Overflow"
        self._spans = sorted((float(start), float(end)) for start, end in context.spot_missing if end > start)
        demand = [max(0.0, float(d)) for d in context.demand_per_window]
        raw_need = [_clamp(_ceil(d / context.replica_requests_per_second), spec.replicas.min, spec.replicas.max)
                    for d in demand]
        api_available = spec.fallback.enabled and spec.fallback.provider is not None
        api_per_request = (mean_prompt_tokens * context.api_input_per_million
                           + mean_output_tokens * context.api_output_per_million) / _MILLION
        self._floor = spec.replicas.min
        self.need = (self._spikes_to_api(raw_need, demand, context, api_per_request) if api_available
                     else raw_need)
        self._starts, self._spot, self._on_demand = self._plan()
        # A replacement for each notice that meets a spot replica of the plan.
        self._replacements = [t for t in sorted(float(t) for t in context.reclaims)
                              if self._spot[max(0, bisect_right(self._starts, t) - 1)] > 0]

    # -- step 2: spikes

    def _spikes_to_api(self, need: list[int], demand: list[float], context: PolicyContext,
                       api_per_request: float) -> list[int]:
        kept = list(need)
        rate = context.replica_requests_per_second
        floor = context.spec.replicas.min
        spike_limit = self.cold_start + ORACLE_MIN_USEFUL_LIFE_SECONDS
        for layer in range(floor + 1, max(need, default=0) + 1):
            index = 0
            while index < len(need):
                if need[index] < layer:
                    index += 1
                    continue
                start = index
                while index < len(need) and need[index] >= layer:
                    index += 1
                run_seconds = (index - start) * self.window
                if run_seconds >= spike_limit:
                    continue
                begins = start * self.window
                hourly = context.spot_hourly if self._spot_usable(begins) else context.on_demand_hourly
                billed_seconds = run_seconds + min(self.cold_start, begins)  # the warm start bills no cold start
                replica_cost = billed_seconds * hourly / _HOUR
                layer_requests = sum(
                    min(rate, max(0.0, demand[i] - (layer - 1) * rate)) * self.window for i in range(start, index))
                if layer_requests * api_per_request < replica_cost:
                    for i in range(start, index):
                        kept[i] -= 1
        return kept

    # -- step 3: where spot is usable

    def _ask_time(self, ready_at: float) -> float:
        """The decision that first asks for a replica serving at ``ready_at``: the first grid point past
        ``ready_at - C - W``."""
        step = self.interval_seconds
        index = math.floor((ready_at - self.horizon) / step + _CEIL_SLACK) + 1
        return max(0.0, index * step)

    def _spot_usable(self, at: float) -> bool:
        """A spot replica can serve at ``at``: no span without spot capacity between its ask and ``at``."""
        asked = self._ask_time(at)
        return not any(start <= at + _TIME_SLACK and end > asked + _TIME_SLACK for start, end in self._spans)

    def _need_at(self, at: float) -> int:
        index = math.floor(at / self.window + _CEIL_SLACK)
        return self.need[index] if 0 <= index < len(self.need) else self._floor

    # -- step 3: the plan, as serving counts by type over time

    def _plan(self) -> tuple[list[float], list[int], list[int]]:
        """Segment starts and, from each, the replicas serving by type (piecewise constant)."""
        end = len(self.need) * self.window + self.horizon + self.interval_seconds
        points = {0.0}
        points.update(i * self.window for i in range(len(self.need) + 1))
        step = self.interval_seconds
        points.update(k * step + self.cold_start for k in range(math.ceil(end / step) + 1))
        for start, stop in self._spans:
            points.update((start, stop))
        starts = sorted(p for p in points if 0.0 <= p <= end)
        spot: list[int] = []
        on_demand: list[int] = []
        for at in starts:
            need = self._need_at(at)
            usable = self._spot_usable(at)
            spot.append(need if usable else 0)
            on_demand.append(0 if usable else need)
        return starts, spot, on_demand

    def decide(self, view: PoolView) -> Target:
        now = view.now
        first = max(0, bisect_right(self._starts, now + _TIME_SLACK) - 1)
        last = max(first + 1, bisect_left(self._starts, now + self.horizon - _TIME_SLACK))
        spot = max(self._spot[first:last], default=0)
        on_demand = max(self._on_demand[first:last], default=0)
        # Replacements due in (now, now + C + W): asked now at the latest, gone at the notice.
        due = (bisect_left(self._replacements, now + self.horizon - _TIME_SLACK)
               - bisect_right(self._replacements, now + _TIME_SLACK))
        return Target(spot=spot + max(0, due), on_demand=on_demand, fallback=self.fallback)


# ------------------------------------------------------------------------------------------ factory


def make_policy(name: str, context: PolicyContext, *, mean_prompt_tokens: float | None = None,
                mean_output_tokens: float | None = None) -> Policy:
    """The baseline called ``name`` (one of ``BASELINE_NAMES``), configured from ``context``.

    ``mean_prompt_tokens`` and ``mean_output_tokens`` (per request, over the trace) are for the oracle,
    which prices a spike's traffic on the API with them; the other baselines ignore them.
    """
    if name not in BASELINE_NAMES:
        raise ValueError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINE_NAMES)}")
    if name != "api-only" and context.replica_requests_per_second <= 0:
        raise ValueError(f"{name} needs replica_requests_per_second > 0, got {context.replica_requests_per_second}")
    if name == "static-ondemand":
        return StaticOnDemand(context)
    if name == "keda":
        return KedaHpa(context, spot=False)
    if name == "keda-spot":
        return KedaHpa(context, spot=True)
    if name == "skyserve":
        return SkyServeFallback(context)
    if name == "api-only":
        return ApiOnly()
    if mean_prompt_tokens is None or mean_output_tokens is None:
        raise ValueError("the oracle needs mean_prompt_tokens and mean_output_tokens to price spikes on the API")
    return Oracle(context, mean_prompt_tokens=mean_prompt_tokens, mean_output_tokens=mean_output_tokens)
