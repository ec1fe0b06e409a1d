"""Pool or API, per mode: the real ``openai`` client through the router to fake vLLM replicas and the fake
provider, streaming and not."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import openai
import pytest

from controller.router.picking import budget_per_replica
from devkube.fakeprovider import FakeProvider
from devkube.fakevllm import Outcome
from tests.router.world import API_KEY, MODEL, PROVIDER_MODEL, RouterWorld, router_world
from tests.support.waiting import eventually


def complete(world: RouterWorld, *, stream: bool, chat: bool = False, max_tokens: int = 3) -> tuple[str, str, Any]:
    """One request; the backend that answered (the router's header), the text, and the usage."""
    with world.client() as client:
        return _complete(client, stream=stream, chat=chat, max_tokens=max_tokens)


def _complete(client: openai.OpenAI, *, stream: bool, chat: bool, max_tokens: int) -> tuple[str, str, Any]:
    if chat:
        raw: Any = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=max_tokens, stream=stream,
            stream_options={"include_usage": True} if stream else None)
    else:
        raw = client.completions.with_raw_response.create(
            model=MODEL, prompt="Count:", max_tokens=max_tokens, stream=stream,
            stream_options={"include_usage": True} if stream else None)
    backend = raw.headers["x-poolpilot-backend"]
    answer = raw.parse()
    if not stream:
        choice = answer.choices[0]
        return backend, (choice.message.content if chat else choice.text), answer.usage
    chunks = list(answer)
    text = "".join((c.choices[0].delta.content or "") if chat else c.choices[0].text for c in chunks if c.choices)
    return backend, text, chunks[-1].usage


def rejecting_replica(world: RouterWorld, status: int) -> FakeProvider:
    """A replica behind a rate limiter (429) or shedding load (503): an OpenAI-compatible server that refuses."""
    replica: FakeProvider = world.add(FakeProvider(api_key=None, model_name=MODEL))
    replica.fail_with(status)
    world.view(replicas=[replica.url])
    return replica


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chat", [False, True])
def test_the_pool_serves_while_it_can(stream: bool, chat: bool) -> None:
    with router_world() as world:
        backend, text, usage = complete(world, stream=stream, chat=chat, max_tokens=4)
        assert backend == "pool" and len(text.split()) == 4
        assert usage.completion_tokens == 4
        eventually(lambda: world.replica.completions[Outcome.FINISHED], lambda n: n == 1, what="the replica to finish")
        assert world.provider.received == []
        world.settled("poolpilot_router_requests_total", 1, backend="pool", outcome="ok")
        world.settled("poolpilot_router_generation_tokens_total", 4, backend="pool")
        world.settled("poolpilot_router_prompt_tokens_total", usage.prompt_tokens, backend="pool")
        world.settled("poolpilot_router_time_to_first_byte_seconds_count", 1, backend="pool")
        world.settled("poolpilot_router_in_flight", 0, backend="pool")


def test_equal_replicas_share_the_requests() -> None:
    with router_world(replicas=3) as world:
        for _ in range(6):
            assert complete(world, stream=False)[0] == "pool"
        assert [r.completions[Outcome.FINISHED] for r in world.fleet.replicas] == [2, 2, 2]


def test_models_is_the_served_model_in_every_mode() -> None:
    with router_world() as world:
        for mode in ("Off", "Overflow", "Full"):
            world.view(mode=mode)
            with world.client() as client:
                assert [m.id for m in client.models.list()] == [MODEL]
        assert world.replica.requests["/v1/models"] == 0 and world.provider.received == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [429, 503])
def test_overflow_spills_what_the_pool_refuses(status: int, stream: bool) -> None:
    with router_world() as world:
        replica = rejecting_replica(world, status)
        backend, text, usage = complete(world, stream=stream)
        assert backend == "api" and len(text.split()) == 3
        assert len(replica.received) == 1 and len(world.provider.received) == 1
        world.settled("poolpilot_router_spills_total", 1, reason=f"status_{status}")
        world.settled("poolpilot_router_requests_total", 1, backend="pool", outcome="error")
        world.settled("poolpilot_router_requests_total", 1, backend="api", outcome="ok")
        world.settled("poolpilot_router_generation_tokens_total", usage.completion_tokens, backend="api")


@pytest.mark.parametrize("stream", [False, True])
def test_overflow_spills_when_the_replica_refuses_the_connection(stream: bool) -> None:
    with router_world() as world:
        world.call(world.replica.stop())  # still in the view: discovery has not seen it go
        backend, _text, _usage = complete(world, stream=stream)
        assert backend == "api" and world.metric("poolpilot_router_spills_total", reason="refused") == 1


def test_overflow_spills_past_the_in_flight_budget() -> None:
    with router_world(settings_changes={"max_in_flight_per_replica": 1}) as world:
        world.replica.set(tokens_per_second=5)  # the first request stays in flight
        with world.client() as client:
            held = client.completions.create(model=MODEL, prompt="Count:", max_tokens=50, stream=True)
            first = next(iter(held))  # on its way: one in flight on the one replica
            assert first.choices[0].text
            assert complete(world, stream=False)[0] == "api"
            world.settled("poolpilot_router_spills_total", 1, reason="budget")
            held.close()
        world.settled("poolpilot_router_in_flight", 0, backend="pool")  # the held stream ended
        world.replica.set(tokens_per_second=2000)
        assert complete(world, stream=False)[0] == "pool"  # under the budget again


def test_overflow_with_no_replica_sends_everything_to_the_api() -> None:
    with router_world(replicas=0) as world:
        assert complete(world, stream=True)[0] == "api"
        world.settled("poolpilot_router_spills_total", 1, reason="no_replicas")


