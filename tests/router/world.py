"""The router's test world: fake vLLM replicas, the fake provider and the router on one event loop in a
background thread, called by the real (synchronous) ``openai`` client from the test's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import openai
from aiohttp import web

from controller.api.status import FallbackMode
from controller.router.proxy import METRICS_KEY, build_app
from controller.router.server import make_runner
from controller.router.settings import RouterSettings
from controller.router.view import RouterView, ViewHolder
from devkube.fakeprovider import FakeProvider
from devkube.fakevllm import FakeVLLMFleet, FakeVLLMReplica, ReplicaState
from devkube.loopthread import in_thread
from tests.support.waiting import eventually

__all__ = ["API_KEY", "MODEL", "PROVIDER_MODEL", "GatedStream", "Raw", "RouterWorld", "router_world"]

T = TypeVar("T")
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
PROVIDER_MODEL = "gpt-4o-mini"
API_KEY = "sk-test-4f9c2e7a1b3d5f60-poolpilot"
FAST = ReplicaState(tokens_per_second=2000.0)  # answers at once: tests wait on events, not on the fake's pace


@dataclass(frozen=True)
class Raw:
    """An answer as it came over the wire."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class GatedStream:
    """An OpenAI-compatible server whose streams send their first chunk, then wait for ``release()``: a
    replica that produces the rest only once the test has seen the first."""

    def __init__(self, chunks: int = 4) -> None:
        self.chunks = chunks
        self.produced = 0
        self.url = ""
        self._gate = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v1/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def release(self) -> None:
        self._gate.set()

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(self.chunks):
            if index == 1:
                await self._gate.wait()
            self.produced += 1
            chunk = {"id": "cmpl-gated", "object": "text_completion", "created": 1, "model": MODEL,
                     "choices": [{"index": 0, "text": f" t{index}", "logprobs": None, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@dataclass
class RouterWorld:
    replicas: int = 1
    mode: FallbackMode = "Overflow"
    provider_key: str | None = API_KEY  # what the provider requires
    router_key: str | None = API_KEY  # what the router's key file holds
    settings_changes: dict[str, Any] = field(default_factory=dict)
    with_provider: bool = True

    fleet: FakeVLLMFleet = field(init=False)
    provider: FakeProvider = field(init=False)
    settings: RouterSettings = field(init=False)
    holder: ViewHolder = field(init=False)
    url: str = field(init=False, default="")
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)
    _stack: contextlib.AsyncExitStack = field(init=False, default_factory=contextlib.AsyncExitStack)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        stack = self._stack
        self.fleet = await stack.enter_async_context(FakeVLLMFleet(self.replicas, model_name=MODEL, state=FAST))
        self.provider = await stack.enter_async_context(
            FakeProvider(api_key=self.provider_key, model_name=PROVIDER_MODEL, state=FAST))
        settings = RouterSettings(namespace="team-a", pool="chat", served_model=MODEL)
        if self.with_provider:
            settings = dataclasses.replace(settings, provider_url=self.provider.base_url,
                                           provider_model=PROVIDER_MODEL, api_key=self.router_key)
        self.settings = dataclasses.replace(settings, **self.settings_changes)
        self.holder = ViewHolder(RouterView(mode=self.mode, replicas=self.fleet.endpoints, known=True))
        runner = make_runner(build_app(self.settings, self.holder))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self.registry = runner.app[METRICS_KEY].registry
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # --- from the test's thread -------------------------------------------------------------

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        assert self._loop is not None
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def add(self, server: Any) -> Any:
        """Enter an async context manager (a FakeProvider as a replica, a GatedStream) on the world's loop."""
        return self.call(self._stack.enter_async_context(server))

    def view(self, *, mode: FallbackMode | None = None, replicas: Iterable[str] | None = None,
             known: bool = True) -> None:
        current = self.holder.view
        self.call(self.holder.replace(dataclasses.replace(
            current, mode=mode or current.mode, known=known,
            replicas=current.replicas if replicas is None else tuple(replicas))))

    @property
    def replica(self) -> FakeVLLMReplica:
        return self.fleet.replicas[0]

    def client(self, *, timeout: float = 30.0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=timeout,
                             http_client=openai.DefaultHttpxClient(trust_env=False))

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def settled(self, name: str, expected: float, **labels: str) -> None:
        """Wait for a metric to read ``expected``: a client may read a stream's last chunk before the router
        has counted it."""
        eventually(lambda: self.metric(name, **labels), lambda value: value == expected, timeout=10.0,
                   interval=0.02, what=f"{name}{labels} == {expected}")

    def raw(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
            headers: dict[str, str] | None = None) -> Raw:
        """One request with urllib (no proxy), whatever the status."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as answer:
                return Raw(answer.status, dict(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as e:
            return Raw(e.code, dict(e.headers.items()), e.read())


@contextlib.contextmanager
def router_world(**options: Any) -> Iterator[RouterWorld]:
    with in_thread(RouterWorld(**options), name="router-world") as world:
        yield world
