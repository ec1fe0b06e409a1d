"""CPU per replica scrape: parsing a whole vLLM ``/metrics`` body versus only the lines the signals need.

The pods source parses one body per ready replica per round on the operator's event loop.
A real vLLM body is tens of KB, mostly histograms (reference/llm-serving-control-planes.md
lists them); this builds one of about 70 KB from the fake replica's exposition (four
engines) plus vLLM's other histogram families, and times both ways in the same run::

    python -m bench.parse_cost [--iterations 200] [--kilobytes 70]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from controller.sources.metrics.pods import parse_vllm_metrics
from devkube.fakevllm import TTFT_BUCKETS, FakeVLLMReplica

# Histogram families a vLLM V1 server exposes besides TTFT (names from the reference note).
OTHER_HISTOGRAMS = ("vllm:inter_token_latency_seconds", "vllm:request_queue_time_seconds",
                    "vllm:time_per_output_token_seconds", "vllm:request_time_per_output_token_seconds",
                    "vllm:iteration_tokens_total", "vllm:e2e_request_latency_seconds")


def vllm_body(kilobytes: int, engines: int = 4) -> str:
    replica = FakeVLLMReplica("127.0.0.1", 0, name="bench")
    replica.set(waiting=7, running=12, kv=0.63, engines=engines)
    replica.observe_ttft(0.05, 0.3, 1.2, 4.0)
    parts = [replica.exposition().decode()]
    model = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'
    while sum(map(len, parts)) < kilobytes * 1024:
        for family in OTHER_HISTOGRAMS:
            lines = [f"# HELP {family} Histogram of {family[5:]}.", f"# TYPE {family} histogram"]
            for engine in range(engines):
                labels = f'engine="{engine}",{model}'
                lines += [f'{family}_bucket{{{labels},le="{bound}"}} {index * 3.0}'
                          for index, bound in enumerate(TTFT_BUCKETS)]
                lines += [f'{family}_bucket{{{labels},le="+Inf"}} 99.0', f"{family}_count{{{labels}}} 99.0",
                          f"{family}_sum{{{labels}}} 123.4"]
            parts.append("\n".join(lines) + "\n")
        model = f'model_name="lora-{len(parts)}"'  # more series, as LoRA adapters add
    return "".join(parts)


def parse_everything(text: str) -> float:
    """The baseline: every family through the parser, as the pods source did before."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:num_requests_waiting":
                total += float(sample.value)
    return total


def cpu_per_call(function: Callable[[str], object], body: str, iterations: int) -> list[float]:
    samples = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(iterations):
            function(body)
        samples.append((time.process_time() - started) / iterations)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--kilobytes", type=int, default=70)
    args = parser.parse_args(argv)
    body = vllm_body(args.kilobytes)
    assert parse_everything(body) == parse_vllm_metrics(body).waiting  # the same answer both ways
    baseline = statistics.median(cpu_per_call(parse_everything, body, args.iterations))
    filtered = statistics.median(cpu_per_call(parse_vllm_metrics, body, args.iterations))
    print(f"vLLM /metrics body: {len(body) / 1024:.0f} KB, {body.count(chr(10))} lines; "
          f"median of 5 runs of {args.iterations} parses")
    print("| parse | CPU per replica scrape | vs whole body |")
    print("|---|---|---|")
    print(f"| whole body (before) | {baseline * 1e3:.2f} ms | 1.00x |")
    print(f"| signal lines only (now) | {filtered * 1e3:.3f} ms | {filtered / baseline:.3f}x |")
    print(f"At 300 replicas every 5 s: {300 * baseline / 5 * 100:.0f}% of a core before, "
          f"{300 * filtered / 5 * 100:.1f}% now.")


if __name__ == "__main__":
    main()