@pytest.mark.parametrize("stream", [False, True])
def test_full_sends_everything_to_the_api(stream: bool) -> None:
    with router_world(mode="Full") as world:
        for _ in range(3):
            assert complete(world, stream=stream, chat=True)[0] == "api"
        assert sum(world.replica.requests.values()) == 0
        world.settled("poolpilot_router_spills_total", 3, reason="full")
        assert [r.model for r in world.provider.received] == [PROVIDER_MODEL] * 3


def test_off_never_touches_the_api() -> None:
    with router_world(mode="Off", settings_changes={"max_in_flight_per_replica": 1}) as world:
        world.replica.set(tokens_per_second=5)
        with world.client() as client:
            held = client.completions.create(model=MODEL, prompt="Count:", max_tokens=50, stream=True)
            next(iter(held))
            assert complete(world, stream=False)[0] == "pool"  # over the budget: Off waits in the pool's queue
            held.close()

        replica = rejecting_replica(world, 503)
        with pytest.raises(openai.APIStatusError) as refused:
            complete(world, stream=False)
        assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"]
        assert len(replica.received) == 1  # the pool's own answer

        world.call(replica.stop())
        with pytest.raises(openai.APIStatusError) as unreachable:
            complete(world, stream=True)
        assert unreachable.value.status_code == 503 and unreachable.value.response.headers["retry-after"] == "1"

        world.view(replicas=[])
        with pytest.raises(openai.APIStatusError) as empty:
            complete(world, stream=False)
        assert empty.value.status_code == 503
        assert world.provider.received == []
        world.settled("poolpilot_router_rejected_total", 2, reason="unavailable")
        assert sum(world.metric("poolpilot_router_spills_total", reason=r) for r in
                   ("status_429", "status_503", "refused", "budget", "full", "no_replicas")) == 0


def test_without_a_provider_every_mode_is_off() -> None:
    with router_world(mode="Full", with_provider=False) as world:
        assert complete(world, stream=False)[0] == "pool"
        world.view(mode="Overflow", replicas=[])
        with pytest.raises(openai.APIStatusError) as empty:
            complete(world, stream=False)
        assert empty.value.status_code == 503 and world.provider.received == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_api_gets_its_model_name_and_the_key_and_the_pool_the_bytes_as_sent(stream: bool) -> None:
    with router_world() as world:
        replica = rejecting_replica(world, 503)
        sent = b'{"model":  "%s", "prompt": "Count:",\n "max_tokens": 2, "stream": %s}' % (
            MODEL.encode(), b"true" if stream else b"false")
        answer = world.raw("POST", "/v1/completions", sent, headers={"Authorization": "Bearer client-secret"})
        assert answer.status == 200 and answer.headers["X-PoolPilot-Backend"] == "api"
        (at_pool,) = replica.received
        assert at_pool.body == sent and at_pool.headers["Authorization"] == "Bearer client-secret"
        (at_api,) = world.provider.received
        assert at_api.path == "/v1/completions" and at_api.model == PROVIDER_MODEL
        assert at_api.headers["Authorization"] == f"Bearer {API_KEY}"  # the client's credential never leaves
        assert {k: v for k, v in json.loads(at_api.body).items() if k != "model"} == {
            "prompt": "Count:", "max_tokens": 2, "stream": stream}


def test_both_sides_down_is_a_503_with_retry_after() -> None:
    with router_world() as world:
        world.call(world.replica.stop())
        world.call(world.provider.stop())
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as failed:
                complete(world, stream=stream)
            assert failed.value.status_code == 503 and failed.value.response.headers["retry-after"] == "1"
            assert failed.value.response.json()["error"]["code"] == "service_unavailable"
        world.settled("poolpilot_router_rejected_total", 2, reason="unavailable")


def test_the_api_refusing_too_gives_its_answer_with_retry_after() -> None:
    with router_world() as world:
        rejecting_replica(world, 503)
        world.provider.fail_with(429)
        with pytest.raises(openai.RateLimitError) as limited:
            complete(world, stream=True)
        assert limited.value.response.headers["retry-after"] == "1"
        assert limited.value.response.headers["x-poolpilot-backend"] == "api"
        world.settled("poolpilot_router_requests_total", 1, backend="api", outcome="error")


def test_overflow_spills_past_the_budget_the_pool_status_reports() -> None:
    # --max-num-seqs would allow 32, but the pool's status says one replica takes 2 (its KV cache), over 2 routers.
    with router_world(settings_changes={"max_in_flight_per_replica": 32, "routers": 2}) as world:
        world.call(world.holder.replace(dataclasses.replace(world.holder.view, in_flight_per_replica=2)))
        world.replica.set(tokens_per_second=5)  # the first request stays in flight
        with world.client() as client:
            held = client.completions.create(model=MODEL, prompt="Count:", max_tokens=50, stream=True)
            assert next(iter(held)).choices[0].text  # one in flight: this router's share of 2 is taken
            assert complete(world, stream=False)[0] == "api"
            world.settled("poolpilot_router_spills_total", 1, reason="budget")
            held.close()


def test_the_budget_is_the_configured_one_until_the_status_reports_less() -> None:
    assert budget_per_replica(132, None, routers=2) == 132
    assert budget_per_replica(132, 208, routers=2) == 104
    assert budget_per_replica(132, 400, routers=2) == 132  # never above what vLLM would batch plus the queue
    assert budget_per_replica(132, 1, routers=2) == 1
