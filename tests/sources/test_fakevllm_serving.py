"""The fake vLLM replicas serve OpenAI completions as vLLM does, with a real queue and vLLM's graceful drain.

Driven by the real ``openai`` client; ``terminate(shutdown_timeout=S)`` is SIGTERM to ``vllm serve
--shutdown-timeout=S`` (503 for new requests while draining, the rest cut at the timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkube.fakevllm import DrainResult, FakeVLLMFleet, FakeVLLMReplica, Outcome

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
async def replica() -> AsyncIterator[FakeVLLMReplica]:
    async with FakeVLLMFleet(1, model_name=MODEL) as fleet:
        yield fleet.replicas[0]


@contextlib.asynccontextmanager
async def client_of(replica: FakeVLLMReplica) -> AsyncIterator[openai.AsyncOpenAI]:
    http = openai.DefaultAsyncHttpxClient(trust_env=False)  # loopback: never via a proxy
    async with openai.AsyncOpenAI(base_url=replica.url + "/v1", api_key="EMPTY", max_retries=0, timeout=30,
                                  http_client=http) as client:
        yield client


def gauge(replica: FakeVLLMReplica, name: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(replica.exposition().decode())}
    return sum(s.value for s in families[name].samples if s.name == name or s.name == f"{name}_total")


async def stream_text(client: openai.AsyncOpenAI, max_tokens: int) -> tuple[list[Any], str]:
    """All chunks of a streamed completion and the text; raises if the stream is cut."""
    stream = await client.completions.create(model=MODEL, prompt="Count:", max_tokens=max_tokens, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    return chunks, "".join(c.choices[0].text for c in chunks if c.choices)


async def test_completion_and_chat_completion_shapes(replica: FakeVLLMReplica) -> None:
    async with client_of(replica) as client:
        completion = await client.completions.create(model=MODEL, prompt="Say something:", max_tokens=5)
        assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
        assert completion.model == MODEL and completion.created > 0
        (choice,) = completion.choices
        assert len(choice.text.split()) == 5 and choice.finish_reason == "length" and choice.index == 0
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 5)
        assert completion.usage.total_tokens == 9

        replica.set(output_tokens=3)  # the model ends its answer before max_tokens
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=10)
        assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
        assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "stop"
        assert len((chat.choices[0].message.content or "").split()) == 3
        assert chat.usage is not None and chat.usage.completion_tokens == 3

        default = await client.completions.create(model=MODEL, prompt="x")
        assert default.usage is not None and default.usage.completion_tokens == 3  # min(16, output_tokens)

        with pytest.raises(openai.NotFoundError, match="does not exist"):
            await client.completions.create(model="gpt-4", prompt="x")
        with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
            await client.completions.create(model=MODEL, prompt="x", max_tokens=9000)
    assert replica.completions[Outcome.FINISHED] == 3
    assert replica.requests["/v1/completions"] == 4 and replica.requests["/v1/chat/completions"] == 1


async def test_streaming_as_server_sent_events(replica: FakeVLLMReplica) -> None:
    replica.set(tokens_per_second=200)
    async with client_of(replica) as client:
        chunks, text = await stream_text(client, max_tokens=4)
        assert len(text.split()) == 4
        assert {c.object for c in chunks} == {"text_completion"} and len({c.id for c in chunks}) == 1
        assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, None, None, "length"]
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 4

        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, stream=True)
        deltas = [chunk async for chunk in chat]
        assert {c.object for c in deltas} == {"chat.completion.chunk"}
        assert deltas[0].choices[0].delta.role == "assistant" and deltas[0].choices[0].delta.content == ""
        assert "".join(c.choices[0].delta.content or "" for c in deltas).split() == ["the", "model", "answers"]
        assert deltas[-1].choices[0].finish_reason == "length"

    async with aiohttp.ClientSession() as session, session.post(
            replica.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True}) as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        events = (await response.text()).split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: {") for e in events[:-2])


async def test_a_real_queue_at_most_max_num_seqs_run(replica: FakeVLLMReplica) -> None:
    replica.set(max_num_seqs=2, tokens_per_second=40, waiting=7)  # 7: an explicit value the live state adds to
    assert gauge(replica, "vllm:num_requests_waiting") == 7
    async with client_of(replica) as client:
        streams = [asyncio.create_task(stream_text(client, max_tokens=8)) for _ in range(5)]
        async with asyncio.timeout(10):
            while replica.running + replica.waiting < 5:
                await asyncio.sleep(0.01)
        assert (replica.running, replica.waiting) == (2, 3)
        assert gauge(replica, "vllm:num_requests_running") == 2
        assert gauge(replica, "vllm:num_requests_waiting") == 7 + 3
        replica.set(max_num_seqs=3)  # more room lets one more in at once
        async with asyncio.timeout(5):
            while replica.running < 3:
                await asyncio.sleep(0.01)
        results = await asyncio.gather(*streams)
    assert all(len(text.split()) == 8 for _, text in results)
    assert (replica.running, replica.waiting) == (0, 0) and gauge(replica, "vllm:num_requests_waiting") == 7
    assert gauge(replica, "vllm:generation_tokens") == 5 * 8
    assert gauge(replica, "vllm:prompt_tokens") == 5 * 2  # "Count:" is two tokens of four characters
    families = {f.name: f for f in text_string_to_metric_families(replica.exposition().decode())}
    ttft_count = next(s.value for s in families["vllm:time_to_first_token_seconds"].samples
                      if s.name.endswith("_count"))
    assert ttft_count == 5


async def test_drain_lets_in_flight_streams_finish_and_rejects_new_requests(replica: FakeVLLMReplica) -> None:
    replica.set(tokens_per_second=20, max_num_seqs=1)  # one runs (0.5 s), one waits behind it
    async with client_of(replica) as client, aiohttp.ClientSession() as session:
        streams = [asyncio.create_task(stream_text(client, max_tokens=10)) for _ in range(2)]
        async with asyncio.timeout(5):
            while replica.running + replica.waiting < 2:
                await asyncio.sleep(0.01)
        drain = asyncio.create_task(replica.terminate(shutdown_timeout=10))
        await asyncio.sleep(0.05)
        assert replica.draining and replica.serving
        with pytest.raises(openai.InternalServerError) as rejected:  # the client's class for a 503
            await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert rejected.value.response.json() == {"error": "Server is unavailable. Please try again later."}
        async with session.get(replica.url + "/metrics") as metrics, session.get(replica.url + "/health") as health:
            assert (metrics.status, health.status) == (200, 503)
        results = await asyncio.gather(*streams)  # both complete, the queued one too
        assert await drain == DrainResult(finished=2, aborted=0)
        assert all(len(text.split()) == 10 for _, text in results)
        with pytest.raises(openai.APIConnectionError):  # the socket is closed: connection refused
            await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert replica.completions == {Outcome.FINISHED: 2, Outcome.REJECTED: 1}
    assert not replica.serving and not replica.draining


async def test_drain_past_the_timeout_aborts_what_is_left(replica: FakeVLLMReplica) -> None:
    replica.set(tokens_per_second=20, max_num_seqs=2)
    async with client_of(replica) as client:
        streams = [asyncio.create_task(stream_text(client, max_tokens=100)) for _ in range(2)]  # 5 s each
        answer = asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=100))  # queued
        async with asyncio.timeout(5):
            while replica.running + replica.waiting < 3:
                await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        assert await replica.terminate(shutdown_timeout=0.3) == DrainResult(finished=0, aborted=3)
        assert asyncio.get_running_loop().time() - started < 2
        for stream in streams:
            with pytest.raises(openai.APIConnectionError):  # the stream is cut: no [DONE]
                await stream
        with pytest.raises(openai.InternalServerError) as shut:
            await answer
        assert shut.value.response.json() == {"error": "Server is shutting down."}
    assert replica.completions[Outcome.ABORTED] == 3


async def test_terminate_without_timeout_aborts_at_once_and_restart_serves_again(replica: FakeVLLMReplica) -> None:
    replica.set(tokens_per_second=10)
    async with client_of(replica) as client:
        answer = asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=50))
        async with asyncio.timeout(5):
            while replica.running < 1:
                await asyncio.sleep(0.01)
        assert await replica.terminate() == DrainResult(finished=0, aborted=1)  # vLLM's default: no drain
        with pytest.raises(openai.APIConnectionError):  # no 503 without a drain: the connection just closes
            await answer
        await replica.start()  # a new process: nothing in flight, counters from zero
        assert gauge(replica, "vllm:generation_tokens") == 0
        replica.set(tokens_per_second=500)
        again = await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert again.usage is not None and again.usage.completion_tokens == 2


async def test_fleet_remove_replica_drains() -> None:
    async with FakeVLLMFleet(2, model_name=MODEL) as fleet:
        first, second = fleet.replicas
        first.set(tokens_per_second=50)
        async with client_of(first) as client:
            stream = asyncio.create_task(stream_text(client, max_tokens=5))
            async with asyncio.timeout(5):
                while first.running < 1:
                    await asyncio.sleep(0.01)
            result = await fleet.remove_replica(first, shutdown_timeout=5)
            assert result == DrainResult(finished=1, aborted=0)
            assert len((await stream)[1].split()) == 5
        assert fleet.endpoints == (second.url,)
