"""The fake vLLM replicas serve vLLM's exposition exactly: names, types, labels, buckets; and misbehave on cue."""

from __future__ import annotations

import asyncio
import math
import urllib.request

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkube.fakevllm import (
    CONTENT_TYPE,
    TTFT_BUCKETS,
    Failure,
    FakeVLLMFleet,
    FakeVLLMReplica,
    KVMetric,
    ReplicaState,
)

__all__: list[str] = []

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
# Family name (as prometheus_client's parser names it) -> type, for everything a fake serves.
VLLM_FAMILIES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_waiting_by_reason": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    # prometheus_client's classic text format exposes the _created series as gauges, as vLLM's does
    "vllm:prompt_tokens_created": "gauge",
    "vllm:generation_tokens_created": "gauge",
    "vllm:num_preemptions_created": "gauge",
    "vllm:time_to_first_token_seconds_created": "gauge",
}


def _families(replica: FakeVLLMReplica) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    text = replica.exposition().decode()
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def _replica(**state: object) -> FakeVLLMReplica:
    replica = FakeVLLMReplica("127.0.0.1", 0, name="r", model_name=MODEL)
    replica.set(**state)  # type: ignore[arg-type]
    return replica


def test_names_types_and_help_are_vllms() -> None:
    families = _families(_replica(waiting=12, running=37, kv=0.5))
    assert {name: kind for name, (kind, _) in families.items()} == VLLM_FAMILIES
    text = _replica().exposition().decode()
    assert "# HELP vllm:num_requests_waiting Number of requests waiting to be processed." in text
    assert "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage." in text
    assert "# TYPE vllm:prompt_tokens_total counter" in text


def test_labels_are_engine_and_model_name_and_nothing_else() -> None:
    for name, (_, samples) in _families(_replica(engines=2)).items():
        for sample_name, labels, _ in samples:
            extra = {"reason"} if name.endswith("_by_reason") else {"le"} if sample_name.endswith("_bucket") else set()
            assert set(labels) == {"engine", "model_name", *extra}, sample_name
            assert labels["model_name"] == MODEL
            assert labels["engine"] in {"0", "1"}


def test_values_are_split_over_engines_and_sum_back() -> None:
    families = _families(_replica(waiting=13, running=5, kv=0.83, deferred=3, engines=2))
    waiting = {s[1]["engine"]: s[2] for s in families["vllm:num_requests_waiting"][1]}
    assert waiting == {"0": 7.0, "1": 6.0}
    assert sum(s[2] for s in families["vllm:num_requests_running"][1]) == 5.0
    assert [s[2] for s in families["vllm:kv_cache_usage_perc"][1]] == [0.83, 0.83]
    by_reason = families["vllm:num_requests_waiting_by_reason"][1]
    assert sum(s[2] for s in by_reason) == 13.0  # "Sum of all reasons equals vllm:num_requests_waiting"
    assert sum(s[2] for s in by_reason if s[1]["reason"] == "deferred") == 3.0


def test_per_engine_values_and_their_validation() -> None:
    families = _families(_replica(engines=3, waiting=[1, 0, 4], kv=[0.1, 0.2, 0.9]))
    assert [s[2] for s in families["vllm:num_requests_waiting"][1]] == [1.0, 0.0, 4.0]
    with pytest.raises(ValueError, match="per-engine"):
        _replica(engines=2, waiting=[1, 2, 3])
    with pytest.raises(ValueError):
        ReplicaState(engines=0)


@pytest.mark.parametrize(("kv_metric", "names"), [
    (KVMetric.CURRENT, {"vllm:kv_cache_usage_perc"}),
    (KVMetric.LEGACY, {"vllm:gpu_cache_usage_perc"}),
    (KVMetric.BOTH, {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}),
    (KVMetric.NONE, set()),
])
def test_kv_metric_names(kv_metric: KVMetric, names: set[str]) -> None:
    families = _families(_replica(kv=0.4, kv_metric=kv_metric, kv_legacy=0.7))
    assert {name for name in families if "cache_usage" in name} == names
    if kv_metric is KVMetric.BOTH:
        assert families["vllm:gpu_cache_usage_perc"][1][0][2] == 0.7


