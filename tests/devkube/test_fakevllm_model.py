"""The fake vLLM replicas driven by the simulator's replica model (``ReplicaState.profile``).

With a profile, ``controller.sim.replica.ReplicaEngine`` decides when a request's first token comes and when it
ends, so load behaves as on vLLM: prefill takes the profile's time, a queue forms when a replica is full, the
KV cache fills with long prompts (and preempts), and the same request rate over more replicas queues less.
Driven by the real ``openai`` client and aiohttp; ``time_scale`` runs the engine faster than the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.sim.profiles import ReplicaProfile, profile_named
from devkube.fakevllm import DrainResult, FakeVLLMFleet, FakeVLLMReplica, Outcome, ReplicaState

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
L4 = profile_named("llama-3.1-8b-l4")


@contextlib.asynccontextmanager
async def client_of(replica: FakeVLLMReplica) -> AsyncIterator[openai.AsyncOpenAI]:
    http = openai.DefaultAsyncHttpxClient(trust_env=False)  # loopback: never via a proxy
    async with openai.AsyncOpenAI(base_url=replica.url + "/v1", api_key="EMPTY", max_retries=0, timeout=30,
                                  http_client=http) as client:
        yield client


def metric(replica: FakeVLLMReplica, name: str, suffix: str = "") -> float:
    """A family's value on /metrics (summed over engines), as served."""
    families = {f.name: f for f in text_string_to_metric_families(replica.exposition().decode())}
    wanted = {name + suffix} if suffix else {name, f"{name}_total"}
    return sum(s.value for s in families[name].samples if s.name in wanted)


def mean_ttft(replicas: list[FakeVLLMReplica]) -> float:
    total = sum(metric(r, "vllm:time_to_first_token_seconds", "_sum") for r in replicas)
    count = sum(metric(r, "vllm:time_to_first_token_seconds", "_count") for r in replicas)
    return total / count


@contextlib.asynccontextmanager
async def peak_of(read: Callable[[], float]) -> AsyncIterator[list[float]]:
    """Sample ``read`` every 5 ms while the block runs; the list holds the peak."""
    peak = [read()]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], read())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        peak[0] = max(peak[0], read())


