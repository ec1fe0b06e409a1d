"""How many replicas a pool should ask for: HPA's shape, plus what a GPU pool needs on top.

``decide_replicas`` is pure: signals, counts, the remembered recommendations and ``now`` in;
a ``ScalingDecision`` (count, reason, message, inputs) and the next ``ScalingState`` out.

Rules, in the order they apply:

1. Per-signal recommendation, against the READY replicas (the ones whose load a signal measures):

   - queue: ratio = (queue_depth / ready) / target_queue_depth_per_replica, recommended = ceil(ready * ratio);
     with no ready replica and a queue, ceil(queue / target).
   - KV cache: ratio = kv / target_kv_cache_utilization, recommended = ceil(ready * ratio); with no
     ready replica it measures nothing and is ignored.
   - within tolerance (|ratio - 1| <= tolerance) a signal recommends the current count. A signal above
     its band never recommends fewer than the current count, one below never more (as HPA skips a
     recount that flips direction): a level that persists while replicas start does not shrink them.
   - router demand (a pool behind its router): at zero ready replicas, anything arriving or in flight
     at the router recommends ``max(1, ceil(in_flight / per_replica))``: the scale from zero, with
     ``per_replica`` what one replica was seen to take (``status.fallback.inFlightPerReplica``), or
     ``target_queue_depth_per_replica`` before that is known. With replicas ready and at their queue or
     KV target, a router that spills recommends ``ceil(ready * arrivals / served)`` (a spilled request never
     queues in vLLM, so vLLM's own signals cannot see it); spills while vLLM shows room recommend nothing.
   - time to first token (what the pool's users feel), against ``spec.slo``: the observed percentile
     p = ``ttft_quantile(ttft_histogram, slo.ttftPercentile)`` over the source's window. With ready
     replicas and p > ``slo.ttftSeconds * (1 + tolerance)`` it recommends ``ceil(ready * min(p / slo, 2))``
     (never fewer than the current count); otherwise, and without a histogram or with fewer than
     ``MIN_TTFT_OBSERVATIONS`` requests in the window, it recommends nothing. It only ever pushes up:
     TTFT is not linear in replicas (near saturation it grows with the queue far faster than the load,
     so p / slo overstates what is missing, hence the cap at doubling per evaluation), and a TTFT under
     the SLO says nothing about how many replicas are idle, so the queue and the KV cache decide the
     scale-down as before. It lags by its window (a slow minute stays in the figure while new replicas
     start), which the starting-capacity rule (2) covers.
   - a missing signal (None) recommends nothing. The recommendation is the max over the signals used.
     With one signal read and the other missing, the recommendation never goes below the current count
     (``SignalMissing``): scaling down on the queue alone would be scaling down blind on the KV cache.
     (The queue and the KV cache are the two: a pool without TTFT data is not missing a signal.)

2. Capacity on its way: the recommendation is compared with ``current_replicas`` (ready + starting +
   anything else asked for), never with the ready count, so a spike does not order the same cold-starting
   replicas twice. A hold for that reason says so (``CapacityStarting``, or ``CapacityNotReady`` once
   the replicas are past ``startupSeconds``).

3. Stabilization as HPA's behavior: every recommendation is remembered with its time. Scale-up acts on
   the MIN recommendation inside ``scaleUp.stabilizationSeconds`` (0 = at once), scale-down on the MAX
   inside ``scaleDown.stabilizationSeconds``. Then the step limits (``maxStepReplicas`` per decision),
   then the bounds.

4. Effective minimum: ``replicas.min``, except that 0 is honoured only with ``fallback.enabled`` (the
   hosted API serves while the pool is at zero); otherwise the floor is 1. Even then the pool goes to
   zero only once the load has been zero (queue 0, and running 0 or KV 0, nothing known above 0) for
   the whole scale-down window, counted in ``ScalingState.idle_since``.

5. Metrics unavailable (a ``MetricsProblem``, or signals with nothing usable): hold the current count,
   only clamped into bounds; never scale down blind, and remember no recommendation. At zero replicas
   with nothing to read, hold zero: demand has to show up through the API fallback.

6. Bounds always win: a count outside [effective minimum, max] (the spec changed) goes straight back
   inside, whatever the windows and steps say.

7. A fresh memory (a new pool, or the operator restarted) is seeded with the current count, as the
   HPA does, so the scale-down window starts over instead of being skipped.

8. Inputs are never mutated; the returned state drops recommendations older than the longest window.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from controller.api.spec import InferencePoolSpec
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals, ttft_quantile

__all__ = [
    "Direction",
    "ScalingDecision",
    "ScalingInputs",
    "ScalingLimit",
    "ScalingReason",
    "ScalingSignal",
    "ScalingState",
    "SignalPosition",
    "SignalRecommendation",
    "decide_replicas",
    "effective_min_replicas",
]

Direction = Literal["up", "down", "hold"]
SignalPosition = Literal["below", "within", "above"]  # the observed ratio against the tolerance band

# Float noise (3 * 0.8 / 0.8 = 3.0000000000000004) must neither order a GPU nor leave the tolerance band.
_EPSILON = 1e-9
# TTFT over its SLO at most doubles the ready replicas per evaluation: near saturation TTFT grows with the
# queue, far faster than the load, so its ratio overstates what is missing (the step limit and max still apply).
_MAX_TTFT_FACTOR = 2.0


class ScalingReason(StrEnum):
    """Why the decision came out as it did: one CamelCase word for the status and the Event."""

    SCALED_UP = "ScaledUp"  # more replicas, following the load (limited_by says what capped the step)
    SCALED_DOWN = "ScaledDown"  # fewer replicas: the load stayed low for the whole scale-down window
    SCALED_TO_ZERO = "ScaledToZero"  # at zero, or going there: zero load for the window, fallback on
    WITHIN_TOLERANCE = "WithinTolerance"  # every signal inside target +- tolerance: nothing to do
    STABILIZING_SCALE_DOWN = "StabilizingScaleDown"  # load is lower, a higher recommendation is in the window
    STABILIZING_SCALE_UP = "StabilizingScaleUp"  # load is higher, a lower recommendation is in the window
    CAPACITY_STARTING = "CapacityStarting"  # load wants more than is ready; replicas starting cover it
    CAPACITY_NOT_READY = "CapacityNotReady"  # same, but the asked-for replicas are past startupSeconds
    METRICS_UNAVAILABLE = "MetricsUnavailable"  # no usable signal: holding, never scaling down blind
    SIGNAL_MISSING = "SignalMissing"  # one signal is read, the other is not: up on what is read, never down
    AT_MAXIMUM = "AtMaximum"  # held at replicas.max while the load wants more, or brought back under it
    AT_MINIMUM = "AtMinimum"  # held at the floor while the load wants fewer, or brought back up to it


class ScalingLimit(StrEnum):
    """What capped or held the count, between the recommendation and the decision."""

    MAX = "max"
    MIN = "min"
    SCALE_UP_STEP = "scale-up step"
    SCALE_DOWN_STEP = "scale-down step"
    SCALE_DOWN_STABILIZATION = "scale-down stabilization"
    SCALE_UP_STABILIZATION = "scale-up stabilization"
    MISSING_SIGNAL = "missing signal"


class ScalingSignal(StrEnum):
    """The signals a decision can use, named as in the status."""

    QUEUE_DEPTH = "queueDepth"
    KV_CACHE = "kvCacheUtilization"
    ROUTER_DEMAND = "routerDemand"  # what the router saw arrive and could not place on the pool
    THROUGHPUT = "throughput"  # tokens per second against what one replica was seen to serve at its targets
    TTFT = "ttft"  # the observed time to first token against spec.slo: up only


@dataclass(frozen=True)
class SignalRecommendation:
    """What one signal asked for."""

    signal: ScalingSignal
    observed: float  # queue: requests waiting over the pool; KV: the 0-1 fraction; TTFT: seconds at the percentile
    target: float  # queue: per ready replica; KV: the 0-1 fraction; TTFT: slo.ttftSeconds
    ratio: float | None  # observed per ready replica / target; None with no ready replica
    position: SignalPosition
    recommended: int


@dataclass(frozen=True)
class ScalingInputs:
    signals: PoolSignals | MetricsProblem
    current_replicas: int  # what the Deployments ask for now (spot + on-demand)
    ready_replicas: int
    starting_replicas: int  # asked for, not ready yet, still inside scaling.startupSeconds: capacity on its way
    # What one replica was seen to take (status.fallback.inFlightPerReplica); None until observed.
    in_flight_per_replica: int | None = None

    def __post_init__(self) -> None:
        for name in ("current_replicas", "ready_replicas", "starting_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class ScalingState:
    """What the caller keeps between evaluations of one pool (in memory); never mutated."""

    recommendations: tuple[tuple[datetime, int], ...] = ()  # (when, recommended), pruned to the longest window
    idle_since: datetime | None = None  # since when every evaluation saw zero load; None when it did not
    # False until the first decision: an empty memory (a new pool, or an operator restart) is seeded
    # with the current count, as the HPA seeds its recommendations the first time it sees a target
    # (pkg/controller/podautoscaler/horizontal.go, reconcileAutoscaler), so a restart does not cut the
    # scale-down window short.
    seeded: bool = False
    # Tokens per second (prompt and generated) one ready replica served while the pool was at its queue or KV
    # target: what a replica serves at this mix (a moving average; None until the pool was once at a target).
    replica_tokens_per_second: float | None = None


@dataclass(frozen=True)
class ScalingDecision:
    current: int
    desired: int
    direction: Direction
    reason: ScalingReason
    message: str
    per_signal: tuple[SignalRecommendation, ...]  # the signals used; empty when metrics were unavailable
    limited_by: ScalingLimit | None
    recommended: int | None  # the max over the signals, before windows, steps and bounds
    ready_replicas: int
    starting_replicas: int
    observed_at: datetime  # when the signals (or the problem) were read
    decided_at: datetime
    # The TTFT at spec.slo.ttftPercentile over the source's window, whether or not it pushed; None when not read
    # (no histogram, fewer than MIN_TTFT_OBSERVATIONS requests, no ready replica, or metrics unavailable).
    ttft_seconds: float | None = None

    @property
    def signals_used(self) -> tuple[ScalingSignal, ...]:
        return tuple(s.signal for s in self.per_signal)


def effective_min_replicas(spec: InferencePoolSpec) -> int:
    """``replicas.min``; 0 only when the API fallback can serve the pool's traffic meanwhile."""
    if spec.replicas.min == 0 and not spec.fallback.enabled:
        return 1
    return spec.replicas.min


