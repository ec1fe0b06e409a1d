"""The cost figures against hand-computed values (prices from reference/vllm-replica-model.md 4.1-4.3)."""

from __future__ import annotations

import pytest

from controller.api.spec import CostSpec
from controller.core.cost import pool_cost

# 8B on one L4 (g6.xlarge $0.8048 on demand, ~ $0.32 spot); DeepInfra's 8B at $0.06 / $0.06 per M tokens is
# too cheap to show a crossing, so Bedrock's $0.22 / $0.22 and gpt-4o-mini's $0.15 / $0.60 are used.
PRICES = CostSpec(spot_replica_hourly=0.32, on_demand_replica_hourly=0.8048,
                  api_input_per_million_tokens=0.15, api_output_per_million_tokens=0.60)


def test_hourly_cost_effective_price_api_price_and_break_even_by_hand() -> None:
    cost = pool_cost(PRICES, spot_replicas=3, on_demand_replicas=1,
                     prompt_tokens_per_second=1500.0, generation_tokens_per_second=500.0)
    assert cost is not None
    # 3 x 0.32 + 0.8048 = 1.7648 $/h
    assert cost.hourly == 1.765
    # 2000 tok/s = 7.2 M tok/h: 1.7648 / 7.2 = 0.2451 $/M
    assert cost.tokens_per_second == 2000 and cost.per_million_tokens == 0.2451
    # 1500 x 0.15 + 500 x 0.60 = 525 $/M per second -> x 3600 / 1e6 = 1.89 $/h
    assert cost.api_hourly == 1.89
    # blended at 75 % prompt: 0.75 x 0.15 + 0.25 x 0.60 = 0.2625 $/M
    assert cost.api_per_million_tokens == 0.2625
    # 1.7648 $/h / 3600 / 0.2625e-6 $/tok = 1867.5 tok/s
    assert cost.break_even_tokens_per_second == 1868
    assert cost.cheaper == "pool" and cost.currency == "USD"


def test_below_the_break_even_load_the_api_is_cheaper() -> None:
    cost = pool_cost(PRICES, spot_replicas=3, on_demand_replicas=1,
                     prompt_tokens_per_second=150.0, generation_tokens_per_second=50.0)
    assert cost is not None and cost.cheaper == "api"
    assert cost.api_hourly == 0.189  # a tenth of the load, a tenth of the API bill; the pool still costs 1.765


def test_without_traffic_the_api_price_is_blended_three_to_one_and_there_is_no_effective_price() -> None:
    cost = pool_cost(PRICES, spot_replicas=0, on_demand_replicas=1, prompt_tokens_per_second=0.0,
                     generation_tokens_per_second=0.0)
    assert cost is not None
    assert cost.hourly == 0.8048 and cost.per_million_tokens is None and cost.api_hourly == 0
    assert cost.api_per_million_tokens == pytest.approx(0.2625, rel=1e-3)
    assert cost.break_even_tokens_per_second == pytest.approx(0.8048 / 3600 / 0.2625e-6, rel=1e-2)  # 852 tok/s


def test_a_missing_price_is_unknown_never_free() -> None:
    no_spot_price = CostSpec(on_demand_replica_hourly=0.8048, api_input_per_million_tokens=0.15,
                             api_output_per_million_tokens=0.60)
    cost = pool_cost(no_spot_price, spot_replicas=2, on_demand_replicas=1, prompt_tokens_per_second=None,
                     generation_tokens_per_second=None)
    assert cost is not None and cost.hourly is None and cost.break_even_tokens_per_second is None
    assert cost.tokens_per_second is None and cost.api_hourly is None and cost.cheaper is None
    # Only on-demand replicas running: the spot price is not needed.
    on_demand_only = pool_cost(no_spot_price, spot_replicas=0, on_demand_replicas=2, prompt_tokens_per_second=None,
                               generation_tokens_per_second=None)
    assert on_demand_only is not None and on_demand_only.hourly == 1.61
    assert pool_cost(CostSpec(), spot_replicas=2, on_demand_replicas=1, prompt_tokens_per_second=1.0,
                     generation_tokens_per_second=1.0) is None