async def complete(session: aiohttp.ClientSession, replica: FakeVLLMReplica, prompt_tokens: int,
                   max_tokens: int) -> int:
    """One non-streamed completion of a prompt of ``prompt_tokens`` token ids; its completion tokens."""
    body = {"model": MODEL, "prompt": list(range(prompt_tokens)), "max_tokens": max_tokens}
    async with session.post(replica.url + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        usage = (await response.json())["usage"]
        assert usage["prompt_tokens"] == prompt_tokens
        return int(usage["completion_tokens"])


async def test_first_token_after_the_prefill_and_the_rest_over_the_decode() -> None:
    prompt, output, scale = 1500, 12, 2.0
    prefill = L4.step_seconds(0, prompt, prompt)  # one step: 1500 tokens fit the 2048-token budget
    # each decode step reads the KV the sequence holds after it: the prompt and the tokens generated so far
    decode = sum(L4.step_seconds(1, 0, prompt + j) for j in range(1, output))
    async with FakeVLLMFleet(1, model_name=MODEL, state=ReplicaState(profile=L4, time_scale=scale)) as fleet:
        replica = fleet.replicas[0]
        loop = asyncio.get_running_loop()
        async with client_of(replica) as client:
            sent = loop.time()
            stream = await client.completions.create(model=MODEL, prompt=list(range(prompt)), max_tokens=output,
                                                     stream=True)
            arrivals, texts = [], []
            async for chunk in stream:
                arrivals.append(loop.time() - sent)
                texts.append(chunk.choices[0].text)
        assert len(arrivals) == output and len("".join(texts).split()) == output
        # the engine's TTFT is the prefill step exactly; the client sees it plus the HTTP round trip
        assert metric(replica, "vllm:time_to_first_token_seconds", "_sum") == pytest.approx(prefill / scale)
        assert prefill / scale <= arrivals[0] <= prefill / scale + 0.15
        span = arrivals[-1] - arrivals[0]
        assert decode / scale - 0.05 <= span <= decode / scale + 0.15
        middle = arrivals[output // 2] - arrivals[0]  # evenly over the decode, not all at the end
        assert 0.3 * span <= middle <= 0.7 * span
        assert metric(replica, "vllm:prompt_tokens") == prompt
        assert metric(replica, "vllm:generation_tokens") == output
        assert (replica.running, replica.waiting, metric(replica, "vllm:kv_cache_usage_perc")) == (0, 0, 0.0)

        async with client_of(replica) as client:  # not streamed: the whole answer when the engine finishes
            sent = loop.time()
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x" * 4000}], max_tokens=output)
            took = loop.time() - sent
        assert answer.usage is not None and answer.usage.completion_tokens == output
        assert answer.choices[0].finish_reason == "length"
        assert took >= (L4.step_seconds(0, 1000, 1000) + decode * 0.95) / scale
    assert replica.completions == {Outcome.FINISHED: 2}


async def open_loop(replicas: list[FakeVLLMReplica], *, rate: float, count: int) -> tuple[list[float], float]:
    """``count`` requests at ``rate`` a second (wall), whatever the answers, round-robin over ``replicas``;
    the peak of each replica's ``vllm:num_requests_waiting`` and the mean TTFT over them all."""
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        peaks = [await stack.enter_async_context(peak_of(functools.partial(metric, r, "vllm:num_requests_waiting")))
                 for r in replicas]
        session = await stack.enter_async_context(aiohttp.ClientSession())
        start = loop.time()

        async def send(index: int) -> int:
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            return await complete(session, replicas[index % len(replicas)], 100, 20)

        answered = await asyncio.gather(*(send(i) for i in range(count)))
    assert answered == [20] * count
    return [peak[0] for peak in peaks], mean_ttft(replicas)


async def test_the_same_rate_over_more_replicas_queues_less() -> None:
    # At most 4 sequences a replica, each ~1.3 s of engine time (a 100-token prefill and 19 decode steps of
    # ~62 ms): ~3 requests/s a replica. 5 requests/s (engine time) overload one replica, not three.
    small = dataclasses.replace(L4, name="llama-3.1-8b-l4-4seqs", max_num_seqs=4)
    scale = 5.0
    state = ReplicaState(profile=small, time_scale=scale)
    rate, count = 5.0 * scale, 30
    async with FakeVLLMFleet(1, model_name=MODEL, state=state) as fleet:
        one_peaks, one_ttft = await open_loop(fleet.replicas, rate=rate, count=count)
    async with FakeVLLMFleet(3, model_name=MODEL) as fleet:
        fleet.set_all(profile=small, time_scale=scale)  # on a running fleet, as the demo would
        three_peaks, three_ttft = await open_loop(fleet.replicas, rate=rate, count=count)
    assert one_peaks[0] >= 5
    assert one_peaks[0] >= 2 * max(three_peaks)
    assert one_ttft >= 2 * three_ttft


async def test_kv_usage_rises_with_concurrent_long_prompts_and_a_preempted_run_answers_all() -> None:
    async with FakeVLLMFleet(1, model_name=MODEL, state=ReplicaState(profile=L4, time_scale=40)) as fleet:
        replica = fleet.replicas[0]

        def kv() -> float:
            return metric(replica, "vllm:kv_cache_usage_perc")

        async with aiohttp.ClientSession() as session:
            async with peak_of(kv) as alone:
                assert await complete(session, replica, 3000, 100) == 100
            async with peak_of(kv) as together:
                answered = await asyncio.gather(*(complete(session, replica, 3000, 100) for _ in range(4)))
            assert answered == [100] * 4
            blocks = -(-3100 // L4.block_size)  # a request holds at most its prompt and output in KV blocks
            assert 0.5 * blocks / L4.kv_blocks <= alone[0] <= blocks / L4.kv_blocks
            assert together[0] >= 3.5 * alone[0]
            assert metric(replica, "vllm:num_preemptions") == 0

            # 8 x 4000 tokens do not fit the L4's ~25.9 k KV tokens: the engine preempts and recomputes
            async with peak_of(kv) as full:
                answered = await asyncio.gather(*(complete(session, replica, 3500, 500) for _ in range(8)))
        assert answered == [500] * 8
        assert full[0] > 0.95
        assert metric(replica, "vllm:num_preemptions") >= 1
        assert metric(replica, "vllm:generation_tokens") == 100 + 4 * 100 + 8 * 500  # a recompute counts once
        assert metric(replica, "vllm:prompt_tokens") == 3000 * 5 + 3500 * 8
        assert metric(replica, "vllm:time_to_first_token_seconds", "_count") == 13
        assert kv() == 0.0 and replica.running == replica.waiting == 0
    assert replica.completions == {Outcome.FINISHED: 13}


async def test_context_length_is_the_profiles_and_the_output_length_as_without_a_model() -> None:
    async with FakeVLLMFleet(1, model_name=MODEL) as fleet, aiohttp.ClientSession() as session:
        replica = fleet.replicas[0]
        replica.set(profile="llama-3.1-8b-a100", time_scale=50)  # by name; 131,072 tokens of context
        async with session.get(replica.url + "/v1/models") as response:
            assert (await response.json())["data"][0]["max_model_len"] == 131072
        async with client_of(replica) as client:
            long = await client.completions.create(model=MODEL, prompt=list(range(9000)), max_tokens=2)
            assert long.usage is not None and long.usage.completion_tokens == 2  # past 8192: the A100 serves it
            with pytest.raises(openai.BadRequestError, match="maximum context length is 131072"):
                await client.completions.create(model=MODEL, prompt=list(range(9000)), max_tokens=130000)
            replica.set(output_tokens=3)  # the model ends its answer before max_tokens, as without a profile
            short = await client.completions.create(model=MODEL, prompt="x", max_tokens=10, stream=True)
            chunks = [chunk async for chunk in short]
            assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]
            first_engine = replica.engine
            replica.set(profile=L4)  # the engine is empty: the next request gets one with the new profile
            with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
                await client.completions.create(model=MODEL, prompt=list(range(9000)), max_tokens=2)
        assert replica.engine is not first_engine and replica.engine is not None
        assert replica.engine.profile is L4
        assert metric(replica, "vllm:prompt_tokens") == 9000 + 1  # the old engine's counts carry over
        assert metric(replica, "vllm:generation_tokens") == 2 + 3


def test_state_checks_the_profile_and_the_time_scale() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        ReplicaState(profile=L4, time_scale=0)
    with pytest.raises(ValueError, match="unknown replica profile"):
        FakeVLLMReplica("127.0.0.1", 0, name="r").set(profile="llama-9b-tpu")
    too_long: ReplicaProfile = dataclasses.replace(L4, max_model_len=131072)  # more than the L4's KV cache
    with pytest.raises(ValueError, match="refuses to start"):
        ReplicaState(profile=too_long)


async def stream_all(client: openai.AsyncOpenAI, max_tokens: int) -> int:
    stream = await client.completions.create(model=MODEL, prompt="x", max_tokens=max_tokens, stream=True)
    return len([chunk async for chunk in stream])


async def test_drain_finishes_what_is_in_the_engine_then_aborts_the_rest() -> None:
    async with FakeVLLMFleet(1, model_name=MODEL, state=ReplicaState(profile=L4, time_scale=10)) as fleet:
        replica = fleet.replicas[0]
        async with client_of(replica) as client:
            answers = [asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=20))
                       for _ in range(2)]  # ~1.3 s of engine time each: 0.13 s
            async with asyncio.timeout(5):
                while replica.running + replica.waiting < 2:
                    await asyncio.sleep(0.005)
            drain = asyncio.create_task(replica.terminate(shutdown_timeout=10))
            await asyncio.sleep(0.02)
            with pytest.raises(openai.InternalServerError):  # draining: 503 for new requests
                await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
            assert await drain == DrainResult(finished=2, aborted=0)
            usages = [answer.result().usage for answer in answers]
            assert [u.completion_tokens if u is not None else None for u in usages] == [20, 20]

            await replica.start()  # a new process: a new engine
            streams = [asyncio.create_task(stream_all(client, 2000)) for _ in range(2)]  # ~13 s each
            answer = asyncio.create_task(client.completions.create(model=MODEL, prompt="x", max_tokens=2000))
            async with asyncio.timeout(5):
                while replica.running < 3:
                    await asyncio.sleep(0.005)
            assert await replica.terminate(shutdown_timeout=0.2) == DrainResult(finished=0, aborted=3)
            assert replica.engine is not None and replica.engine.outstanding == 0  # engine.abort dropped them
            for stream in streams:
                with pytest.raises(openai.APIConnectionError):  # the stream is cut: no [DONE]
                    await stream
            with pytest.raises(openai.InternalServerError) as shut:
                await answer
            assert shut.value.response.json() == {"error": "Server is shutting down."}
    assert replica.completions[Outcome.ABORTED] == 3