def decide_replicas(
    spec: InferencePoolSpec, inputs: ScalingInputs, state: ScalingState, *, now: datetime
) -> tuple[ScalingDecision, ScalingState]:
    """Decide the pool's replica count; see the module docstring for the rules."""
    scaling = spec.scaling
    longest_window = max(scaling.scale_up.stabilization_seconds, scaling.scale_down.stabilization_seconds)
    seed = () if state.seeded else ((now, inputs.current_replicas),)
    remembered = tuple(rec for rec in (*state.recommendations, *seed) if _inside(rec[0], now, longest_window))
    signals = inputs.signals
    learned = _learn_throughput(spec, inputs, signals, state.replica_tokens_per_second)
    per_signal = (_recommend_per_signal(spec, inputs, signals, state.replica_tokens_per_second)
                  if isinstance(signals, PoolSignals) else ())
    if not isinstance(signals, PoolSignals) or not per_signal:
        return _hold_blind(spec, inputs, now), ScalingState(recommendations=remembered, seeded=True,
                                                            replica_tokens_per_second=learned)

    recommended = max(s.recommended for s in per_signal)
    # With one signal unread, scaling down on the other would be scaling down blind on it; nor is
    # such a recommendation remembered as a low one for later.
    blind_down = _missing_signal(signals, inputs)
    kept = max(recommended, inputs.current_replicas) if blind_down else recommended
    idle_since = (state.idle_since or now) if _is_idle(signals) else None
    next_state = ScalingState(
        recommendations=tuple(rec for rec in (*remembered, (now, kept)) if _inside(rec[0], now, longest_window)),
        idle_since=idle_since,
        seeded=True,
        replica_tokens_per_second=learned,
    )
    decision = _decide(spec, inputs, signals, per_signal, recommended, remembered, idle_since, now,
                       blind_down=blind_down)
    return decision, next_state


