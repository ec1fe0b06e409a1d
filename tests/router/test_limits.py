"""What the router answers itself: oversized and malformed requests, unknown models and paths (never
forwarded: no open proxy), health and readiness."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.router.world import MODEL, RouterWorld, router_world


@pytest.fixture
def world() -> Iterator[RouterWorld]:
    with router_world(mode="Overflow", settings_changes={"max_body_bytes": 2048}) as world:
        yield world


def assert_openai_error(body: bytes, code: str | None = None) -> None:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code


def untouched(world: RouterWorld) -> bool:
    return sum(world.replica.requests.values()) == 0 and world.provider.received == []


def test_an_oversized_body_is_a_413(world: RouterWorld) -> None:
    with world.client() as client, pytest.raises(openai.APIStatusError) as too_large:
        client.completions.create(model=MODEL, prompt="x" * 4096, max_tokens=1)
    assert too_large.value.status_code == 413
    assert_openai_error(too_large.value.response.content)

    # Chunked, so no Content-Length announces it: the limit holds while reading.
    pieces = (b'{"model": "%s", "prompt": "' % MODEL.encode(), b"x" * 3000, b'"}')
    answer = world.raw("POST", "/v1/completions", iter(pieces))
    assert answer.status == 413
    assert_openai_error(answer.body)
    assert untouched(world) and world.metric("poolpilot_router_rejected_total", reason="body_too_large") == 2


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"prompt": "x"}', "provide a model"),
    (b'{"model": 7, "prompt": "x"}', "provide a model"),
])
def test_a_malformed_request_is_a_400(world: RouterWorld, body: bytes, message: str) -> None:
    answer = world.raw("POST", "/v1/chat/completions", body)
    assert answer.status == 400 and message in answer.json()["error"]["message"]
    assert_openai_error(answer.body)
    assert untouched(world) and world.metric("poolpilot_router_rejected_total", reason="bad_request") == 1


def test_another_model_is_a_404(world: RouterWorld) -> None:
    with world.client() as client, pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    assert_openai_error(unknown.value.response.content, "model_not_found")
    assert untouched(world) and world.metric("poolpilot_router_rejected_total", reason="unknown_model") == 1


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/embeddings"), ("GET", "/v1/completions"), ("POST", "/v1/../metrics"), ("GET", "/admin"),
    ("POST", "/v1/chat/completions/../../v1/files"), ("GET", "/"),
])
def test_no_other_path_is_forwarded(world: RouterWorld, method: str, path: str) -> None:
    body = json.dumps({"model": MODEL, "prompt": "x"}).encode() if method == "POST" else None
    answer = world.raw(method, path, body)
    assert answer.status in (404, 405)
    assert untouched(world)


def test_the_host_header_chooses_nothing(world: RouterWorld) -> None:
    provider_host = world.provider.url.removeprefix("http://")
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 1}).encode()
    answer = world.raw("POST", "/v1/completions", body, headers={"Host": provider_host})
    assert answer.status == 200 and answer.headers["X-PoolPilot-Backend"] == "pool"
    assert world.provider.received == []


def test_health_and_readiness(world: RouterWorld) -> None:
    assert world.raw("GET", "/healthz").status == 200
    assert world.raw("GET", "/readyz").status == 200
    world.view(known=False)  # discovery has not read the pool yet
    assert world.raw("GET", "/readyz").status == 503
    assert world.raw("GET", "/healthz").status == 200
