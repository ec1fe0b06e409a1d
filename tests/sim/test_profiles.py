"""The replica parameter table reproduces its sources (reference/vllm-replica-model.md, sections named at each test)."""

from __future__ import annotations

import re

import pytest

from controller.sim.profiles import HOSTED_APIS, PROFILES, hosted_api_for, profile_for, profile_named

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


@pytest.mark.parametrize(("name", "tokens"), [
    ("llama-3.1-8b-h100", 451_000),  # §2.3: 8B on A100-80 / H100-80, ~451 k
    ("llama-3.1-8b-a100", 451_000),
    ("llama-3.1-8b-l4", 25_900),  # §2.3: 8B on A10G / L4, ~25.9 k
    ("llama-3.1-8b-a10g", 25_900),
    ("llama-3.1-70b-h100-tp4", 474_000),  # §2.3: 70B TP4 on 80 GB GPUs, ~474 k
    ("llama-3.1-70b-a100-tp4", 474_000),
])
def test_kv_capacity_matches_the_notes_table(name: str, tokens: int) -> None:
    profile = PROFILES[name]
    assert profile.kv_capacity_tokens == pytest.approx(tokens, rel=0.005)
    assert profile.kv_capacity_tokens == profile.kv_blocks * 16


def test_kv_bytes_per_token_and_weights_follow_the_architecture() -> None:
    # §2.2: 2 x layers x KV heads x head dim x 2 bytes
    assert PROFILES["llama-3.1-8b-l4"].kv_bytes_per_token == 131_072
    assert PROFILES["llama-3.1-70b-h100-tp4"].kv_bytes_per_token == 327_680
    # §0: 141.1 GB over 4 GPUs = 32.9 GiB each
    assert PROFILES["llama-3.1-70b-h100-tp4"].weights_gib_per_gpu == pytest.approx(32.9, abs=0.05)


def test_step_time_reproduces_the_notes_sanity_figure() -> None:
    # §1.4: 8B A100, 256 decodes at 1 k context: max(10, 0.071 x 256) + 0.09 x 256 + 1.5 = 42.7 ms
    step = PROFILES["llama-3.1-8b-a100"].step_seconds(decode_seqs=256, prefill_tokens=0, context_tokens=256_000)
    assert step == pytest.approx(0.042716)


@pytest.mark.parametrize(("name", "low_ms", "high_ms"), [
    ("llama-3.1-8b-a10g", 34 * 0.9, 34 * 1.1),  # §0: ~34 ms
    ("llama-3.1-8b-l4", 61 * 0.9, 61 * 1.1),  # §0: ~61 ms (PR #11078)
    ("llama-3.1-8b-a100", 11, 13),
    ("llama-3.1-8b-h100", 7, 8),
    ("llama-3.1-70b-a100-tp4", 38, 45),
    ("llama-3.1-70b-h100-tp4", 21, 30),
])
def test_batch_one_decode_step_is_in_the_notes_range(name: str, low_ms: float, high_ms: float) -> None:
    step_ms = PROFILES[name].step_seconds(decode_seqs=1, prefill_tokens=0, context_tokens=1000) * 1000
    assert low_ms <= step_ms <= high_ms


def test_vllm_defaults_by_gpu_class() -> None:
    # §2.4: >= 70 GiB and not A100 -> 1024 / 8192; otherwise 256 / 2048
    for profile in PROFILES.values():
        large = profile.gpu.startswith("H100")
        assert (profile.max_num_seqs, profile.max_num_batched_tokens) == ((1024, 8192) if large else (256, 2048))
        assert profile.block_size == 16 and profile.gpu_memory_utilization == 0.9


def test_every_default_max_model_len_fits_the_kv_cache() -> None:
    for profile in PROFILES.values():
        assert profile.max_model_len <= profile.kv_capacity_tokens, profile.name
    assert PROFILES["llama-3.1-8b-l4"].max_model_len == 8192  # §2.3: 131 k would not start on 24 GB