# ----------------------------------------------------------------------------------------- signals


# With the throughput known, the queue asks for at most this many times the replicas the arriving tokens need.
_MAX_BACKLOG_FACTOR = 2
# The moving average's weight for each new reading of a replica's throughput at its targets.
_THROUGHPUT_WEIGHT = 0.2


def _tokens_per_second(signals: PoolSignals) -> float | None:
    if signals.prompt_tokens_per_second is None or signals.generation_tokens_per_second is None:
        return None
    return signals.prompt_tokens_per_second + signals.generation_tokens_per_second


def _learn_throughput(spec: InferencePoolSpec, inputs: ScalingInputs, signals: PoolSignals | MetricsProblem,
                      known: float | None) -> float | None:
    """What one replica serves, learned while the pool is at its queue or KV target (see ``_throughput``)."""
    ready = inputs.ready_replicas
    if not isinstance(signals, PoolSignals) or ready == 0 or inputs.starting_replicas:
        return known  # replicas starting: the window's tokens came from fewer of them than are ready now
    tokens = _tokens_per_second(signals)
    if tokens is None or tokens <= 0 or not _at_target(spec, signals, ready):
        return known
    served = tokens / ready
    return served if known is None else (1 - _THROUGHPUT_WEIGHT) * known + _THROUGHPUT_WEIGHT * served


