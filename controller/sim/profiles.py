"""What one vLLM replica is made of: memory, KV capacity, step time, cold start and price, per (model, GPU).

Every figure comes from ``reference/vllm-replica-model.md`` (the note), by section:

* memory and KV (§2.1-§2.3): BF16 weights, KV bytes per token = 2 x layers x KV heads x head dim x 2, the
  capacity formula ``KV = util x GPU memory - weights - overhead`` per GPU, at the note's 0.90 utilization
  (vLLM's older default; current vLLM uses 0.92, §2.4);
* vLLM's scheduler defaults (§2.4): ``max_num_seqs`` / ``max_num_batched_tokens`` 1024 / 8192 on GPUs with at
  least 70 GiB whose name has no "A100" (H100), 256 / 2048 otherwise (A100, A10G, L4);
* the step-time model of §1.4, ``T = max(t_w, c_tok x N_tok) + k_kv x sum(ctx) / 1000 + t_ovh`` (milliseconds),
  with the note's coefficients; where the note gives a range the choice is said at the figure, and two are
  calibrated to vLLM's measured saturated throughput (§1.1) as §1.4's sanity check asks;
* cold start with the node warm (§3.3): one value per model, the middle of the note's range;
* AWS prices (§4.1, us-east-1): list on-demand prices; spot is the middle of the catalog's us-east-1 AZ range.
  A replica that is a share of a larger instance (A100, 70B TP4) pays that share. p5.4xlarge has no spot
  price in the catalog: it takes p5.48xlarge's spot/on-demand ratio;
* hosted-API prices and latency (§4.3, §4.4), secondary sources, mostly 2024.

``profile_for`` picks a profile from a pool's model name (a Hugging Face id) and GPU count.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "HOSTED_APIS",
    "PROFILES",
    "HostedApiProfile",
    "ReplicaProfile",
    "hosted_api_for",
    "profile_for",
    "profile_named",
]

_GIB = 1024**3


@dataclass(frozen=True)
class ReplicaProfile:
    """One vLLM replica of one model on one GPU type (``gpus`` of them, tensor parallel)."""

    name: str
    model: str  # Hugging Face id
    gpu: str
    gpus: int  # tensor parallel degree
    gpu_memory_gib: float  # per GPU
    weights_gib_per_gpu: float
    kv_bytes_per_token: int  # whole replica (all TP ranks together)
    overhead_gib_per_gpu: float  # activation peak, CUDA graphs, NCCL
    max_num_seqs: int
    max_num_batched_tokens: int
    step_fixed_ms: float  # t_w: reading the weights once per step
    per_token_ms: float  # c_tok: compute per token in the step
    kv_read_ms_per_ktok: float  # k_kv: reading 1000 tokens of KV cache
    overhead_ms: float  # t_ovh: scheduler and launch overhead per step
    max_model_len: int
    cold_start_seconds: float  # from asking for a replica to its first served request, node warm
    on_demand_hourly: float
    spot_hourly: float
    instance: str  # AWS instance type
    sources: str
    gpu_memory_utilization: float = 0.9
    block_size: int = 16

    @property
    def kv_gib_per_gpu(self) -> float:
        """Memory left for the KV cache on each GPU (§2.3); negative when the model does not fit."""
        usable = self.gpu_memory_utilization * self.gpu_memory_gib
        return usable - self.weights_gib_per_gpu - self.overhead_gib_per_gpu

    @property
    def kv_blocks(self) -> int:
        """KV blocks of ``block_size`` tokens the replica holds (vLLM sizes the cache in whole blocks)."""
        kv_bytes = self.kv_gib_per_gpu * self.gpus * _GIB
        if kv_bytes <= 0:
            return 0
        return math.floor(kv_bytes / (self.kv_bytes_per_token * self.block_size))

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv_blocks * self.block_size

    def step_seconds(self, decode_seqs: int, prefill_tokens: int, context_tokens: int) -> float:
        """One engine step (§1.4): decodes and prefill chunks together, ``context_tokens`` of KV read."""
        tokens = decode_seqs + prefill_tokens
        milliseconds = (max(self.step_fixed_ms, self.per_token_ms * tokens)
                        + self.kv_read_ms_per_ktok * context_tokens / 1000 + self.overhead_ms)
        return milliseconds / 1000


@dataclass(frozen=True)
class HostedApiProfile:
    """A hosted API serving the same model: its list prices and its latency, for the fallback path."""

    input_per_million: float  # $ per million input tokens
    output_per_million: float
    ttft_seconds: float
    output_tokens_per_second: float  # per request, streamed
    provider: str = ""
    sources: str = ""


# --------------------------------------------------------------------------------------------- facts

_LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
_LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"

# §2.1-§2.2 (meta-llama/llama-models sku_list.py): 8B 32 layers, 70B 80 layers, 8 KV heads, head dim 128, BF16.
_KV_BYTES_8B = 2 * 32 * 8 * 128 * 2  # 131,072 B
_KV_BYTES_70B = 2 * 80 * 8 * 128 * 2  # 327,680 B
_WEIGHTS_GIB_8B = 14.96  # §0/§2.3: 16.06 GB of BF16 weights
_WEIGHTS_GIB_70B = 141.1e9 / _GIB  # §0: 141.1 GB, split over the TP ranks below
_OVERHEAD_GIB_1GPU = 2.0  # §2.3: assumed 2 GiB on one GPU (PR #10460's 27,846 blocks imply 2.6)
_OVERHEAD_GIB_TP = 3.0  # §2.3: 3 GiB per GPU at TP
_MEM_24GB_GIB = 22888 / 1024  # §2.3: AWS catalog, A10G = L4 = 22,888 MiB
_MEM_80GB_GIB = 81920 / 1024  # §2.3: A100-80GB = H100-80GB = 81,920 MiB
_CONTEXT_LLAMA_31 = 131072  # §2.1: Llama-3.1 context
_MAX_MODEL_LEN_24GB = 8192  # §2.3: the 8B's ~26 k KV tokens on a 24 GB GPU refuse the 131 k default
_COLD_START_8B = 60.0  # §3.3: ready time with the node warm, 30-90 s; the middle
_COLD_START_70B_TP4 = 180.0  # §3.3: 2-4 min; the middle
# §2.4 (vllm arg_utils.py, PR #17885): the OpenAI server's defaults by GPU class.
_SEQS_SMALL, _BATCH_SMALL = 256, 2048  # A100, A10G, L4
_SEQS_LARGE, _BATCH_LARGE = 1024, 8192  # >= 70 GiB and not A100: H100
# §4.1 (skypilot-catalog aws vms.csv): p5.48xlarge spot over us-east-1 AZs 17.63-25.75 of 55.04 on demand.
_P5_SPOT_48XL = (17.63 + 25.75) / 2
_P5_SPOT_RATIO = _P5_SPOT_48XL / 55.04  # 0.394
_P4DE_SPOT_24XL = (8.65 + 9.97) / 2  # §4.1: p4de.24xlarge spot, us-east-1 AZ range

_PROFILE_LIST = (
    ReplicaProfile(
        name="llama-3.1-8b-l4", model=_LLAMA_8B, gpu="L4", gpus=1,
        gpu_memory_gib=_MEM_24GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_8B, kv_bytes_per_token=_KV_BYTES_8B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_1GPU, max_num_seqs=_SEQS_SMALL, max_num_batched_tokens=_BATCH_SMALL,
        # §1.4 8B L4: t_w 60 (PR #11078: 61 ms/token at bs 1), c_tok 0.2-0.3 (low confidence: the middle), k_kv 0.50,
        # t_ovh 1-2 (the middle)
        step_fixed_ms=60.0, per_token_ms=0.25, kv_read_ms_per_ktok=0.50, overhead_ms=1.5,
        max_model_len=_MAX_MODEL_LEN_24GB, cold_start_seconds=_COLD_START_8B,
        on_demand_hourly=0.8048, spot_hourly=(0.349 + 0.401) / 2,  # §4.1 g6.xlarge
        instance="g6.xlarge",
        sources="vllm-replica-model.md §1.4 (8B L4), §2.3, §2.4, §3.3, §4.1 (g6.xlarge, skypilot-catalog)",
    ),
    ReplicaProfile(
        name="llama-3.1-8b-a10g", model=_LLAMA_8B, gpu="A10G", gpus=1,
        gpu_memory_gib=_MEM_24GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_8B, kv_bytes_per_token=_KV_BYTES_8B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_1GPU, max_num_seqs=_SEQS_SMALL, max_num_batched_tokens=_BATCH_SMALL,
        # §1.4 8B A10G: t_w 34 (roofline at eta 0.8), c_tok 0.17, k_kv 0.27, t_ovh 1-2
        step_fixed_ms=34.0, per_token_ms=0.17, kv_read_ms_per_ktok=0.27, overhead_ms=1.5,
        max_model_len=_MAX_MODEL_LEN_24GB, cold_start_seconds=_COLD_START_8B,
        on_demand_hourly=1.006, spot_hourly=(0.425 + 0.451) / 2,  # §4.1 g5.xlarge
        instance="g5.xlarge",
        sources="vllm-replica-model.md §1.4 (8B A10G), §2.3, §2.4, §3.3, §4.1 (g5.xlarge, skypilot-catalog)",
    ),
    ReplicaProfile(
        name="llama-3.1-8b-a100", model=_LLAMA_8B, gpu="A100-80GB", gpus=1,
        gpu_memory_gib=_MEM_80GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_8B, kv_bytes_per_token=_KV_BYTES_8B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_1GPU, max_num_seqs=_SEQS_SMALL, max_num_batched_tokens=_BATCH_SMALL,
        # §1.4 8B A100-80: t_w 10, c_tok 0.071 (Vidur's linear-op slope), k_kv 0.09, t_ovh 1-2
        step_fixed_ms=10.0, per_token_ms=0.071, kv_read_ms_per_ktok=0.09, overhead_ms=1.5,
        max_model_len=_CONTEXT_LLAMA_31, cold_start_seconds=_COLD_START_8B,
        # §4.1: one eighth of p4de.24xlarge (8 x A100-80GB), on demand 27.447
        on_demand_hourly=27.447 / 8, spot_hourly=_P4DE_SPOT_24XL / 8,
        instance="p4de.24xlarge",
        sources="vllm-replica-model.md §1.4 (8B A100-80), §2.3, §2.4, §3.3, §4.1 (1/8 p4de.24xlarge)",
    ),
    ReplicaProfile(
        name="llama-3.1-8b-h100", model=_LLAMA_8B, gpu="H100-80GB", gpus=1,
        gpu_memory_gib=_MEM_80GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_8B, kv_bytes_per_token=_KV_BYTES_8B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_1GPU, max_num_seqs=_SEQS_LARGE, max_num_batched_tokens=_BATCH_LARGE,
        # §1.4 8B H100: t_w 6, k_kv 0.056, t_ovh 1-2. c_tok 0.037, the rate vLLM's prefill-heavy run implies (27 k
        # tok/s), not Vidur's 0.021: with 0.021 the saturated decode-heavy run gives ~10 k out tok/s, above
        # vLLM's measured 6.6-7.9 k (§1.1)
        step_fixed_ms=6.0, per_token_ms=0.037, kv_read_ms_per_ktok=0.056, overhead_ms=1.5,
        max_model_len=_CONTEXT_LLAMA_31, cold_start_seconds=_COLD_START_8B,
        # §4.1: p5.4xlarge 6.88 on demand; no spot price in the catalog, so p5.48xlarge's spot ratio
        on_demand_hourly=6.88, spot_hourly=6.88 * _P5_SPOT_RATIO,
        instance="p5.4xlarge",
        sources="vllm-replica-model.md §1.1, §1.4 (8B H100), §2.3, §2.4, §3.3, §4.1 (p5.4xlarge; spot at "
                "p5.48xlarge's us-east-1 ratio)",
    ),
    ReplicaProfile(
        name="llama-3.1-70b-a100-tp4", model=_LLAMA_70B, gpu="A100-80GB", gpus=4,
        gpu_memory_gib=_MEM_80GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_70B / 4, kv_bytes_per_token=_KV_BYTES_70B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_TP, max_num_seqs=_SEQS_SMALL, max_num_batched_tokens=_BATCH_SMALL,
        # §1.4 70B TP4 A100: t_w 40, c_tok 0.19, k_kv 0.057, overhead included in t_w
        step_fixed_ms=40.0, per_token_ms=0.19, kv_read_ms_per_ktok=0.057, overhead_ms=0.0,
        max_model_len=_CONTEXT_LLAMA_31, cold_start_seconds=_COLD_START_70B_TP4,
        on_demand_hourly=27.447 / 2, spot_hourly=_P4DE_SPOT_24XL / 2,  # §4.1: half a p4de.24xlarge
        instance="p4de.24xlarge",
        sources="vllm-replica-model.md §1.4 (70B TP4 A100), §2.3, §2.4, §3.3, §4.1 (1/2 p4de.24xlarge)",
    ),
    ReplicaProfile(
        name="llama-3.1-70b-h100-tp4", model=_LLAMA_70B, gpu="H100-80GB", gpus=4,
        gpu_memory_gib=_MEM_80GB_GIB, weights_gib_per_gpu=_WEIGHTS_GIB_70B / 4, kv_bytes_per_token=_KV_BYTES_70B,
        overhead_gib_per_gpu=_OVERHEAD_GIB_TP, max_num_seqs=_SEQS_LARGE, max_num_batched_tokens=_BATCH_LARGE,
        # §1.4 70B TP4 H100: t_w 25, c_tok 0.07-0.10 (the middle, 0.085: it also gives vLLM's measured 3.9 k
        # out tok/s decode-heavy, §1.1), k_kv 0.034, overhead included
        step_fixed_ms=25.0, per_token_ms=0.085, kv_read_ms_per_ktok=0.034, overhead_ms=0.0,
        max_model_len=_CONTEXT_LLAMA_31, cold_start_seconds=_COLD_START_70B_TP4,
        on_demand_hourly=55.04 / 2, spot_hourly=_P5_SPOT_48XL / 2,  # §4.1: half a p5.48xlarge
        instance="p5.48xlarge",
        sources="vllm-replica-model.md §1.1, §1.4 (70B TP4 H100), §2.3, §2.4, §3.3, §4.1 (1/2 p5.48xlarge)",
    ),
)

PROFILES: Mapping[str, ReplicaProfile] = MappingProxyType({profile.name: profile for profile in _PROFILE_LIST})

# The GPU a pool gets when its spec names none, by model size.
# 8B: L4 (g6.xlarge), the cheapest GPU the 8B fits on by the hour, with spot figures in §4.1.
# 70B at TP4: H100, the lower $/M output tokens at saturation of the two tabled (§4.3: $1.94 against $2.19).
_DEFAULT_GPU = {"8b": "L4", "70b": "H100-80GB"}

# §4.3 prices and §4.4 latency. Fireworks is the provider with every figure for both models, its prices the
# middle of §4.3's range (Groq and DeepInfra cheaper, Together, Bedrock dearer or equal).
HOSTED_APIS: Mapping[str, HostedApiProfile] = MappingProxyType({
    "8b": HostedApiProfile(
        input_per_million=0.20, output_per_million=0.20, ttft_seconds=0.09, output_tokens_per_second=280.0,
        provider="Fireworks",
        sources="vllm-replica-model.md §4.3 (arc53/llm-price-compass, ~Aug 2024), §4.4 (kickllm.com)",
    ),
    "70b": HostedApiProfile(
        # §4.4: Together / Fireworks 200-600 ms (the middle), ~160 tok/s at Fireworks
        input_per_million=0.90, output_per_million=0.90, ttft_seconds=0.4, output_tokens_per_second=160.0,
        provider="Fireworks",
        sources="vllm-replica-model.md §4.3 (arc53/llm-price-compass, ~Aug 2024), §4.4 (managedmodels.com, kickllm)",
    ),
})

# "8b" or "70b" as a whole word of the model id: "Llama-3.1-8B-Instruct", "llama3.1:70b".
_SIZE = re.compile(r"(?<![0-9.])(8|70)b(?![a-z0-9])")


def _model_size(model: str) -> str:
    match = _SIZE.search(model.lower())
    if match is None:
        raise ValueError(
            f"no replica profile for model {model!r}: the simulator knows Llama-3.1 8B and 70B (an '8B' or '70B' "
            f"in the model name); name one with --profile ({', '.join(PROFILES)})")
    return match.group(1) + "b"


def _gpu_key(gpu: str) -> str:
    return re.sub(r"[^a-z0-9]", "", gpu.lower()).removeprefix("nvidia").removeprefix("tesla")


def _gpu_matches(gpu: str, profile_gpu: str) -> bool:
    """Whether ``gpu`` names ``profile_gpu``: A100, nvidia-a100-80gb, NVIDIA-A100-SXM4-80GB do; A100-40GB not."""
    wanted, family = _gpu_key(gpu), _gpu_key(profile_gpu.split("-")[0])
    memory = re.search(r"(?<![a-z0-9])\d+gb", gpu.lower())
    if memory is not None and memory.group(0) not in _gpu_key(profile_gpu):
        return False
    return wanted.startswith(family)


def profile_named(name: str) -> ReplicaProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown replica profile {name!r}; known: {', '.join(PROFILES)}") from None


def profile_for(model: str, gpus: int, gpu: str | None = None) -> ReplicaProfile:
    """The profile serving ``model`` (a Hugging Face id) on ``gpus`` GPUs of type ``gpu``.

    The model is told by the "8B" / "70B" in its name (case-insensitive). ``gpu`` names a profile's GPU in
    any case and punctuation, as a node label would ("a100", "H100", "nvidia-l4", "NVIDIA-A100-SXM4-80GB"); a
    memory size in it must be the profile's. Without it, the model's default GPU (above).
    """
    size = _model_size(model)
    candidates = [p for p in _PROFILE_LIST if _model_size(p.model) == size and p.gpus == gpus]
    matches = [p for p in candidates if _gpu_matches(gpu if gpu is not None else _DEFAULT_GPU[size], p.gpu)]
    if len(matches) == 1:
        return matches[0]
    same_model = [f"{p.name} ({p.gpus} x {p.gpu})" for p in _PROFILE_LIST if _model_size(p.model) == size]
    raise ValueError(
        f"no replica profile for {model!r} on {gpus} x {gpu or _DEFAULT_GPU[size]}; for this model: "
        f"{', '.join(same_model)}; name one with --profile")


def sizing_profile(model: str, gpus: int, gpu: str | None = None) -> ReplicaProfile:
    """``profile_for``'s profile, or for sizing only one derived from the model's profile on that GPU at another
    tensor-parallel size: the weights split over ``gpus`` GPUs, their overhead, the same GPU and prices per GPU.

    Its memory figures hold (that is what sizing checks first: does it fit, how much cache is left); its
    step-time coefficients are the measured profile's, not measured at this size, so the simulator never uses
    a derived profile.
    """
    try:
        return profile_for(model, gpus, gpu)
    except ValueError:
        size = _model_size(model)
        wanted = gpu if gpu is not None else _DEFAULT_GPU[size]
        same = [p for p in _PROFILE_LIST if _model_size(p.model) == size and _gpu_matches(wanted, p.gpu)]
        if not same or gpus < 1:
            raise
        base = min(same, key=lambda p: abs(p.gpus - gpus))
        share = gpus / base.gpus
        return dataclasses.replace(
            base, name=f"{base.name.rsplit('-tp', 1)[0]}-tp{gpus} (derived)", gpus=gpus,
            weights_gib_per_gpu=base.weights_gib_per_gpu * base.gpus / gpus,
            overhead_gib_per_gpu=_OVERHEAD_GIB_1GPU if gpus == 1 else _OVERHEAD_GIB_TP,
            on_demand_hourly=base.on_demand_hourly * share, spot_hourly=base.spot_hourly * share,
            sources=f"derived from {base.name} for sizing: weights split over {gpus} GPU(s); {base.sources}")


def hosted_api_for(model: str) -> HostedApiProfile:
    """The hosted API's defaults for ``model``, told by size as in :func:`profile_for`."""
    return HOSTED_APIS[_model_size(model)]
