"""`poolpilot signals SOURCE [--json]`: what PoolPilot reads from one replica, for on-call engineers.

The real CLI in a subprocess, against a fake vLLM replica over HTTP, a file holding a whole vLLM
``/metrics`` body (about 70 KB: four engines and vLLM's histograms), stdin, and what is not metrics.
No real vLLM body is stored in tests/: the bodies come from the fake replica, which renders vLLM's
exact names, types, labels and buckets with prometheus_client as vLLM does (tests/sources/test_fakevllm.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.parse_cost import vllm_body
from controller.core.signals import PoolSignals
from controller.sources.metrics.base import PoolTarget
from controller.sources.metrics.pods import PodsSource
from devkube.fakevllm import Failure, FakeVLLMFleet, FakeVLLMReplica, KVMetric

__all__: list[str] = []


def signals(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "signals", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "error"})


def as_json(*args: str, stdin: str | None = None) -> dict[str, Any]:
    result = signals(*args, "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def fleet() -> Iterator[FakeVLLMFleet]:
    with FakeVLLMFleet.in_thread(1) as running:
        yield running


def body_of(**state: Any) -> str:
    replica = FakeVLLMReplica("127.0.0.1", 0, name="fixture")
    replica.set(**state)
    return replica.exposition().decode()


def test_a_replica_over_http_gives_what_the_pods_source_computes(fleet: FakeVLLMFleet) -> None:
    replica = fleet.replicas[0]
    replica.set(engines=2, waiting=[3, 4], running=[1, 5], kv=[0.2, 0.6], kv_metric=KVMetric.BOTH, kv_legacy=0.99,
                prompt_tokens=901, generation_tokens=77)
    answer = as_json(f"{replica.url}/metrics")

    async def pods_source() -> PoolSignals:
        source = PodsSource(timeout_seconds=2.0)
        try:
            result = (await source.read([PoolTarget(("llm", "p"), (replica.url,))], now=datetime.now(UTC)))["llm", "p"]
        finally:
            await source.close()
        assert isinstance(result, PoolSignals)
        return result

    seen = asyncio.run(pods_source())
    assert answer == {"queueDepth": seen.queue_depth, "runningRequests": seen.running_requests,
                      "kvCacheUtilization": seen.kv_cache_utilization,
                      "promptTokensTotal": 901.0, "generationTokensTotal": 77.0,  # totals: the source rates them
                      "ttftPercentile": 95.0, "ttftSeconds": None, "ttftRequestsTotal": 0.0}
    assert answer["queueDepth"] == 7 and answer["runningRequests"] == 6
    assert answer["kvCacheUtilization"] == pytest.approx(0.4)  # the current name, not the legacy 0.99


def test_the_text_output_names_the_metrics(fleet: FakeVLLMFleet) -> None:
    fleet.replicas[0].set(waiting=12, running=37, kv=0.83, kv_metric=KVMetric.LEGACY, prompt_tokens=5000,
                          generation_tokens=640)
    result = signals(f"{fleet.replicas[0].url}/metrics")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["queue", "depth", "12"] and "vllm:num_requests_waiting" in lines[0]
    assert lines[1].split()[:3] == ["running", "requests", "37"]
    assert "0.83" in lines[2] and "83%" in lines[2] and "vllm:gpu_cache_usage_perc" in lines[2]
    assert lines[3].split()[:3] == ["prompt", "tokens", "5000"] and "vllm:prompt_tokens_total" in lines[3]
    assert lines[4].split()[:3] == ["generation", "tokens", "640"] and "vllm:generation_tokens_total" in lines[4]


def test_a_whole_vllm_body_in_a_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "metrics.txt"
    path.write_text(vllm_body(70))  # waiting 7, running 12, KV 0.63 over four engines, and the histograms
    assert as_json(str(path)) == {"queueDepth": 7.0, "runningRequests": 12.0, "kvCacheUtilization": 0.63,
                                  "promptTokensTotal": 0.0, "generationTokensTotal": 0.0,
                                  "ttftPercentile": 95.0, "ttftSeconds": None, "ttftRequestsTotal": 4.0}  # too few


def test_stdin_and_null_for_what_the_text_lacks() -> None:
    text = body_of(waiting=2, running=1, kv_metric=KVMetric.NONE)
    assert as_json("-", stdin=text) == {"queueDepth": 2.0, "runningRequests": 1.0, "kvCacheUtilization": None,
                                        "promptTokensTotal": 0.0, "generationTokensTotal": 0.0,
                                        "ttftPercentile": 95.0, "ttftSeconds": None, "ttftRequestsTotal": 0.0}
    no_counters = 'vllm:num_requests_waiting{engine="0"} 4\n'  # a build or exporter without the token counters
    assert as_json("-", stdin=no_counters) == {"queueDepth": 4.0, "runningRequests": None, "kvCacheUtilization": None,
                                               "promptTokensTotal": None, "generationTokensTotal": None,
                                               "ttftPercentile": 95.0, "ttftSeconds": None, "ttftRequestsTotal": None}
    lines = signals("-", stdin=no_counters).stdout.splitlines()
    assert lines[3].split()[:3] == ["prompt", "tokens", "-"] and "not reported (vllm:prompt_tokens_total)" in lines[3]


def test_the_ttft_percentile_over_the_replicas_life(fleet: FakeVLLMFleet) -> None:
    replica = fleet.replicas[0]
    replica.set(engines=2)
    replica.observe_ttft(*[0.3] * 10, *[3.0] * 10)  # 20 requests: p95 is 9 of the (2.5, 5] bucket's 10
    url = f"{replica.url}/metrics"
    assert as_json(url) == {"queueDepth": 0.0, "runningRequests": 0.0, "kvCacheUtilization": 0.0,
                            "promptTokensTotal": 0.0, "generationTokensTotal": 0.0,
                            "ttftPercentile": 95.0, "ttftSeconds": 4.75, "ttftRequestsTotal": 20.0}
    assert as_json(url, "--ttft-percentile", "50")["ttftSeconds"] == 0.5  # rank 10: the (0.25, 0.5] bucket's last
    result = signals(url, "--ttft-percentile", "99.5")  # rank 19.9: 2.5 + 2.5 * 9.9/10
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[5]
    assert row.split()[:4] == ["TTFT", "p99.5", "4.97", "s"] and "vllm:time_to_first_token_seconds" in row
    assert "20 requests since the replica started" in row
    few = signals("-", stdin=body_of(waiting=1)).stdout.splitlines()[5]
    assert few.split()[:3] == ["TTFT", "p95", "-"] and "0 requests" in few and "fewer than the 10" in few
    none = signals("-", stdin='vllm:num_requests_waiting{engine="0"} 4\n').stdout.splitlines()[5]
    assert "not reported (vllm:time_to_first_token_seconds)" in none
    refused = signals(url, "--ttft-percentile", "0")
    assert refused.returncode == 2 and "not a percentile" in refused.stderr


def test_text_that_is_not_an_exposition_is_one_line_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("# HELP vllm:num_requests_waiting Waiting.\n<html>502 Bad Gateway</html>\n")
    line = one_line_error(signals(str(path)))
    assert "line 2" in line and "not the Prometheus text format" in line and "<html>502 Bad Gateway" in line
    bad_value = one_line_error(signals("-", "--json", stdin='vllm:num_requests_waiting{engine="0"} lots\n'))
    assert "line 1" in bad_value and "lots" in bad_value
    nan = one_line_error(signals("-", stdin='vllm:num_requests_waiting{engine="0"} NaN\n'))
    assert "queue depth" in nan and "nan" in nan
    other = one_line_error(signals("-", stdin="process_cpu_seconds_total 3.0\n"))
    assert "none of vLLM's load metrics" in other


def test_what_cannot_be_read_is_one_line(fleet: FakeVLLMFleet, tmp_path: pathlib.Path) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        refused = one_line_error(signals(f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"))
    assert "cannot connect" in refused
    fleet.replicas[0].set(failure=Failure.HTTP_500)
    assert "HTTP 500" in one_line_error(signals(f"{fleet.replicas[0].url}/metrics"))
    assert "No such file" in one_line_error(signals(str(tmp_path / "missing.txt")))
    fleet.replicas[0].set(failure=Failure.HANG)
    assert "no answer within 0.5 s" in one_line_error(signals(f"{fleet.replicas[0].url}/metrics", "--timeout", "0.5"))