def _throughput(spec: InferencePoolSpec, inputs: ScalingInputs, signals: PoolSignals,
                per_replica: float | None) -> SignalRecommendation | None:
    """The replicas that serve the pool's tokens per second at what one served at its targets.

    The queue and the KV cache measure a replica's memory; on a large GPU (an 8B model on an H100 holds
    hundreds of sequences) its compute runs out first: the queue stays empty and the cache a few percent full
    while each step slows, so both would scale a busy pool down to one overloaded replica. The tokens it
    served while at a target are its throughput at this mix; this signal keeps enough replicas for the
    tokens arriving. Unknown until the pool was once at a target (then it recommends nothing).
    """
    tokens = _tokens_per_second(signals)
    ready = inputs.ready_replicas
    if per_replica is None or tokens is None or ready == 0:
        return None
    ratio = tokens / ready / per_replica
    return _recommend(ScalingSignal.THROUGHPUT, tokens, per_replica, ratio, _ceil(tokens / per_replica), spec,
                      inputs)


def _recommend_per_signal(
    spec: InferencePoolSpec, inputs: ScalingInputs, signals: PoolSignals, replica_tokens_per_second: float | None
) -> tuple[SignalRecommendation, ...]:
    scaling = spec.scaling
    ready = inputs.ready_replicas
    found: list[SignalRecommendation] = []
    if signals.queue_depth is not None:
        target = scaling.target_queue_depth_per_replica
        queue = signals.queue_depth
        ratio = queue / ready / target if ready else None
        found.append(_recommend(ScalingSignal.QUEUE_DEPTH, queue, target, ratio, _ceil(queue / target), spec, inputs))
    # With no ready replica there is no cache to measure: a KV figure then is a leftover, not load.
    if signals.kv_cache_utilization is not None and ready > 0:
        target = scaling.target_kv_cache_utilization
        kv = signals.kv_cache_utilization
        found.append(
            _recommend(ScalingSignal.KV_CACHE, kv, target, kv / target, _ceil(ready * kv / target), spec, inputs)
        )
    demand = _router_demand(spec, inputs, signals)
    ttft = _ttft_pressure(spec, inputs, signals)
    throughput = _throughput(spec, inputs, signals, replica_tokens_per_second)
    if throughput is not None:
        found = [_drained_by_spare_capacity(s, throughput, inputs) for s in found]
    return (*found, *((demand,) if demand else ()), *((ttft,) if ttft else ()),
            *((throughput,) if throughput else ()))


def _drained_by_spare_capacity(signal: SignalRecommendation, throughput: SignalRecommendation,
                               inputs: ScalingInputs) -> SignalRecommendation:
    """A queue is a backlog, not a rate: with what a replica serves known, the queue asks for at most twice the
    replicas the arriving tokens need (a reclaim's backlog of 42 on two replicas asked for 11, ready a cold
    start later, long after spare capacity and the API's overflow had taken it)."""
    if signal.signal is not ScalingSignal.QUEUE_DEPTH:
        return signal
    cap = max(inputs.current_replicas, _MAX_BACKLOG_FACTOR * throughput.recommended)
    return signal if signal.recommended <= cap else dataclasses.replace(signal, recommended=cap)


def _observed_ttft(spec: InferencePoolSpec, inputs: ScalingInputs, signals: PoolSignals) -> float | None:
    """The TTFT at the SLO's percentile; None without ready replicas (nothing serves: leftovers, not load)."""
    if inputs.ready_replicas == 0:
        return None
    return ttft_quantile(signals.ttft_histogram, spec.slo.ttft_percentile)


