"""``fallback.preferCheaper``: serve from the hosted API while it is cheaper than the pool, for long enough. Pure.

Two states, both kept in ``status.cost`` so that an operator restart changes nothing:

* **Serving** (``onApiSince`` unset). The comparison is the cost figures' (:mod:`.cost`): what the API
  would charge for the pool's current tokens (vLLM's prompt and generation rates at the API's prices)
  against the pool's $/hour (the replicas the Deployments ask for, at their prices). What the router
  already spills costs the same either way, so only the pool's own tokens count. While the API is
  cheaper, ``apiCheaperSince`` says since when; after ``preferCheaperForSeconds`` without a break the
  mode goes Full (``FallbackActive`` reason ``CheaperOnAPI``) and the scaler's target becomes 0 at once:
  the router sends every new request to the API within a second, and the replicas finish what they
  hold within ``interruption.drainSeconds``.
* **On the API** (``onApiSince`` set). The pool stays at zero whatever the router's demand asks for
  (that demand is what the API serves now). The comparison: what the API charges for the tokens the
  router sends it against the pool's minimum serving capacity, one replica (on spot if the capacity
  split puts the first replica there and spot capacity is not missing, else on-demand). When that
  replica would be cheaper for ``preferCheaperForSeconds`` without a break (``poolCheaperSince``), the
  target becomes at least 1 and the state ends: the fallback leaves Full the normal way (Overflow once
  a replica is ready, Off after ``recoverAfterSeconds``) and the scaler sizes the pool from there.

Both directions use the same window, not ``recoverAfterSeconds`` (a health hysteresis of a couple of
minutes): a load near the break-even then flips at most once per window, and a burst shorter than it
never starts a GPU replica that is paid for while it loads and may be gone again before it served much.

Blind (no signals, a token rate not formed yet, as after a restart of the pods source), a window holds:
it neither restarts nor completes, as the fallback's mode holds on no data. A pool with no ready replica
(not because of this) has no load to compare: its window restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from controller.api.spec import CostSpec, InferencePoolSpec
from controller.api.status import CostStatus, InferencePoolStatus
from controller.core import events
from controller.core.capacity import split_replicas
from controller.core.conditions import format_time, parse_time
from controller.core.cost import pool_cost
from controller.core.scaling import Direction, ScalingDecision, ScalingReason
from controller.core.signals import MetricsProblem, PoolSignals
from controller.core.spot import shift_split

__all__ = ["CHEAPER_ON_API", "CheaperDecision", "api_hourly", "decide_prefer_cheaper", "override_scaling"]

CHEAPER_ON_API = "CheaperOnAPI"  # the FallbackActive reason while the pool is at zero for the price
_SECONDS_PER_HOUR = 3600.0
_MILLION = 1e6


@dataclass(frozen=True)
class CheaperDecision:
    """What preferCheaper decided this evaluation; ``replicas`` None leaves the scaler's target alone."""

    on_api: bool = False  # at zero because the API is cheaper (after this evaluation)
    replicas: int | None = None  # 0 while on the API; at least 1 the evaluation it comes back
    message: str = ""  # in words: FallbackActive's while on the API, the scaling decision's when replicas is set
    api_cheaper_since: str | None = None
    on_api_since: str | None = None
    pool_cheaper_since: str | None = None
    events: tuple[events.PoolEvent, ...] = ()

    def stamp(self, cost: CostStatus | None) -> CostStatus | None:
        """The cost figures with this decision's timers."""
        if cost is None:
            return None
        return cost.model_copy(update={"api_cheaper_since": self.api_cheaper_since,
                                       "on_api_since": self.on_api_since,
                                       "pool_cheaper_since": self.pool_cheaper_since})


def api_hourly(prices: CostSpec, prompt_tokens_per_second: float | None,
               generation_tokens_per_second: float | None) -> float | None:
    """What the API charges per hour for these token rates; None when a rate or a price is unknown."""
    input_price, output_price = prices.api_input_per_million_tokens, prices.api_output_per_million_tokens
    if None in (prompt_tokens_per_second, generation_tokens_per_second, input_price, output_price):
        return None
    assert prompt_tokens_per_second is not None and generation_tokens_per_second is not None
    assert input_price is not None and output_price is not None
    return ((prompt_tokens_per_second * input_price + generation_tokens_per_second * output_price)
            * _SECONDS_PER_HOUR / _MILLION)


def _money(value: float, currency: str) -> str:
    return f"{value:.4g} {currency}/h"


def _tokens(prompt: float | None, generation: float | None) -> str:
    return f"{prompt or 0:.4g} prompt + {generation or 0:.4g} generated tokens/s"


def _held(since: str | None, now: datetime) -> tuple[str, float]:
    start = since or format_time(now)
    return start, (now - parse_time(start)).total_seconds()


def _minimum_replica(spec: InferencePoolSpec, spot_cap: int | None) -> tuple[str, float | None]:
    """The pool's minimum serving capacity: one replica, where the split (and missing spot) would put it."""
    first = shift_split(split_replicas(1, spec.capacity), spot_cap)
    if first.spot:
        return "spot", spec.cost.spot_replica_hourly
    return "on-demand", spec.cost.on_demand_replica_hourly