@pytest.mark.parametrize(("name", "low", "high"), [
    ("llama-3.1-8b-a10g", 0.42, 0.45),  # §4.1 spot / on-demand ranges
    ("llama-3.1-8b-l4", 0.43, 0.50),
    ("llama-3.1-8b-a100", 0.32, 0.36),
    ("llama-3.1-70b-a100-tp4", 0.32, 0.36),
    ("llama-3.1-8b-h100", 0.20, 0.47),
    ("llama-3.1-70b-h100-tp4", 0.20, 0.47),
])
def test_spot_prices_keep_the_catalogs_ratio(name: str, low: float, high: float) -> None:
    profile = PROFILES[name]
    assert low <= profile.spot_hourly / profile.on_demand_hourly <= high


def test_on_demand_prices_are_the_catalogs() -> None:
    assert PROFILES["llama-3.1-8b-l4"].on_demand_hourly == 0.8048
    assert PROFILES["llama-3.1-8b-h100"].on_demand_hourly == 6.88
    assert PROFILES["llama-3.1-70b-h100-tp4"].on_demand_hourly == pytest.approx(27.52)
    assert PROFILES["llama-3.1-70b-a100-tp4"].on_demand_hourly == pytest.approx(13.72, abs=0.01)


def test_profile_for_picks_by_model_size_and_gpu() -> None:
    assert profile_for(LLAMA_8B, 1).name == "llama-3.1-8b-l4"  # the default GPU for 8B
    assert profile_for(LLAMA_8B, 1, "H100").name == "llama-3.1-8b-h100"
    assert profile_for("meta-llama/Meta-Llama-3.1-8B", 1, "a100-80gb").name == "llama-3.1-8b-a100"
    assert profile_for(LLAMA_8B, 1, "NVIDIA-A10G").name == "llama-3.1-8b-a10g"
    assert profile_for(LLAMA_70B, 4).name == "llama-3.1-70b-h100-tp4"  # the default GPU for 70B
    assert profile_for("llama3.1:70b", 4, "A100").name == "llama-3.1-70b-a100-tp4"
    # node labels: GKE's accelerator names, NVIDIA's GPU product
    assert profile_for(LLAMA_8B, 1, "nvidia-l4").name == "llama-3.1-8b-l4"
    assert profile_for(LLAMA_8B, 1, "NVIDIA-A100-SXM4-80GB").name == "llama-3.1-8b-a100"
    assert profile_for(LLAMA_8B, 1, "nvidia-h100-80gb").name == "llama-3.1-8b-h100"


def test_profile_for_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="--profile"):
        profile_for("mistralai/Mistral-7B-Instruct-v0.3", 1)
    with pytest.raises(ValueError, match=re.escape("llama-3.1-70b-h100-tp4")):
        profile_for(LLAMA_70B, 2)
    with pytest.raises(ValueError, match="--profile"):
        profile_for(LLAMA_8B, 1, "MI300X")
    with pytest.raises(ValueError, match="--profile"):
        profile_for(LLAMA_8B, 1, "nvidia-tesla-a100-40gb")  # not the 80 GB the profile holds
    with pytest.raises(ValueError, match="--profile"):
        profile_for(LLAMA_8B, 1, "A10")  # A10G or A100?


def test_profile_named_lists_the_known_names() -> None:
    assert profile_named("llama-3.1-8b-h100") is PROFILES["llama-3.1-8b-h100"]
    with pytest.raises(ValueError, match=re.escape("llama-3.1-8b-l4")):
        profile_named("llama-3.1-8b-tpu")


def test_hosted_api_defaults_per_model() -> None:
    small, large = hosted_api_for(LLAMA_8B), hosted_api_for(LLAMA_70B)
    assert small is HOSTED_APIS["8b"] and large is HOSTED_APIS["70b"]
    # §4.3 (Fireworks): $0.20 / $0.20 and $0.90 / $0.90 per M tokens; §4.4: ~90 ms / 280 tok/s, 200-600 ms / 160
    assert (small.input_per_million, small.output_per_million) == (0.20, 0.20)
    assert (large.input_per_million, large.output_per_million) == (0.90, 0.90)
    assert small.ttft_seconds < large.ttft_seconds and small.output_tokens_per_second > large.output_tokens_per_second