def _ttft_pressure(spec: InferencePoolSpec, inputs: ScalingInputs,
                   signals: PoolSignals) -> SignalRecommendation | None:
    """Users waiting longer than the SLO for their first token: ``ceil(ready * min(p / slo, 2))``, never fewer
    than the current count. Under the SLO (within tolerance), or not read: nothing, never a scale-down."""
    observed = _observed_ttft(spec, inputs, signals)
    slo = spec.slo.ttft_seconds
    if observed is None or observed <= slo * (1 + spec.scaling.tolerance) + _EPSILON:
        return None
    ratio = observed / slo
    wanted = _ceil(inputs.ready_replicas * min(ratio, _MAX_TTFT_FACTOR))
    return SignalRecommendation(ScalingSignal.TTFT, observed, slo, ratio, "above",
                                max(wanted, inputs.current_replicas))


def _router_demand(spec: InferencePoolSpec, inputs: ScalingInputs,
                   signals: PoolSignals) -> SignalRecommendation | None:
    """Demand vLLM cannot see: a request the router spilled to the API never queued in vLLM.

    At zero ready replicas, anything arriving or in flight at the router asks for
    ``max(1, ceil(in_flight / per_replica))`` replicas: scale from zero (``per_replica``: what one replica was
    seen to take, else ``targetQueueDepthPerReplica``). With replicas
    ready, a router that spills asks for ``ceil(ready * arrivals / served)``: the pool grows by the
    share it could not take. Otherwise it recommends nothing, and vLLM's own signals decide.
    """
    if not signals.from_router:
        return None
    arrivals = signals.router_arrivals_per_second or 0.0
    in_flight = signals.router_in_flight or 0.0
    ready, current = inputs.ready_replicas, inputs.current_replicas
    if ready == 0:
        if arrivals <= 0 and in_flight <= 0:
            return None
        # What is in flight mostly runs, batched, once a replica is there: as many replicas as hold it, by what
        # one was seen to take; before that is known, a queue of the target per replica.
        per_replica = inputs.in_flight_per_replica or spec.scaling.target_queue_depth_per_replica
        wanted = max(1, _ceil(in_flight / per_replica))
        return SignalRecommendation(ScalingSignal.ROUTER_DEMAND, arrivals, 0.0, None, "above", max(wanted, current))
    served = arrivals - (signals.router_spills_per_second or 0.0)
    if arrivals <= 0 or served >= arrivals - _EPSILON or served <= 0:
        return None
    if not _at_target(spec, signals, ready):
        # Spills while vLLM shows room are the router's budget or a rate window still counting a moment the
        # pool was short (replicas got ready since): not capacity missing now. Multiplying today's ready
        # count by that ratio would order replicas for a shortage already met.
        return None
    ratio = arrivals / served
    return SignalRecommendation(ScalingSignal.ROUTER_DEMAND, arrivals, served, ratio, "above",
                                max(_ceil(ready * ratio), current))


def _at_target(spec: InferencePoolSpec, signals: PoolSignals, ready: int) -> bool:
    """Whether vLLM's own signals show the ready replicas at their targets (queue or KV cache)."""
    scaling = spec.scaling
    queue, kv = signals.queue_depth, signals.kv_cache_utilization
    return ((queue is not None and queue / ready >= scaling.target_queue_depth_per_replica)
            or (kv is not None and kv >= scaling.target_kv_cache_utilization))


def _recommend(
    signal: ScalingSignal,
    observed: float,
    target: float,
    ratio: float | None,
    proportional: int,
    spec: InferencePoolSpec,
    inputs: ScalingInputs,
) -> SignalRecommendation:
    current = inputs.current_replicas
    if ratio is None:  # no ready replica: any queue is load nobody serves
        position: SignalPosition = "above" if observed > 0 else "below"
    elif abs(ratio - 1) <= spec.scaling.tolerance + _EPSILON:
        position = "within"
    else:
        position = "above" if ratio > 1 else "below"
    recommended = {
        "within": current,
        "above": max(proportional, current),
        "below": min(proportional, current),
    }[position]
    return SignalRecommendation(signal, observed, target, ratio, position, recommended)


def _missing_signal(signals: PoolSignals, inputs: ScalingInputs) -> bool:
    """One of the pool's two signals could not be read while the other could (a KV figure with no
    ready replica measures nothing, so it is not missing then)."""
    return signals.queue_depth is None or (signals.kv_cache_utilization is None and inputs.ready_replicas > 0)


def _missing_name(signals: PoolSignals) -> str:
    return "queue signal" if signals.queue_depth is None else "KV cache signal"


def _read_name(signals: PoolSignals) -> str:
    return "the KV cache" if signals.queue_depth is None else "the queue"