async def test_a_client_that_goes_away_leaves_its_request_to_run_out_in_the_engine() -> None:
    async with FakeVLLMFleet(1, model_name=MODEL, state=ReplicaState(profile=L4, time_scale=10)) as fleet:
        replica = fleet.replicas[0]
        body = {"model": MODEL, "prompt": "x", "max_tokens": 200, "stream": True}  # ~1.2 s in the wall
        async with aiohttp.ClientSession() as session, session.post(replica.url + "/v1/completions",
                                                                    json=body) as response:
            assert (await response.content.readline()).startswith(b"data: {")  # the first token, then leave
        async with asyncio.timeout(10):
            while replica.completions[Outcome.DISCONNECTED] < 1:
                await asyncio.sleep(0.01)
        assert replica.engine is not None and replica.engine.outstanding == 1  # vLLM would abort it; the fake not
        async with client_of(replica) as client:  # the replica serves on beside it
            answer = await client.completions.create(model=MODEL, prompt="x", max_tokens=3)
            assert answer.usage is not None and answer.usage.completion_tokens == 3
        async with asyncio.timeout(10):
            while replica.engine.outstanding:  # the engine's driver runs it out
                await asyncio.sleep(0.02)
        assert metric(replica, "vllm:generation_tokens") == 200 + 3
    assert replica.completions == {Outcome.DISCONNECTED: 1, Outcome.FINISHED: 1}
