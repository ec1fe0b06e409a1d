"""Streams pass through as they are produced; a client that leaves cancels the upstream request; an upstream
that goes quiet is given up on."""

from __future__ import annotations

import openai
import pytest

from devkube.fakevllm import Outcome
from tests.router.world import MODEL, GatedStream, router_world
from tests.support.waiting import eventually


def test_the_first_chunk_arrives_before_the_last_is_produced() -> None:
    with router_world(mode="Off") as world:
        gated: GatedStream = world.add(GatedStream(chunks=4))
        world.view(replicas=[gated.url])
        with world.client(timeout=20) as client:
            stream = iter(client.completions.create(model=MODEL, prompt="Count:", stream=True))
            first = next(stream)  # the replica holds the rest until the test has this one: a buffering
            assert gated.produced == 1  # router would never hand it over, and the read would time out
            assert first.choices[0].text == " t0"
            world.call(gated.release())
            rest = [chunk.choices[0].text for chunk in stream]
        assert rest == [" t1", " t2", " t3"] and gated.produced == 4


def test_a_client_that_leaves_cancels_the_replicas_stream() -> None:
    with router_world(mode="Off") as world:
        world.replica.set(tokens_per_second=20)  # 200 tokens: ten seconds, unless cancelled
        with world.client() as client:
            stream = client.completions.create(model=MODEL, prompt="Count:", max_tokens=200, stream=True)
            assert next(iter(stream)).choices[0].text
            stream.close()
        outcome = eventually(lambda: dict(world.replica.completions), lambda seen: bool(seen),
                             what="the replica's stream to end")
        assert outcome == {Outcome.DISCONNECTED: 1}
        world.settled("poolpilot_router_in_flight", 0, backend="pool")
        world.settled("poolpilot_router_requests_total", 1, backend="pool", outcome="error")


def test_a_client_that_leaves_cancels_the_apis_stream() -> None:
    with router_world(mode="Full") as world:
        world.provider.set(tokens_per_second=20)
        with world.client() as client:
            stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                    max_tokens=200, stream=True)
            assert next(iter(stream)).choices
            stream.close()
        eventually(lambda: world.provider.cancelled, lambda n: n == 1, what="the provider to see the cancel")
        assert world.provider.completions[Outcome.FINISHED] == 0
        world.settled("poolpilot_router_in_flight", 0, backend="api")


def test_a_client_that_leaves_before_any_byte_cancels_the_upstream_request() -> None:
    with router_world(mode="Off") as world:
        world.replica.set(tokens_per_second=20)
        with world.client(timeout=0.5) as client, pytest.raises(openai.APITimeoutError):
            # Not streamed: nothing comes back for twenty seconds; the client gives up after half a second.
            client.completions.create(model=MODEL, prompt="Count:", max_tokens=400)
        world.settled("poolpilot_router_in_flight", 0, backend="pool")
        assert world.replica.completions[Outcome.FINISHED] == 0


def test_an_upstream_that_sends_nothing_is_a_504() -> None:
    with router_world(mode="Off", settings_changes={"upstream_idle_seconds": 0.3}) as world:
        world.replica.set(delay_seconds=60)  # accepts, then hangs
        with world.client() as client, pytest.raises(openai.APIStatusError) as timed_out:
            client.completions.create(model=MODEL, prompt="Count:", max_tokens=2)
        assert timed_out.value.status_code == 504 and timed_out.value.response.headers["retry-after"]
        assert timed_out.value.response.json()["error"]["code"] == "upstream_timeout"


def test_a_stream_that_goes_quiet_is_cut() -> None:
    with router_world(mode="Off", settings_changes={"upstream_idle_seconds": 0.3}) as world:
        world.replica.set(tokens_per_second=0.05)  # the headers at once, then twenty seconds to a token
        with world.client() as client:
            stream = client.completions.create(model=MODEL, prompt="Count:", max_tokens=2, stream=True)
            with pytest.raises(openai.APIConnectionError):  # cut without [DONE]: never a clean end
                list(stream)
        world.settled("poolpilot_router_requests_total", 1, backend="pool", outcome="error")
        world.settled("poolpilot_router_in_flight", 0, backend="pool")