def _is_idle(signals: PoolSignals) -> bool:
    """Zero load: no queue, and running or KV known to be zero, and nothing known above zero."""
    others = [v for v in (signals.running_requests, signals.kv_cache_utilization) if v is not None]
    router = [v for v in (signals.router_arrivals_per_second, signals.router_in_flight) if v is not None]
    if signals.queue_depth is None and not others and router:  # at zero replicas only the router speaks
        return all(v == 0 for v in router)
    return signals.queue_depth == 0 and bool(others) and all(v == 0 for v in (*others, *router))


# ---------------------------------------------------------------------------------------- decision


def _decide(
    spec: InferencePoolSpec,
    inputs: ScalingInputs,
    signals: PoolSignals,
    per_signal: tuple[SignalRecommendation, ...],
    recommended: int,
    history: tuple[tuple[datetime, int], ...],
    idle_since: datetime | None,
    now: datetime,
    *,
    blind_down: bool,
) -> ScalingDecision:
    scaling = spec.scaling
    current = inputs.current_replicas
    up_window = scaling.scale_up.stabilization_seconds
    down_window = scaling.scale_down.stabilization_seconds

    # Stabilize: scale up only as far as every recent recommendation agrees, down only as far as all do.
    lowest_recent = min([recommended, *(r for t, r in history if _inside(t, now, up_window))])
    highest_recent = max([recommended, *(r for t, r in history if _inside(t, now, down_window))])
    stabilized = min(max(current, lowest_recent), highest_recent)

    up_step = scaling.scale_up.max_step_replicas
    down_step = scaling.scale_down.max_step_replicas
    stepped = min(max(stabilized, current - down_step), current + up_step)

    zero_allowed = idle_since is not None and now - idle_since >= timedelta(seconds=down_window)
    floor = _floor(spec, current, zero_allowed=zero_allowed)
    ceiling = spec.replicas.max
    bounded = min(max(stepped, floor), ceiling)
    desired = min(max(bounded, current), ceiling) if blind_down else bounded

    limited_by: ScalingLimit | None = None
    if desired != bounded:
        limited_by = ScalingLimit.MISSING_SIGNAL
    elif desired != stepped:
        limited_by = ScalingLimit.MAX if desired < stepped else ScalingLimit.MIN
    elif stepped != stabilized:
        limited_by = ScalingLimit.SCALE_UP_STEP if stepped < stabilized else ScalingLimit.SCALE_DOWN_STEP
    elif stabilized != recommended:
        limited_by = (
            ScalingLimit.SCALE_UP_STABILIZATION if stabilized < recommended else ScalingLimit.SCALE_DOWN_STABILIZATION
        )

    out_of_bounds = not floor <= current <= ceiling
    reason = _reason(inputs, per_signal, desired, limited_by, out_of_bounds)

    limit_text = {
        None: "",
        ScalingLimit.MAX: f"maximum {ceiling}",
        ScalingLimit.MIN: _floor_text(spec, floor, idle_since, now),
        ScalingLimit.SCALE_UP_STEP: f"scale-up step limit {up_step}",
        ScalingLimit.SCALE_DOWN_STEP: f"scale-down step limit {down_step}",
        ScalingLimit.SCALE_DOWN_STABILIZATION: (
            f"highest recommendation in the last {down_window} s is {highest_recent}"
        ),
        ScalingLimit.SCALE_UP_STABILIZATION: f"lowest recommendation in the last {up_window} s is {lowest_recent}",
        ScalingLimit.MISSING_SIGNAL: (
            f"{_read_name(signals)} alone asks for {bounded}; not scaling down blind on the missing "
            f"{_missing_name(signals)}"
        ),
    }[limited_by]
    if out_of_bounds and limited_by in (ScalingLimit.MAX, ScalingLimit.MIN):
        limit_text = f"back inside bounds, {limit_text}"
    why = {
        ScalingReason.WITHIN_TOLERANCE: f"within the {scaling.tolerance:.0%} tolerance",
        ScalingReason.CAPACITY_STARTING: (
            f"{inputs.ready_replicas} ready + {inputs.starting_replicas} starting cover it"
            if current == inputs.ready_replicas + inputs.starting_replicas
            else f"{current - inputs.ready_replicas} asked for and not ready, {inputs.starting_replicas} starting"
        ),
        ScalingReason.CAPACITY_NOT_READY: (
            f"{current - inputs.ready_replicas} asked for and not ready past startupSeconds; not ordering more"
        ),
        ScalingReason.SCALED_TO_ZERO: (
            f"zero load for the {down_window} s scale-down window: the API fallback serves"
            if current
            else "at zero: the API fallback serves until load shows up"
        ),
    }.get(reason, "")
    details = [
        *([f"recommended {recommended}"] if recommended != desired else []),
        *([limit_text] if limit_text else []),
        *([why] if why else []),
    ]
    ttft_seconds = _observed_ttft(spec, inputs, signals)
    message = f"{_signals_text(spec, inputs, per_signal, signals, ttft_seconds)}: {_change_text(current, desired)}"
    if details:
        message += f" ({'; '.join(details)})"
    return ScalingDecision(
        current=current,
        desired=desired,
        direction=_direction(current, desired),
        reason=reason,
        message=message,
        per_signal=per_signal,
        limited_by=limited_by,
        recommended=recommended,
        ready_replicas=inputs.ready_replicas,
        starting_replicas=inputs.starting_replicas,
        observed_at=signals.observed_at,
        decided_at=now,
        ttft_seconds=ttft_seconds,
    )