def test_ttft_histogram_has_vllms_buckets() -> None:
    replica = _replica(engines=1)
    replica.observe_ttft(0.003, 0.3, 0.3, 3000.0)
    _, samples = _families(replica)["vllm:time_to_first_token_seconds"]
    buckets = [(s[1]["le"], s[2]) for s in samples if s[0].endswith("_bucket")]
    assert [float(le) for le, _ in buckets] == [*TTFT_BUCKETS, math.inf]
    counts = dict(buckets)
    assert (counts["0.001"], counts["0.005"], counts["0.25"], counts["0.5"], counts["2560.0"], counts["+Inf"]) == (
        0.0, 1.0, 1.0, 3.0, 3.0, 4.0)
    assert {s[0]: s[2] for s in samples if not s[0].endswith("_bucket")} == {
        "vllm:time_to_first_token_seconds_count": 4.0, "vllm:time_to_first_token_seconds_sum": 3000.603}


def test_nan_is_served_as_nan() -> None:
    families = _families(_replica(waiting=math.nan))
    assert all(math.isnan(s[2]) for s in families["vllm:num_requests_waiting"][1])


async def test_http_endpoints_and_failure_modes() -> None:
    async with FakeVLLMFleet(1, model_name=MODEL) as fleet, aiohttp.ClientSession() as session:
        replica = fleet.replicas[0]
        async with session.get(replica.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE
            assert "vllm:num_requests_waiting{" in await response.text()
        async with session.get(replica.url + "/v1/models") as response:
            assert (await response.json())["data"][0]["id"] == MODEL
        async with session.get(replica.url + "/health") as response:
            assert response.status == 200
        replica.set(healthy=False)
        async with session.get(replica.url + "/health") as response:
            assert response.status == 503
        replica.set(failure=Failure.HTTP_500)
        async with session.get(replica.url + "/metrics") as response:
            assert response.status == 500
        replica.set(failure=Failure.GARBAGE)
        async with session.get(replica.url + "/metrics") as response:
            with pytest.raises(ValueError):
                list(text_string_to_metric_families(await response.text()))
        replica.set(failure=Failure.HANG)
        with pytest.raises(TimeoutError):
            async with session.get(replica.url + "/metrics", timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
        replica.set(failure=Failure.NONE, delay_seconds=0.3)
        started = asyncio.get_running_loop().time()
        async with session.get(replica.url + "/metrics") as response:
            assert response.status == 200
        assert asyncio.get_running_loop().time() - started >= 0.3
        assert replica.requests["/metrics"] == 5


async def test_fleet_addresses_and_lifecycle() -> None:
    async with FakeVLLMFleet(3) as fleet:
        hosts = {replica.host for replica in fleet.replicas}
        ports = {replica.port for replica in fleet.replicas}
        if fleet.address_mode == "loopback-aliases":
            assert hosts == {"127.0.0.2", "127.0.0.3", "127.0.0.4"} and ports == {fleet.port}
        else:
            assert hosts == {"127.0.0.1"} and len(ports) == 3
        added = await fleet.add_replica(waiting=4)
        assert added.url not in fleet.endpoints[:3] and len(fleet.endpoints) == 4
        await fleet.replicas[0].stop()
        assert len(fleet.endpoints) == 3
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(fleet.replicas[0].url + "/metrics")
            await fleet.replicas[0].start()  # a restart on the same address
            async with session.get(fleet.replicas[0].url + "/health") as response:
                assert response.status == 200
        await fleet.remove_replica(added)
        assert len(fleet.replicas) == 3


def test_fleet_in_a_thread_for_sync_code() -> None:
    with FakeVLLMFleet.in_thread(2) as fleet:
        fleet.replicas[1].set(waiting=9)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        with opener.open(fleet.replicas[1].url + "/metrics", timeout=5) as response:
            assert 'vllm:num_requests_waiting{engine="0"' in response.read().decode()
        fleet.call(fleet.replicas[1].stop())
        assert fleet.endpoints == (fleet.replicas[0].url,)
        replica = fleet.call(fleet.add_replica())
        assert replica.serving
