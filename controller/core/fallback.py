"""Where the pool's traffic goes: ``Off`` (the pool), ``Overflow`` (what it cannot take goes to the API),
``Full`` (everything to the API).

Two steps, both pure:

1. **Saturation** (the ``Saturated`` condition): can the pool take its load now?

   * ``NoReadyReplicas``: nothing is ready (scaled to zero, starting, every spot replica reclaimed);
   * ``AtMaximum`` / ``CannotGrow``: at ``replicas.max``, or the asked-for replicas are not coming
     (``CapacityNotReady``), with the queue per ready replica or the KV cache above the fallback's
     saturation thresholds, or the observed TTFT percentile over ``spec.slo`` (what users feel: on a slow
     GPU a queue under the threshold already waits for seconds);
   * ``ColdStart``: replicas were ordered and are starting while the queue per ready replica is above
     the scaler's target, or the TTFT is over the SLO: the API bridges the minutes a GPU replica takes to
     start;
   * ``WithinCapacity`` (False), or ``Unknown`` when the signals cannot be read.

2. **The mode.** Full at once when nothing is ready; Overflow at once for a cold start, and after
   ``saturation.forSeconds`` of saturation otherwise; from Full to Overflow as soon as a replica is ready
   (the router still spills what the pool refuses); back to Off only after ``recoverAfterSeconds``
   without saturation (hysteresis). Blind (no signals), the mode holds: never recover on no data.

The timers are the ``Saturated`` condition's ``lastTransitionTime``, so an operator restart changes nothing.

3. **What one replica takes** (``status.fallback.inFlightPerReplica``), for the router's budget in Overflow.
   ``--max-num-seqs`` alone overstates it whenever the KV cache is what limits the batch (an 8B model on an
   H100 batches up to 1,024 sequences, its cache holds a few hundred of a chat mix): the router would then
   queue hundreds of requests in vLLM before it spills one, and every one of them waits. So the budget is
   measured: the sequences a replica runs over the share of the cache they fill (``running / ready / kv``)
   is how many its cache holds at the current mix; plus a queue of ``saturation.queueDepthPerReplica`` at
   most, and no longer than a replica starts within the SLO (Little's law: ``slo.ttftSeconds`` times the
   requests per second a replica serves, from the router's arrivals less its spills): on a slow GPU a queue
   of 8 is already seconds of waiting. It is formed only from a cache at least ``BUDGET_MIN_KV`` full (a
   nearly empty cache says little), and kept from the status otherwise.

With ``fallback.preferCheaper`` the pool may also be at zero because the API is cheaper (:mod:`.cheaper`): then
the mode is Full with the ``FallbackActive`` reason ``CheaperOnAPI``, and the move there posts the
``CheaperOnAPI`` Event (Normal: asked for) instead of ``FallbackFull``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from controller.api.spec import InferencePoolSpec
from controller.api.status import Condition, ConditionStatus, FallbackMode, FallbackStatus, InferencePoolStatus
from controller.core import events
from controller.core.cheaper import CHEAPER_ON_API, CheaperDecision
from controller.core.conditions import find_condition, format_time, parse_time, set_condition
from controller.core.scaling import ScalingDecision, ScalingReason
from controller.core.signals import MetricsProblem, PoolSignals, ttft_quantile

__all__ = ["BUDGET_MIN_KV", "FallbackDecision", "Saturation", "assess_saturation", "decide_fallback", "replica_budget"]

_RANK: dict[FallbackMode, int] = {"Off": 0, "Overflow": 1, "Full": 2}
# The budget is estimated from a KV cache at least this full: below it, a few long requests swing the ratio.
BUDGET_MIN_KV = 0.3


def replica_budget(spec: InferencePoolSpec, signals: PoolSignals | MetricsProblem | None, ready: int,
                   previous: int | None) -> int | None:
    """Requests one replica takes before the router spills (see the module's step 3); None: not observed yet."""
    if not isinstance(signals, PoolSignals) or ready <= 0:
        return previous
    running, kv = signals.running_requests, signals.kv_cache_utilization
    if running is None or kv is None or kv < BUDGET_MIN_KV or running <= 0:
        return previous
    sequences = running / ready / kv
    queue = spec.fallback.saturation.queue_depth_per_replica
    arrivals = signals.router_arrivals_per_second
    if arrivals is not None and arrivals > 0:
        served_per_replica = max(0.0, arrivals - (signals.router_spills_per_second or 0.0)) / ready
        queue = min(queue, max(1.0, spec.slo.ttft_seconds * served_per_replica))
    return max(1, math.ceil(sequences + queue))


@dataclass(frozen=True)
class Saturation:
    """The ``Saturated`` condition's content for this evaluation."""

    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class FallbackDecision:
    mode: FallbackMode
    status: FallbackStatus
    conditions: tuple[Condition, ...]  # Saturated and FallbackActive only, set against the previous ones
    events: tuple[events.PoolEvent, ...] = ()


def _load_words(signals: PoolSignals, ready: int) -> str:
    parts = []
    if signals.queue_depth is not None:
        parts.append(f"queue {signals.queue_depth:g} over {ready} ready replica(s) "
                     f"({signals.queue_depth / ready:.1f} per replica)")
    if signals.kv_cache_utilization is not None:
        parts.append(f"KV cache {signals.kv_cache_utilization:.0%}")
    return " and ".join(parts)


def assess_saturation(spec: InferencePoolSpec, signals: PoolSignals | MetricsProblem | None,
                      decision: ScalingDecision | None, ready: int) -> Saturation:
    """Whether the pool can take its load now, with the numbers that say so."""
    if ready == 0:
        asked = decision.desired if decision else None
        detail = f": {asked} asked for" if asked else ": scaled to zero" if asked == 0 else ""
        return Saturation("True", "NoReadyReplicas", f"no replica is ready{detail}")
    if not isinstance(signals, PoolSignals) or not signals.usable:
        return Saturation("Unknown", "MetricsUnavailable", "the pool's load cannot be read")
    limits = spec.fallback.saturation
    per_replica = signals.queue_depth / ready if signals.queue_depth is not None else None
    kv = signals.kv_cache_utilization
    above_limits = ((per_replica is not None and per_replica > limits.queue_depth_per_replica)
                    or (kv is not None and kv >= limits.kv_cache_utilization))
    ttft = ttft_quantile(signals.ttft_histogram, spec.slo.ttft_percentile)
    slo_missed = ttft is not None and ttft > spec.slo.ttft_seconds
    above_limits = above_limits or slo_missed
    load = _load_words(signals, ready)
    if ttft is not None:
        load = (f"{load}, p{spec.slo.ttft_percentile:g} TTFT {ttft:.2g} s" if load else
                f"p{spec.slo.ttft_percentile:g} TTFT {ttft:.2g} s")
    thresholds = (f"saturation at {limits.queue_depth_per_replica:g} waiting per replica, KV cache "
                  f"{limits.kv_cache_utilization:.0%} or TTFT over the {spec.slo.ttft_seconds:g} s SLO")
    # Replicas on their way and a queue over the scaler's target: the API bridges their cold start, at once
    # (the scaler's own order counts: it has just asked for them).
    target = spec.scaling.target_queue_depth_per_replica
    starting = 0
    if decision is not None and decision.reason is not ScalingReason.CAPACITY_NOT_READY:
        starting = max(decision.desired - ready, decision.starting_replicas)
    if starting > 0 and (slo_missed or (per_replica is not None and per_replica > target)):
        above = f"over the {spec.slo.ttft_seconds:g} s SLO" if slo_missed else f"above the target of {target:g}"
        return Saturation("True", "ColdStart", f"{load}, {above}, while {starting} replica(s) start")
    if above_limits and decision is not None:
        if decision.desired >= spec.replicas.max:
            return Saturation("True", "AtMaximum", f"{load} at replicas.max {spec.replicas.max} ({thresholds})")
        if decision.reason is ScalingReason.CAPACITY_NOT_READY:
            return Saturation("True", "CannotGrow", f"{load}; the replicas asked for are not becoming ready "
                                                    f"({thresholds})")
    return Saturation("False", "WithinCapacity", f"{load} ({thresholds})")


def _seconds_since(condition: Condition, now: datetime) -> float:
    return (now - parse_time(condition.last_transition_time)).total_seconds()


def _next_mode(spec: InferencePoolSpec, current: FallbackMode, saturated: Condition,
               now: datetime) -> tuple[FallbackMode, str]:
    """The mode and, in words, why."""
    held = _seconds_since(saturated, now)
    if saturated.reason == "NoReadyReplicas":
        return "Full", "no replica is ready: all traffic goes to the API"
    if saturated.status == "Unknown":
        mode: FallbackMode = "Overflow" if current == "Full" else current
        return mode, "the pool's load cannot be read: holding"
    if saturated.status == "True":
        wait = spec.fallback.saturation.for_seconds
        if saturated.reason == "ColdStart" or held >= wait or current != "Off":
            return "Overflow", "the pool takes what it can, the API the rest"
        return "Off", f"saturated for {held:.0f} of {wait} s before traffic spills"
    recover = spec.fallback.recover_after_seconds
    if current == "Off" or held >= recover:
        return "Off", f"within capacity for {held:.0f} s" if current != "Off" else "within capacity"
    return "Overflow", f"recovering: within capacity for {held:.0f} of {recover} s"


def decide_fallback(spec: InferencePoolSpec, previous: InferencePoolStatus,
                    signals: PoolSignals | MetricsProblem | None, decision: ScalingDecision | None, *,
                    ready: int, generation: int, now: datetime,
                    cheaper: CheaperDecision | None = None) -> FallbackDecision:
    """The Saturated and FallbackActive conditions, the mode, and an Event when it changes (``cheaper``: what
    preferCheaper decided; on the API it makes the mode Full)."""
    saturation = assess_saturation(spec, signals, decision, ready)
    conditions = set_condition(previous.conditions, "Saturated", saturation.status, saturation.reason,
                               saturation.message, generation=generation, now=now)
    saturated = find_condition(conditions, "Saturated")
    assert saturated is not None
    current: FallbackMode = previous.fallback.mode if previous.fallback else "Off"
    if not spec.fallback.enabled:
        mode: FallbackMode = "Off"
        active: tuple[ConditionStatus, str, str] = ("False", "FallbackDisabled",
                                                    f"fallback.enabled is false; {saturation.message}")
    elif cheaper is not None and cheaper.on_api:
        mode, active = "Full", ("True", CHEAPER_ON_API, cheaper.message)
    else:
        mode, why = _next_mode(spec, current, saturated, now)
        if mode == "Off":
            active = ("False", "PoolServing", f"all traffic goes to the pool: {why}")
        else:
            active = ("True", "AllToAPI" if mode == "Full" else "Overflow", f"{why} ({saturation.message})")
    conditions = set_condition(conditions, "FallbackActive", *active, generation=generation, now=now)
    since = previous.fallback.since if previous.fallback and mode == current else format_time(now)
    pool_events: tuple[events.PoolEvent, ...] = ()
    cost_driven = cheaper is not None and cheaper.on_api  # its own Event says so, with the prices
    if mode != current and not cost_driven:
        rising = _RANK[mode] > _RANK[current]
        pool_events = (events.fallback_changed(current, mode, f"{active[2]}", rising=rising),)
    decided = tuple(c for c in conditions if c.type in ("Saturated", "FallbackActive"))
    budget = replica_budget(spec, signals, ready, previous.fallback.in_flight_per_replica if previous.fallback
                            else None)
    return FallbackDecision(mode=mode, status=FallbackStatus(mode=mode, since=since, in_flight_per_replica=budget),
                            conditions=decided, events=pool_events)