def _floor(spec: InferencePoolSpec, current: int, *, zero_allowed: bool) -> int:
    minimum = effective_min_replicas(spec)
    if minimum > 0:
        return minimum
    # Staying at zero needs no proof of idleness; getting there does.
    return 0 if current == 0 or zero_allowed else 1


def _reason(
    inputs: ScalingInputs,
    per_signal: tuple[SignalRecommendation, ...],
    desired: int,
    limited_by: ScalingLimit | None,
    out_of_bounds: bool,
) -> ScalingReason:
    current = inputs.current_replicas
    if desired == 0 and limited_by is not ScalingLimit.SCALE_UP_STABILIZATION:
        return ScalingReason.SCALED_TO_ZERO
    if limited_by in (ScalingLimit.MAX, ScalingLimit.MIN) and (out_of_bounds or desired == current):
        return ScalingReason.AT_MAXIMUM if limited_by is ScalingLimit.MAX else ScalingReason.AT_MINIMUM
    if desired > current:
        return ScalingReason.SCALED_UP
    if desired < current:
        return ScalingReason.SCALED_DOWN
    if limited_by is ScalingLimit.SCALE_DOWN_STABILIZATION:
        return ScalingReason.STABILIZING_SCALE_DOWN
    if limited_by is ScalingLimit.SCALE_UP_STABILIZATION:
        return ScalingReason.STABILIZING_SCALE_UP
    if limited_by is ScalingLimit.MISSING_SIGNAL:
        return ScalingReason.SIGNAL_MISSING
    if current > inputs.ready_replicas and any(s.position == "above" for s in per_signal):
        return ScalingReason.CAPACITY_STARTING if inputs.starting_replicas else ScalingReason.CAPACITY_NOT_READY
    return ScalingReason.WITHIN_TOLERANCE


def _hold_blind(spec: InferencePoolSpec, inputs: ScalingInputs, now: datetime) -> ScalingDecision:
    """No usable signal: keep the count (only brought inside bounds), remember nothing."""
    current = inputs.current_replicas
    floor = effective_min_replicas(spec)
    ceiling = spec.replicas.max
    desired = min(max(current, floor), ceiling)
    signals = inputs.signals
    nothing_to_read = isinstance(signals, PoolSignals) or signals.kind in (
        MetricsProblemKind.NO_SAMPLES,
        MetricsProblemKind.NO_READY_REPLICAS,
    )
    if isinstance(signals, MetricsProblem):
        what = f"metrics unavailable ({signals.kind}: {signals.message})"
    elif signals.kv_cache_utilization is not None:
        what = "no queue signal, and a KV cache figure with no ready replica measures nothing"
    else:
        what = "no queue or KV cache signal"

    limited_by: ScalingLimit | None = None
    if desired != current:
        limited_by = ScalingLimit.MAX if desired < current else ScalingLimit.MIN
        reason = ScalingReason.AT_MAXIMUM if limited_by is ScalingLimit.MAX else ScalingReason.AT_MINIMUM
        detail = f"back inside bounds, {'maximum' if limited_by is ScalingLimit.MAX else 'minimum'} {desired}"
    elif desired == 0 and nothing_to_read:
        reason = ScalingReason.SCALED_TO_ZERO
        detail = "scaled to zero, nothing to read load from: demand must come through the API fallback"
    elif desired == 0:
        reason = ScalingReason.METRICS_UNAVAILABLE
        detail = "scaled to zero: demand must come through the API fallback"
    else:
        reason = ScalingReason.METRICS_UNAVAILABLE
        detail = "never scaling down blind"
    return ScalingDecision(
        current=current,
        desired=desired,
        direction=_direction(current, desired),
        reason=reason,
        message=f"{what}: {_change_text(current, desired)} ({detail})",
        per_signal=(),
        limited_by=limited_by,
        recommended=None,
        ready_replicas=inputs.ready_replicas,
        starting_replicas=inputs.starting_replicas,
        observed_at=signals.observed_at,
        decided_at=now,
    )


