"""What the pool costs now, what the hosted API would charge for the same traffic, and where they cross.

From ``spec.cost`` (the prices) and the pool's load (vLLM's prompt and generation token counters, as
rates over the evaluation window):

* ``hourly``: replicas by capacity type times their $/replica-hour;
* ``perMillionTokens``: that hourly cost over the tokens the pool processes per hour (prompt and
  generation together): the effective price of self-hosting at this load;
* ``apiHourly`` / ``apiPerMillionTokens``: the API's list prices for the same prompt and generation tokens;
* ``breakEvenTokensPerSecond``: the load at which the API would cost as much as the pool does now.
  Below it the API is cheaper. The API's price is blended at the current prompt:generation mix; with
  no traffic, 3:1 (Artificial Analysis's convention for a blended price, reference/vllm-replica-model.md 4.4).

Figures are rounded to what a person reads, so a status is not rewritten for noise. A price the spec
does not give makes the figures that need it None (never a zero that looks like free).
"""

from __future__ import annotations

from controller.api.spec import CostSpec
from controller.api.status import CostStatus

__all__ = ["BLEND_PROMPT_SHARE_WITHOUT_TRAFFIC", "pool_cost"]

BLEND_PROMPT_SHARE_WITHOUT_TRAFFIC = 0.75  # 3 prompt tokens to 1 generated
_SECONDS_PER_HOUR = 3600.0
_MILLION = 1e6


def _significant(value: float | None, digits: int = 4) -> float | None:
    if value is None or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def pool_cost(prices: CostSpec, *, spot_replicas: int, on_demand_replicas: int,
              prompt_tokens_per_second: float | None, generation_tokens_per_second: float | None) -> CostStatus | None:
    """The cost figures, or None when the spec gives no price at all."""
    replica_prices = (prices.spot_replica_hourly, prices.on_demand_replica_hourly)
    api_prices = (prices.api_input_per_million_tokens, prices.api_output_per_million_tokens)
    if all(price is None for price in (*replica_prices, *api_prices)):
        return None
    hourly: float | None = 0.0
    for count, price in ((spot_replicas, prices.spot_replica_hourly),
                         (on_demand_replicas, prices.on_demand_replica_hourly)):
        if count:
            hourly = None if price is None or hourly is None else hourly + count * price
    loaded = prompt_tokens_per_second is not None and generation_tokens_per_second is not None
    tokens_per_second = (prompt_tokens_per_second or 0.0) + (generation_tokens_per_second or 0.0) if loaded else None
    per_million = None
    if hourly is not None and tokens_per_second:
        per_million = hourly / (tokens_per_second * _SECONDS_PER_HOUR / _MILLION)
    api_hourly = api_per_million = break_even = None
    if api_prices[0] is not None and api_prices[1] is not None:
        input_price, output_price = api_prices[0], api_prices[1]
        prompt_share = (prompt_tokens_per_second or 0.0) / tokens_per_second if tokens_per_second else (
            BLEND_PROMPT_SHARE_WITHOUT_TRAFFIC)
        blended = prompt_share * input_price + (1 - prompt_share) * output_price  # $/M tokens
        api_per_million = blended
        if loaded:
            api_hourly = ((prompt_tokens_per_second or 0.0) * input_price
                          + (generation_tokens_per_second or 0.0) * output_price) * _SECONDS_PER_HOUR / _MILLION
        if hourly is not None and blended > 0:
            break_even = hourly / _SECONDS_PER_HOUR / (blended / _MILLION)
    cheaper = None
    if hourly is not None and api_hourly is not None:
        cheaper = "api" if api_hourly < hourly else "pool"
    return CostStatus(
        currency=prices.currency, hourly=_significant(hourly), spot_replicas=spot_replicas,
        on_demand_replicas=on_demand_replicas, tokens_per_second=_significant(tokens_per_second),
        per_million_tokens=_significant(per_million), api_hourly=_significant(api_hourly),
        api_per_million_tokens=_significant(api_per_million),
        break_even_tokens_per_second=_significant(break_even), cheaper=cheaper,
    )