def decide_prefer_cheaper(spec: InferencePoolSpec, previous: InferencePoolStatus,
                          signals: PoolSignals | MetricsProblem | None, *, spot_replicas: int,
                          on_demand_replicas: int, ready: int, spot_cap: int | None,
                          now: datetime) -> CheaperDecision:
    """The preferCheaper state after this evaluation; see the module docstring for the rules."""
    fallback = spec.fallback
    if not (fallback.prefer_cheaper and fallback.enabled):
        return CheaperDecision()  # off: nothing changes, no timer is kept
    before = previous.cost or CostStatus(currency=spec.cost.currency)
    window = fallback.prefer_cheaper_for_seconds
    reading = signals if isinstance(signals, PoolSignals) else None
    currency = spec.cost.currency
    if before.on_api_since is None:
        return _while_serving(spec, before, reading, spot_replicas, on_demand_replicas, ready, window, now)

    kind, replica_price = _minimum_replica(spec, spot_cap)
    staying = (f"the API was cheaper for the pool's load for {window} s (fallback.preferCheaper): at zero since "
               f"{before.on_api_since}, all traffic on the API; back when one {kind} replica "
               f"({_money(replica_price or 0, currency)}) costs less than the API charges for the router's "
               f"traffic for {window} s")
    on_api = CheaperDecision(on_api=True, replicas=0, message=staying, on_api_since=before.on_api_since)
    prompt = reading.router_api_prompt_tokens_per_second if reading else None
    generation = reading.router_api_generation_tokens_per_second if reading else None
    charged = api_hourly(spec.cost, prompt, generation)
    if charged is None or replica_price is None:  # blind: the window holds
        return replace(on_api, pool_cheaper_since=before.pool_cheaper_since)
    if charged <= replica_price:
        return on_api  # the API is still cheaper (or as cheap): the window restarts
    since, held = _held(before.pool_cheaper_since, now)
    if held < window:
        return replace(on_api, pool_cheaper_since=since)
    why = (f"the API charged {_money(charged, currency)} for the router's {_tokens(prompt, generation)}, more than "
           f"one {kind} replica's {_money(replica_price, currency)}, for {held:.0f} s (fallback.preferCheaper)")
    return CheaperDecision(
        replicas=1, message=f"{why}: scaling up; traffic returns to the pool once a replica is ready",
        events=(events.cheaper_on_pool(f"{why}: scaling up from zero; the traffic moves back to the pool once a "
                                       "replica is ready (Full -> Overflow, Off after recoverAfterSeconds)"),))


def _while_serving(spec: InferencePoolSpec, before: CostStatus, reading: PoolSignals | None, spot_replicas: int,
                   on_demand_replicas: int, ready: int, window: int, now: datetime) -> CheaperDecision:
    if ready == 0:
        return CheaperDecision()  # nothing serves, so there is no load to price: the window restarts
    figures = pool_cost(spec.cost, spot_replicas=spot_replicas, on_demand_replicas=on_demand_replicas,
                        prompt_tokens_per_second=reading.prompt_tokens_per_second if reading else None,
                        generation_tokens_per_second=reading.generation_tokens_per_second if reading else None)
    if figures is None or figures.cheaper is None:  # blind: the window holds
        return CheaperDecision(api_cheaper_since=before.api_cheaper_since)
    if figures.cheaper == "pool":
        return CheaperDecision()
    since, held = _held(before.api_cheaper_since, now)
    if held < window:
        return CheaperDecision(api_cheaper_since=since)
    assert reading is not None and figures.api_hourly is not None and figures.hourly is not None
    currency = spec.cost.currency
    replicas = spot_replicas + on_demand_replicas
    why = (f"the API would charge {_money(figures.api_hourly, currency)} for the pool's "
           f"{_tokens(reading.prompt_tokens_per_second, reading.generation_tokens_per_second)}, less than its "
           f"{replicas} replica(s) cost ({_money(figures.hourly, currency)}: {spot_replicas} spot, "
           f"{on_demand_replicas} on-demand), for {held:.0f} s (fallback.preferCheaper)")
    moment = format_time(now)
    staying = (f"{why}: scaled to zero at {moment}, all traffic on the API; back when one replica costs less than "
               f"the API charges for the router's traffic for {window} s")
    return CheaperDecision(
        on_api=True, replicas=0, message=staying, on_api_since=moment,
        events=(events.cheaper_on_api(f"{why}: all traffic to the API (fallback -> Full) and scaling "
                                      f"{replicas} -> 0"),))


def override_scaling(decision: ScalingDecision, cheaper: CheaperDecision, spec: InferencePoolSpec) -> ScalingDecision:
    """The scaler's decision with preferCheaper's target in its place (the scaler's inputs kept for the status)."""
    if cheaper.replicas is None:
        return decision
    current = decision.current
    if cheaper.replicas == 0:
        desired, reason = 0, ScalingReason.SCALED_TO_ZERO
        asked = f"; the scaler alone would ask for {decision.desired}" if decision.desired else ""
        change = f"{current} -> 0" if current else "holding 0"
        message = f"{change}: {cheaper.message}{asked}"
    else:
        # At least one replica; more if the router's demand already asks for them (the scaler goes on from there).
        desired = min(spec.replicas.max, max(cheaper.replicas, decision.desired))
        reason = ScalingReason.SCALED_UP if desired > current else decision.reason
        message = f"{current} -> {desired}: {cheaper.message}"
    direction: Direction = "up" if desired > current else "down" if desired < current else "hold"
    return replace(decision, desired=desired, reason=reason, message=message, direction=direction, limited_by=None)