# ------------------------------------------------------------------------------------------- words


def _signals_text(spec: InferencePoolSpec, inputs: ScalingInputs, per_signal: tuple[SignalRecommendation, ...],
                  signals: PoolSignals, ttft_seconds: float | None) -> str:
    ready = inputs.ready_replicas
    replicas = f"{ready} ready {_plural(ready, 'replica')}" if ready else "no ready replica"
    if inputs.starting_replicas:
        replicas += f" ({inputs.starting_replicas} more starting)"
    parts: list[str] = []
    by_signal = {s.signal: s for s in per_signal}
    queue = by_signal.get(ScalingSignal.QUEUE_DEPTH)
    if queue is not None:
        across = "with" if not ready else "across"
        parts.append(f"queue {_number(queue.observed)} {across} {replicas}, target {_number(queue.target)} per replica")
    kv = by_signal.get(ScalingSignal.KV_CACHE)
    if kv is not None:
        on = "" if queue is not None else f" on {replicas}"
        parts.append(f"KV cache {kv.observed:.0%}{on} vs target {kv.target:.0%}")
    demand = by_signal.get(ScalingSignal.ROUTER_DEMAND)
    if demand is not None:
        arriving = f"router: {_number(round(demand.observed, 1))} requests/s arriving"
        if demand.ratio:  # target is what the pool served
            arriving += f", {_number(round(demand.observed - demand.target, 1))}/s of them spilled to the API"
        parts.append(arriving if ready else f"{arriving} with {replicas}")
    if ttft_seconds is not None:
        parts.append(_ttft_text(spec, ttft_seconds, pushed=ScalingSignal.TTFT in by_signal))
    throughput = by_signal.get(ScalingSignal.THROUGHPUT)
    if throughput is not None:
        parts.append(f"{_number(round(throughput.observed))} tokens/s at {_number(round(throughput.target))} per "
                     "replica (served at its targets)")
    if demand is not None and not ready:
        return "; ".join(parts)  # at zero replicas the router is the only signal there is
    if queue is None:
        parts.append("no queue signal")
    elif signals.kv_cache_utilization is None:
        parts.append("no KV cache signal")
    elif kv is None:
        parts.append("KV cache ignored with no ready replica")
    return "; ".join(parts)


def _ttft_text(spec: InferencePoolSpec, ttft_seconds: float, *, pushed: bool) -> str:
    """"p95 TTFT 3.4 s over the 2 s SLO"."""
    slo = spec.slo
    where = "over" if pushed else "within" if ttft_seconds <= slo.ttft_seconds else "within tolerance of"
    return f"p{slo.ttft_percentile:g} TTFT {ttft_seconds:.3g} s {where} the {slo.ttft_seconds:g} s SLO"


def _floor_text(spec: InferencePoolSpec, floor: int, idle_since: datetime | None, now: datetime) -> str:
    if spec.replicas.min > 0 or floor == 0:
        return f"minimum {floor}"
    if not spec.fallback.enabled:
        return "minimum 1: replicas.min 0 needs fallback.enabled"
    window = spec.scaling.scale_down.stabilization_seconds
    idle = f"zero for {(now - idle_since).total_seconds():.0f} s so far" if idle_since else "not zero now"
    return f"minimum 1 until the load is zero for {window} s, {idle}"


def _change_text(current: int, desired: int) -> str:
    return f"holding {current}" if current == desired else f"{current} -> {desired}"


def _direction(current: int, desired: int) -> Direction:
    return "up" if desired > current else "down" if desired < current else "hold"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _EPSILON))


def _inside(moment: datetime, now: datetime, window_seconds: int) -> bool:
    # Strictly after the cut-off, so a 0 s window holds nothing from before.
    return moment > now - timedelta(seconds=window_seconds)
