"""``poolpilot size``: what one replica of a profile holds, serves and costs, before a pool is run.

Memory and KV capacity come from the profile (reference/vllm-replica-model.md §2.3). Throughput and latency
come from running the simulator's own engine (:class:`controller.sim.replica.ReplicaEngine`), not from a
second formula:

* saturated throughput: a closed loop keeps the engine full (``max_num_seqs`` plus a queue) of identical
  requests; after a warm-up of as many finishes as requests in the loop, the rate over twice as many more;
* TTFT at low load: one request on an idle engine;
* the sustainable rate: the highest Poisson arrival rate (seeded, the same unit gaps scaled for every rate, so
  a higher rate is never easier) at which p95 TTFT stays within the SLO, over 800 requests after a warm-up of
  a fifth of them; found by bisection between 0 and the saturated rate.

The cost figures are the operator's own (``controller.core.cost.pool_cost``) at the saturated load: $/M
tokens (prompt and generated, at the request's mix), the hosted API's price at the same mix, and the load
at which one replica costs what the API would. The API's price is also shown blended 3:1 input:output, as
Artificial Analysis quotes it (§4.4). Requests have fixed lengths (the trace's means, for a trace).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from controller.api.spec import CostSpec
from controller.core.cost import pool_cost
from controller.sim.profiles import HostedApiProfile, ReplicaProfile
from controller.sim.replica import ReplicaEngine
from controller.sim.request import SimRequest

__all__ = [
    "SizeReport",
    "Throughput",
    "low_load_ttft",
    "render_size",
    "saturated_throughput",
    "size_as_json",
    "size_replica",
    "sustainable_requests_per_second",
]

_FEW_SEQUENCES = 8  # below this many max_model_len sequences in the KV cache, the replica is weights-bound
_SUSTAIN_REQUESTS = 800  # requests per Poisson run of the bisection
_SUSTAIN_WARMUP = 0.2  # share of a run's first requests left out of its p95 (the engine starts empty)
_SUSTAIN_STEPS = 10  # bisection steps: the rate to 1/1024 of the saturated one
_SEED = 20240917


@dataclass(frozen=True)
class Throughput:
    requests_per_second: float
    output_tokens_per_second: float
    prompt_tokens_per_second: float


@dataclass(frozen=True)
class SizeReport:
    """One replica of a profile, sized for a request mix. Figures the replica cannot produce are None."""

    profile: str
    model: str
    gpu: str
    gpus: int
    instance: str
    max_model_len: int
    prompt_tokens: int
    output_tokens: int
    gpu_memory_gib: float  # per GPU
    usable_gib_per_gpu: float  # gpu_memory_utilization x memory
    weights_gib_per_gpu: float
    overhead_gib_per_gpu: float
    kv_gib_per_gpu: float
    kv_capacity_tokens: int
    kv_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    sequences_at_max_model_len: float  # KV tokens / max_model_len
    sequences_at_request: float  # KV tokens / (prompt + output), before the max_num_seqs cap
    saturated_requests_per_second: float | None
    saturated_output_tokens_per_second: float | None
    saturated_tokens_per_second: float | None  # prompt and output
    ttft_low_load_seconds: float | None
    spot_hourly: float
    on_demand_hourly: float
    spot_per_million_tokens: float | None  # at saturation, prompt and output tokens
    on_demand_per_million_tokens: float | None
    api_provider: str
    api_input_per_million: float
    api_output_per_million: float
    api_per_million_tokens: float | None  # at the request's mix
    api_blended_per_million: float | None  # 3:1 input:output (Artificial Analysis)
    break_even_capacity: str  # "spot" or "on-demand": whose price the break-even uses
    break_even_tokens_per_second: float | None  # below it the API is cheaper
    break_even_requests_per_second: float | None
    breaks_even: bool | None  # whether a saturated replica is cheaper than the API
    warnings: tuple[str, ...]


# ------------------------------------------------------------------------------------- engine runs


def _engine(profile: ReplicaProfile, max_model_len: int | None, max_num_seqs: int | None = None) -> ReplicaEngine:
    return ReplicaEngine(profile, max_model_len=max_model_len, max_num_seqs=max_num_seqs)


def saturated_throughput(profile: ReplicaProfile, *, prompt_tokens: int, output_tokens: int,
                         max_model_len: int | None = None, max_num_seqs: int | None = None) -> Throughput:
    """The engine's throughput kept full of identical requests (a closed loop: each finish submits one)."""
    engine = _engine(profile, max_model_len, max_num_seqs)
    in_loop = engine.max_num_seqs + max(8, engine.max_num_seqs // 8)  # always a queue: the engine never starves
    warmup, measured = in_loop, 2 * in_loop
    now = 0.0
    for number in range(in_loop):
        if not engine.submit(SimRequest(number, now, prompt_tokens, output_tokens), now):
            raise ValueError(f"a {prompt_tokens} + {output_tokens} token request exceeds max_model_len "
                             f"{engine.max_model_len}")
    submitted, finished, started_at = in_loop, 0, 0.0
    while finished < warmup + measured:
        now = engine.next_change
        engine.advance(now)
        for _ in engine.pop_finished():
            finished += 1
            if finished == warmup:
                started_at = now
            engine.submit(SimRequest(submitted, now, prompt_tokens, output_tokens), now)
            submitted += 1
    rate = measured / (now - started_at)
    return Throughput(requests_per_second=rate, output_tokens_per_second=rate * output_tokens,
                      prompt_tokens_per_second=rate * prompt_tokens)


def low_load_ttft(profile: ReplicaProfile, *, prompt_tokens: int, output_tokens: int = 1,
                  max_model_len: int | None = None) -> float:
    """Time to first token of one request on an idle engine: its prefill."""
    engine = _engine(profile, max_model_len)
    request = SimRequest(0, 0.0, prompt_tokens, output_tokens)
    if not engine.submit(request, 0.0):
        raise ValueError(f"a {prompt_tokens} + {output_tokens} token request exceeds max_model_len "
                         f"{engine.max_model_len}")
    while request.first_token_at is None:
        engine.advance(engine.next_change)
    return request.first_token_at


def _p95_ttft(profile: ReplicaProfile, rate: float, unit_gaps: list[float], lengths: Sequence[tuple[int, int]],
              max_model_len: int | None) -> float:
    engine = _engine(profile, max_model_len)
    requests: list[SimRequest] = []
    arrival = 0.0
    for number, gap in enumerate(unit_gaps):
        arrival += gap / rate
        prompt_tokens, output_tokens = lengths[number % len(lengths)]
        request = SimRequest(number, arrival, prompt_tokens, output_tokens)
        if engine.submit(request, arrival):
            requests.append(request)
    counted = requests[int(len(requests) * _SUSTAIN_WARMUP):]
    for request in counted:
        while request.first_token_at is None:
            engine.advance(engine.next_change)
    ttfts = sorted(request.first_token_at - request.arrival for request in counted
                   if request.first_token_at is not None)
    return ttfts[math.ceil(0.95 * len(ttfts)) - 1]


def sustainable_requests_per_second(profile: ReplicaProfile, *, prompt_tokens: float, output_tokens: float,
                                    ttft_slo_seconds: float, max_model_len: int | None = None,
                                    lengths: Sequence[tuple[int, int]] | None = None) -> float:
    """The highest Poisson arrival rate one replica serves with p95 TTFT within ``ttft_slo_seconds``.

    Every request is of the mean lengths, or, with ``lengths`` (a trace's (prompt, output) pairs, a sample
    of them is taken, seeded), of the trace's own mix: long prompts make the tail, so a replica holds less
    of a real mix than of its mean.

    At most the saturated rate (above it the queue grows without end, however short a run shows it). On a GPU
    with a large batch (H100: 1024 sequences) TTFT can hold up to saturation: arrivals are admitted at once and
    the time per output token grows instead. 0 when one request alone misses the SLO.
    """
    prompt, output = max(1, round(prompt_tokens)), max(1, round(output_tokens))
    if low_load_ttft(profile, prompt_tokens=prompt, output_tokens=output, max_model_len=max_model_len) > (
            ttft_slo_seconds):
        return 0.0
    saturated = saturated_throughput(profile, prompt_tokens=prompt, output_tokens=output,
                                     max_model_len=max_model_len).requests_per_second
    rng = random.Random(_SEED)
    unit_gaps = [rng.expovariate(1.0) for _ in range(_SUSTAIN_REQUESTS)]
    mix = [rng.choice(lengths) for _ in range(_SUSTAIN_REQUESTS)] if lengths else [(prompt, output)]
    low, high = 0.0, saturated
    if _p95_ttft(profile, high, unit_gaps, mix, max_model_len) <= ttft_slo_seconds:
        return high
    for _ in range(_SUSTAIN_STEPS):
        middle = (low + high) / 2
        if _p95_ttft(profile, middle, unit_gaps, mix, max_model_len) <= ttft_slo_seconds:
            low = middle
        else:
            high = middle
    return low


# ------------------------------------------------------------------------------------------ sizing


def _warnings(profile: ReplicaProfile, *, max_model_len: int, request_tokens: int, sequences_at_max: float,
              sequences_at_request: float) -> list[str]:
    warnings: list[str] = []
    usable = profile.gpu_memory_utilization * profile.gpu_memory_gib
    capacity = profile.kv_capacity_tokens
    if profile.kv_blocks <= 0:
        warnings.append(
            f"the model does not fit: {profile.weights_gib_per_gpu:.1f} GiB of weights + "
            f"{profile.overhead_gib_per_gpu:.1f} GiB overhead per GPU exceed {profile.gpu_memory_utilization:.2f} x "
            f"{profile.gpu_memory_gib:.1f} GiB = {usable:.1f} GiB; use more GPUs (tensor parallel) or larger ones")
        return warnings
    if max_model_len > capacity:
        warnings.append(
            f"vLLM refuses to start: max_model_len {max_model_len} exceeds the KV cache's {capacity} tokens; set "
            f"--max-model-len {capacity} or less (the figures below assume {capacity})")
    if sequences_at_max < _FEW_SEQUENCES:
        warnings.append(
            f"memory for weights, none for the cache: the KV cache holds {sequences_at_max:.1f} sequences of "
            f"max_model_len {max_model_len}; use a larger GPU, more of them, or a lower --max-model-len")
    if request_tokens > min(max_model_len, capacity):
        warnings.append(f"a {request_tokens} token request exceeds max_model_len: vLLM refuses it (400)")
    if "a100" in profile.gpu.lower() and sequences_at_request > profile.max_num_seqs:
        warnings.append(
            f"max_num_seqs {profile.max_num_seqs}: vLLM's API server keeps A100 at 256 / 2048 (PR #17885) though the "
            f"KV cache holds {sequences_at_request:.0f} such requests; a higher --max-num-seqs may serve more")
    return warnings


def size_replica(profile: ReplicaProfile, *, max_model_len: int, prompt_tokens: int = 1000, output_tokens: int = 250,
                 api: HostedApiProfile, on_demand: bool = False) -> SizeReport:
    """What one replica of ``profile`` holds, serves and costs for ``prompt_tokens`` + ``output_tokens``."""
    capacity = profile.kv_capacity_tokens
    request_tokens = prompt_tokens + output_tokens
    sequences_at_max = capacity / max_model_len
    sequences_at_request = capacity / request_tokens
    warnings = _warnings(profile, max_model_len=max_model_len, request_tokens=request_tokens,
                         sequences_at_max=sequences_at_max, sequences_at_request=sequences_at_request)
    engine_len = min(max_model_len, capacity)
    runs = profile.kv_blocks > 0 and request_tokens <= engine_len
    throughput = ttft = None
    if runs:
        throughput = saturated_throughput(profile, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                                          max_model_len=engine_len)
        ttft = low_load_ttft(profile, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                             max_model_len=engine_len)
    prices = CostSpec(spot_replica_hourly=profile.spot_hourly, on_demand_replica_hourly=profile.on_demand_hourly,
                      api_input_per_million_tokens=api.input_per_million,
                      api_output_per_million_tokens=api.output_per_million)
    prompt_rate = throughput.prompt_tokens_per_second if throughput else None
    output_rate = throughput.output_tokens_per_second if throughput else None
    spot = pool_cost(prices, spot_replicas=1, on_demand_replicas=0, prompt_tokens_per_second=prompt_rate,
                     generation_tokens_per_second=output_rate)
    dear = pool_cost(prices, spot_replicas=0, on_demand_replicas=1, prompt_tokens_per_second=prompt_rate,
                     generation_tokens_per_second=output_rate)
    unloaded = pool_cost(prices, spot_replicas=1, on_demand_replicas=0, prompt_tokens_per_second=None,
                         generation_tokens_per_second=None)
    assert spot is not None and dear is not None and unloaded is not None  # every price is given
    chosen = dear if on_demand else spot
    break_even = chosen.break_even_tokens_per_second if throughput else None
    saturated_tokens = throughput.prompt_tokens_per_second + throughput.output_tokens_per_second if throughput else None
    breaks_even = None
    if break_even is not None and saturated_tokens is not None:
        breaks_even = break_even <= saturated_tokens
        if not breaks_even:
            warnings.append(
                f"even saturated, one {'on-demand' if on_demand else 'spot'} replica costs more per token than the "
                f"API: {chosen.per_million_tokens} $/M tokens against {chosen.api_per_million_tokens} $/M")
    return SizeReport(
        profile=profile.name, model=profile.model, gpu=profile.gpu, gpus=profile.gpus, instance=profile.instance,
        max_model_len=max_model_len, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
        gpu_memory_gib=profile.gpu_memory_gib,
        usable_gib_per_gpu=profile.gpu_memory_utilization * profile.gpu_memory_gib,
        weights_gib_per_gpu=profile.weights_gib_per_gpu, overhead_gib_per_gpu=profile.overhead_gib_per_gpu,
        kv_gib_per_gpu=max(0.0, profile.kv_gib_per_gpu), kv_capacity_tokens=capacity, kv_blocks=profile.kv_blocks,
        max_num_seqs=profile.max_num_seqs, max_num_batched_tokens=profile.max_num_batched_tokens,
        sequences_at_max_model_len=sequences_at_max, sequences_at_request=sequences_at_request,
        saturated_requests_per_second=throughput.requests_per_second if throughput else None,
        saturated_output_tokens_per_second=output_rate, saturated_tokens_per_second=saturated_tokens,
        ttft_low_load_seconds=ttft, spot_hourly=profile.spot_hourly, on_demand_hourly=profile.on_demand_hourly,
        spot_per_million_tokens=spot.per_million_tokens, on_demand_per_million_tokens=dear.per_million_tokens,
        api_provider=api.provider, api_input_per_million=api.input_per_million,
        api_output_per_million=api.output_per_million,
        api_per_million_tokens=chosen.api_per_million_tokens if throughput else None,
        api_blended_per_million=unloaded.api_per_million_tokens,
        break_even_capacity="on-demand" if on_demand else "spot", break_even_tokens_per_second=break_even,
        break_even_requests_per_second=None if break_even is None else break_even / request_tokens,
        breaks_even=breaks_even, warnings=tuple(warnings),
    )


def _figure(value: float | None, fmt: str, unit: str) -> str:
    return "n/a" if value is None else f"{value:{fmt}} {unit}"


def render_size(report: SizeReport) -> str:
    """A table for a person: one figure a row, its unit with it."""
    r = report
    capacity = "on-demand" if r.break_even_capacity == "on-demand" else "spot"
    rows = [
        ("replica", f"{r.profile}: {r.model} on {r.gpus} x {r.gpu} ({r.instance})"),
        ("request", f"{r.prompt_tokens} prompt + {r.output_tokens} output tokens"),
        ("max_model_len", f"{r.max_model_len} tokens"),
        ("GPU memory", f"{r.gpu_memory_gib:.1f} GiB per GPU, {r.usable_gib_per_gpu:.1f} GiB usable"),
        ("weights", f"{r.weights_gib_per_gpu:.2f} GiB per GPU"),
        ("overhead", f"{r.overhead_gib_per_gpu:.1f} GiB per GPU"),
        ("KV cache", f"{r.kv_gib_per_gpu:.2f} GiB per GPU: {r.kv_capacity_tokens} tokens in {r.kv_blocks} blocks"),
        ("sequences at max_model_len", f"{r.sequences_at_max_model_len:.1f} sequences"),
        ("sequences at this request", f"{r.sequences_at_request:.1f} sequences (max_num_seqs {r.max_num_seqs})"),
        ("saturated", f"{_figure(r.saturated_requests_per_second, '.2f', 'requests/s')}, "
                      f"{_figure(r.saturated_output_tokens_per_second, '.0f', 'output tokens/s')}"),
        ("TTFT at low load", _figure(None if r.ttft_low_load_seconds is None else r.ttft_low_load_seconds * 1000,
                                     ".0f", "ms")),
        ("price", f"{r.spot_hourly:.3f} $/h spot, {r.on_demand_hourly:.3f} $/h on-demand"),
        ("cost at saturation", f"{_figure(r.spot_per_million_tokens, '.4g', '$/M tokens')} spot, "
                               f"{_figure(r.on_demand_per_million_tokens, '.4g', '$/M tokens')} on-demand"),
        (f"API ({r.api_provider or 'hosted'})",
         f"{r.api_input_per_million:.3g} $/M input, {r.api_output_per_million:.3g} $/M output tokens; "
         f"{_figure(r.api_per_million_tokens, '.4g', '$/M tokens')} at this mix, "
         f"{_figure(r.api_blended_per_million, '.4g', '$/M tokens')} blended 3:1"),
        (f"break-even ({capacity})",
         f"{_figure(r.break_even_tokens_per_second, '.0f', 'tokens/s')} = "
         f"{_figure(r.break_even_requests_per_second, '.2f', 'requests/s')}"
         + ("" if r.breaks_even is None else " (within a replica's reach)" if r.breaks_even
            else " (beyond a saturated replica)")),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines += [f"warning: {warning}" for warning in r.warnings]
    return "\n".join(lines)


def size_as_json(report: SizeReport) -> dict[str, object]:
    body = asdict(report)
    body["warnings"] = list(report.warnings)
    return body
