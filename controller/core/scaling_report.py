"""What a scaling evaluation puts in the status and the Events. Pure.

The status is written only when it changes, so what goes into it must not change
on every evaluation: the MetricsAvailable message names the source and the
replica count, not the values; the displayed signals (QUEUE, KV%) refresh when a
decision changes replicas, when metrics flip, or when the shown numbers moved and
the last refresh is older than ``refresh_seconds``. The TTFT shown is the decision's (the
percentile is the pool's ``spec.slo``, which the reading does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from controller.api.status import Condition, ConditionStatus, ScalingDecisionStatus, Signals
from controller.core import events
from controller.core.conditions import format_time, parse_time
from controller.core.signals import MetricsProblem, PoolSignals

__all__ = ["Decision", "ScalingOutcome", "decision_status", "metrics_condition", "metrics_events", "refreshed_signals"]


class Decision(Protocol):
    """The part of a scaling decision the status and Events need."""

    @property
    def current(self) -> int: ...
    @property
    def desired(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def ttft_seconds(self) -> float | None:
        """The TTFT at the SLO's percentile the decision read; None when not read."""
        ...


@dataclass(frozen=True)
class ScalingOutcome:
    reading: PoolSignals | MetricsProblem
    source: str  # "pods" or "prometheus"
    decision: Decision


def _usable(reading: PoolSignals | MetricsProblem) -> bool:
    return isinstance(reading, PoolSignals) and reading.usable


def metrics_condition(reading: PoolSignals | MetricsProblem, source: str) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of MetricsAvailable."""
    if isinstance(reading, MetricsProblem):
        return "False", str(reading.kind), f"{source}: {reading.message}; holding the replica count"
    if not reading.usable:
        return "False", "NoSignals", f"{source}: neither queue depth nor KV-cache use could be read; holding"
    if reading.replicas_reporting == 0 and reading.from_router:
        return "True", "RouterSignalsRead", (f"no replica to read via {source}; the router reports "
                                             f"{reading.router_arrivals_per_second or 0:g} requests/s arriving, "
                                             f"{reading.router_in_flight or 0:g} in flight")
    plural = "" if reading.replicas_reporting == 1 else "s"
    read = f"read from {reading.replicas_reporting} replica{plural} via {source}"
    missing = "queue depth" if reading.queue_depth is None else "KV-cache use" if reading.kv_cache_utilization is None \
        else ""
    if missing:
        # Usable, but the scaler will not scale down blind on the missing one: say so where on-call looks.
        return "True", "SignalMissing", f"{read}, but no {missing}: scaling up only, never down, until it is back"
    return "True", "SignalsRead", read


def metrics_events(previous: Condition | None, reading: PoolSignals | MetricsProblem,
                   source: str) -> list[events.PoolEvent]:
    """One Warning when an outage starts, one Normal when it ends; nothing while it lasts."""
    status, reason, message = metrics_condition(reading, source)
    was_down = previous is not None and previous.status == "False"
    if status == "False" and not was_down:
        return [events.metrics_unavailable(reason, message)]
    if status == "True" and was_down:
        return [events.metrics_recovered(message)]
    return []


def _shown(signals: Signals | None) -> tuple[object, ...]:
    if signals is None:
        return ()
    queue = None if signals.queue_depth is None else round(signals.queue_depth)
    return (queue, signals.kv_cache_percent, signals.replicas_reporting, signals.source,
            _rate(signals.prompt_tokens_per_second, 2), _rate(signals.generation_tokens_per_second, 2),
            _rate(signals.router_api_prompt_tokens_per_second, 2),
            _rate(signals.router_api_generation_tokens_per_second, 2), _rate(signals.ttft_seconds, 2))


def _rate(value: float | None, digits: int = 3) -> float | None:
    """Significant digits: a token rate is read for its size, and noise must not rewrite the status."""
    return None if value is None else float(f"{value:.{digits}g}")


def _as_status(reading: PoolSignals, source: str, ttft_seconds: float | None) -> Signals:
    kv = reading.kv_cache_utilization
    return Signals(
        queue_depth=reading.queue_depth,
        running_requests=reading.running_requests,
        kv_cache_utilization=None if kv is None else round(kv, 4),
        kv_cache_percent=None if kv is None else round(kv * 100),
        replicas_reporting=reading.replicas_reporting,
        prompt_tokens_per_second=_rate(reading.prompt_tokens_per_second),
        generation_tokens_per_second=_rate(reading.generation_tokens_per_second),
        router_api_prompt_tokens_per_second=_rate(reading.router_api_prompt_tokens_per_second),
        router_api_generation_tokens_per_second=_rate(reading.router_api_generation_tokens_per_second),
        ttft_seconds=_rate(ttft_seconds),
        source="prometheus" if source == "prometheus" else "pods",
        observed_time=format_time(reading.observed_at),
    )


def refreshed_signals(previous: Signals | None, outcome: ScalingOutcome, *, metrics_flipped: bool,
                      now: datetime, refresh_seconds: float) -> Signals | None:
    """The signals to show: the new reading when worth a status write, else the previous ones."""
    if not _usable(outcome.reading):
        return previous  # keep the last good numbers; their observedTime tells how old they are
    assert isinstance(outcome.reading, PoolSignals)
    fresh = _as_status(outcome.reading, outcome.source, outcome.decision.ttft_seconds)
    if previous is None or metrics_flipped or outcome.decision.desired != outcome.decision.current:
        return fresh
    if _shown(fresh) == _shown(previous):
        return previous
    last = previous.observed_time
    if last is None or now - parse_time(last) >= timedelta(seconds=refresh_seconds):
        return fresh
    return previous



def decision_status(previous: ScalingDecisionStatus | None, decision: Decision,
                    now: datetime) -> ScalingDecisionStatus | None:
    """The last decision that changed the replica count (a hold is not news)."""
    if decision.desired == decision.current:
        return previous
    return ScalingDecisionStatus(time=format_time(now), from_replicas=decision.current,
                                 to_replicas=decision.desired, reason=decision.reason, message=decision.message)
