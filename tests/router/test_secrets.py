"""The API key reaches the provider and nowhere else: not the logs, not any answer's body or headers, not
/metrics; not even when the provider quotes it back in an error."""

from __future__ import annotations

import json
import logging

import openai
import pytest

from devkube.fakeprovider import FakeProvider
from tests.router.world import API_KEY, MODEL, Raw, RouterWorld, router_world


def everything_said(answers: list[Raw]) -> str:
    return "\n".join(f"{a.status} {json.dumps(a.headers)} {a.body.decode(errors='replace')}" for a in answers)


def traffic(world: RouterWorld) -> list[Raw]:
    """Successes and every kind of failure, on both backends, streamed and not."""
    answers: list[Raw] = []

    def send(path: str = "/v1/completions", *, stream: bool = False, model: str = MODEL,
             body: bytes | None = None, method: str = "POST") -> None:
        payload = json.dumps({"model": model, "prompt": "Count:", "max_tokens": 2, "stream": stream,
                              "stream_options": {"include_usage": True}}).encode()
        answers.append(world.raw(method, path, payload if body is None and method == "POST" else body,
                                 headers={"Authorization": "Bearer client-token"}))

    for stream in (False, True):
        send(stream=stream)  # the pool
        world.view(mode="Full")
        send(stream=stream)  # the API, with the key
        send("/v1/chat/completions", stream=stream, body=json.dumps({
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}).encode())
        world.view(mode="Overflow")
    send(model="gpt-4o")  # 404
    send(body=b"{nope")  # 400
    send(body=b"x" * 5000)  # 413
    send("/v1/files", method="GET")  # unknown path
    send("/v1/models", method="GET")
    refusing: FakeProvider = world.add(FakeProvider(api_key=None, model_name=MODEL))
    refusing.fail_with(503)
    world.view(replicas=[refusing.url])
    world.provider.fail_with(429)
    send()  # the pool refuses, and so does the API
    world.provider.fail_with(None)
    world.call(world.provider.stop())
    send(stream=True)  # the API is down
    answers.append(world.raw("GET", "/metrics"))
    return answers


def test_the_key_goes_to_the_provider_and_nowhere_else(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with router_world(settings_changes={"max_body_bytes": 4096}) as world:
        answers = traffic(world)
        at_provider = [r.headers.get("Authorization") for r in world.provider.received]
        metrics = answers[-1]
    assert at_provider and set(at_provider) == {f"Bearer {API_KEY}"}  # it did go where it must
    assert {a.status for a in answers} >= {200, 400, 404, 413, 429, 503}
    assert metrics.status == 200 and b"poolpilot_router_requests_total" in metrics.body
    said = everything_said(answers)
    assert "the API took no connection" in caplog.text  # the router's own lines were captured
    assert API_KEY not in said and API_KEY not in caplog.text


def test_a_provider_that_quotes_the_key_back_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The router holds a key the provider does not take: its 401 quotes the key it got, whole.
    with router_world(mode="Full", provider_key="sk-the-right-one") as world, world.client() as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert world.provider.received[-1].headers["Authorization"] == f"Bearer {API_KEY}"
        quoted_by_provider = world.provider.received  # the provider did get (and quote) it
        answer = refused.value.response
        assert "[redacted]" in answer.text
        assert API_KEY not in answer.text and API_KEY not in json.dumps(dict(answer.headers))
    assert quoted_by_provider and API_KEY not in caplog.text
