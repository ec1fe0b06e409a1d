"""``poolpilot size``: memory, warnings, the engine's own throughput, cost against the API, the sustainable rate."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from controller.sim.profiles import PROFILES, HostedApiProfile, ReplicaProfile, hosted_api_for
from controller.sim.sizing import (
    SizeReport,
    low_load_ttft,
    render_size,
    saturated_throughput,
    size_as_json,
    size_replica,
    sustainable_requests_per_second,
)

L4 = PROFILES["llama-3.1-8b-l4"]
A100 = PROFILES["llama-3.1-8b-a100"]
H100 = PROFILES["llama-3.1-8b-h100"]
API_8B = hosted_api_for(L4.model)


def size(profile: ReplicaProfile = L4, **kwargs: Any) -> SizeReport:
    kwargs.setdefault("max_model_len", profile.max_model_len)
    kwargs.setdefault("api", hosted_api_for(profile.model))
    return size_replica(profile, **kwargs)


def test_70b_on_one_l4_does_not_fit() -> None:
    # 70B's 141.1 GB of BF16 weights (§0) on a single 24 GB L4
    seventy_on_l4 = replace(L4, name="llama-3.1-70b-l4", model="meta-llama/Llama-3.1-70B-Instruct",
                            weights_gib_per_gpu=141.1e9 / 1024**3, kv_bytes_per_token=327_680)
    report = size(seventy_on_l4, api=hosted_api_for(seventy_on_l4.model))
    assert any(warning.startswith("the model does not fit") for warning in report.warnings)
    assert report.kv_capacity_tokens == 0 and report.kv_gib_per_gpu == 0.0
    assert report.saturated_output_tokens_per_second is None and report.ttft_low_load_seconds is None
    assert report.break_even_tokens_per_second is None and report.breaks_even is None
    json.dumps(size_as_json(report))  # still a report
    assert "n/a" in render_size(report)


def test_a_cache_of_few_sequences_is_flagged() -> None:
    # 8B on L4: ~25.9 k KV tokens hold 3.2 sequences of 8192 (§2.3)
    report = size(L4)
    assert report.sequences_at_max_model_len == pytest.approx(25_856 / 8192)
    assert any("memory for weights, none for the cache" in warning for warning in report.warnings)
    roomy = size(L4, max_model_len=2048)  # 12.6 sequences
    assert not any("none for the cache" in warning for warning in roomy.warnings)


def test_max_model_len_beyond_the_cache_is_a_refusal_to_start() -> None:
    report = size(L4, max_model_len=131_072)
    assert any(warning.startswith("vLLM refuses to start") and "25856" in warning for warning in report.warnings)
    assert report.saturated_requests_per_second is not None  # figured at the longest max_model_len that starts


def test_a100s_max_num_seqs_note_only_where_the_cache_holds_more() -> None:
    # 451 k tokens hold 361 requests of 1250 tokens, above A100's 256 (§2.4, PR #17885); H100 gets 1024
    assert any("max_num_seqs 256" in warning for warning in size(A100).warnings)
    assert not any("max_num_seqs" in warning for warning in size(H100).warnings)
    assert not any("max_num_seqs" in warning for warning in size(A100, prompt_tokens=3000, output_tokens=1000).warnings)


def test_a_request_longer_than_max_model_len_is_flagged() -> None:
    report = size(L4, max_model_len=2048, prompt_tokens=2000, output_tokens=100)
    assert any("vLLM refuses it (400)" in warning for warning in report.warnings)
    assert report.saturated_requests_per_second is None


def test_memory_figures_are_the_profiles() -> None:
    report = size(H100)
    assert report.kv_capacity_tokens == H100.kv_capacity_tokens and report.kv_blocks == H100.kv_blocks
    assert report.usable_gib_per_gpu == pytest.approx(72.0)
    assert report.kv_gib_per_gpu == pytest.approx(72.0 - 14.96 - 2.0)
    assert report.sequences_at_request == pytest.approx(H100.kv_capacity_tokens / 1250)


def test_throughput_and_ttft_come_from_the_engine() -> None:
    report = size(A100)
    throughput = saturated_throughput(A100, prompt_tokens=1000, output_tokens=250, max_model_len=A100.max_model_len)
    assert report.saturated_requests_per_second == throughput.requests_per_second
    assert report.saturated_output_tokens_per_second == pytest.approx(throughput.requests_per_second * 250)
    assert report.saturated_tokens_per_second == pytest.approx(throughput.requests_per_second * 1250)
    assert report.ttft_low_load_seconds == low_load_ttft(A100, prompt_tokens=1000, output_tokens=250)
    assert report.ttft_low_load_seconds == pytest.approx(A100.step_seconds(0, 1000, 1000))


def test_cost_at_saturation_and_break_even() -> None:
    report = size(L4)
    assert report.saturated_tokens_per_second is not None
    tokens_per_hour_millions = report.saturated_tokens_per_second * 3600 / 1e6
    assert report.spot_per_million_tokens == pytest.approx(L4.spot_hourly / tokens_per_hour_millions, rel=1e-3)
    assert report.on_demand_per_million_tokens == pytest.approx(L4.on_demand_hourly / tokens_per_hour_millions,
                                                                rel=1e-3)
    # Fireworks' $0.20 / $0.20: the same at every mix
    assert report.api_per_million_tokens == report.api_blended_per_million == pytest.approx(0.20)
    # one spot replica costs 0.375 $/h = what 0.375 / 3600 / 0.2e-6 = 521 tokens/s cost at the API
    assert report.break_even_capacity == "spot"
    break_even = report.break_even_tokens_per_second
    assert break_even == pytest.approx(L4.spot_hourly / 3600 / 0.2e-6, rel=1e-3)
    assert break_even is not None and report.break_even_requests_per_second == pytest.approx(break_even / 1250)
    assert report.breaks_even is True
    on_demand = size(L4, on_demand=True)
    assert on_demand.break_even_capacity == "on-demand"
    assert on_demand.break_even_tokens_per_second == pytest.approx(L4.on_demand_hourly / 3600 / 0.2e-6, rel=1e-3)


def test_the_api_blend_is_3_to_1_and_the_mix_is_the_requests() -> None:
    api = HostedApiProfile(input_per_million=0.15, output_per_million=0.60, ttft_seconds=0.3,
                           output_tokens_per_second=150.0, provider="gpt-4o-mini")  # §4.3 reference row
    report = size(L4, api=api)
    assert report.api_blended_per_million == pytest.approx(0.75 * 0.15 + 0.25 * 0.60)
    assert report.api_per_million_tokens == pytest.approx(0.8 * 0.15 + 0.2 * 0.60)  # 1000 in : 250 out


def test_a_replica_dearer_than_the_api_even_saturated_says_so() -> None:
    deepinfra = HostedApiProfile(input_per_million=0.06, output_per_million=0.06, ttft_seconds=0.1,
                                 output_tokens_per_second=200.0, provider="DeepInfra")  # §4.3
    report = size(L4, api=deepinfra, on_demand=True)
    assert report.breaks_even is False
    assert any(warning.startswith("even saturated") for warning in report.warnings)


def test_size_json_fields() -> None:
    body = size_as_json(size(H100))
    assert json.loads(json.dumps(body)) == body
    for field in ("profile", "gpu", "gpus", "instance", "max_model_len", "weights_gib_per_gpu", "gpu_memory_gib",
                  "kv_capacity_tokens", "kv_blocks", "sequences_at_max_model_len", "sequences_at_request",
                  "saturated_output_tokens_per_second", "saturated_requests_per_second", "ttft_low_load_seconds",
                  "spot_per_million_tokens", "on_demand_per_million_tokens", "api_per_million_tokens",
                  "api_blended_per_million", "break_even_tokens_per_second", "breaks_even", "warnings"):
        assert field in body, field
    assert body["profile"] == "llama-3.1-8b-h100" and body["kv_capacity_tokens"] == H100.kv_capacity_tokens
    assert isinstance(body["warnings"], list)


def test_render_size_gives_every_figure_its_unit() -> None:
    text = render_size(size(L4))
    rows = [line for line in text.splitlines() if not line.startswith("warning:")]
    assert len(rows) >= 14
    for unit in ("GiB", "tokens", "sequences", "requests/s", "output tokens/s", "ms", "$/M tokens", "$/h"):
        assert unit in text, unit
    assert "warning: memory for weights, none for the cache" in text
    # every figure row carries a unit or words after its number
    for row in rows[1:]:
        assert any(char.isalpha() for char in row.split("  ", 1)[1].strip()), row


def test_sustainable_rate_is_below_saturation_and_grows_with_the_slo() -> None:
    saturated = saturated_throughput(A100, prompt_tokens=1000, output_tokens=250).requests_per_second
    tight = sustainable_requests_per_second(A100, prompt_tokens=1000, output_tokens=250, ttft_slo_seconds=0.12)
    loose = sustainable_requests_per_second(A100, prompt_tokens=1000, output_tokens=250, ttft_slo_seconds=2.0)
    assert 0 < tight < loose <= saturated
    assert loose > 0.9 * saturated  # a 2 s SLO holds almost up to saturation
    again = sustainable_requests_per_second(A100, prompt_tokens=1000.0, output_tokens=250.0, ttft_slo_seconds=0.12)
    assert again == tight  # seeded


def test_no_rate_is_sustainable_below_the_low_load_ttft() -> None:
    # one 1 k prompt alone takes ~73 ms on A100 (§1.4)
    assert sustainable_requests_per_second(A100, prompt_tokens=1000, output_tokens=250, ttft_slo_seconds=0.05) == 0.0
