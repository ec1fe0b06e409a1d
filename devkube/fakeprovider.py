"""A fake hosted OpenAI-compatible API (the router's fallback provider), for tests and the demo.

It is a fake vLLM replica (the same completions, chat completions and Server-Sent Events, with the usage
chunk when ``stream_options.include_usage`` is set) behind what a hosted API adds::

    async with FakeProvider(api_key="sk-test", model_name="gpt-4o-mini") as provider:
        provider.base_url                  # http://127.0.0.1:P/v1, what --provider-url names
        provider.fail_with(429)            # every completion: OpenAI's rate-limit error (or 503, 500)
        await provider.stop()              # down: connections refused from now on
        provider.received[-1].headers["Authorization"]   # every /v1 request, as it arrived
        provider.cancelled                 # streams whose client went away

* ``Authorization: Bearer <api_key>`` is required on ``/v1/*`` (401 in OpenAI's shape otherwise). The 401
  quotes the key it got, whole: the worst a provider does, so a test can check the router never passes it on.
* A model other than ``model_name`` is OpenAI's 404 (``model_not_found``).
* ``api_key=None`` checks no key: an OpenAI-compatible server that answers 429 or 503 on demand, e.g. a replica
  behind a rate limiter.

Everything runs on the loop that started it; ``fail_with`` may be called from any thread.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

from devkube.fakevllm import FakeVLLMReplica, Outcome, ReplicaState, _bind

__all__ = ["FakeProvider", "ProviderRequest"]

DEFAULT_PROVIDER_MODEL = "gpt-4o-mini"

_FAILURES: dict[int, tuple[str, str, str | None]] = {  # status -> OpenAI's message, type, code
    429: ("Rate limit reached for requests. Please try again in 1s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


@dataclass(frozen=True)
class ProviderRequest:
    """One request as the provider got it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    model: str | None  # the body's "model", if it is a JSON object with one


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeProvider(FakeVLLMReplica):
    def __init__(self, *, api_key: str | None, model_name: str = DEFAULT_PROVIDER_MODEL, host: str = "127.0.0.1",
                 state: ReplicaState | None = None) -> None:
        super().__init__(host, 0, name="provider", model_name=model_name, state=state)
        self.api_key = api_key
        self.received: list[ProviderRequest] = []
        self._failing: int | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def cancelled(self) -> int:
        """Streams cut short because the client (the router) went away."""
        return self.completions[Outcome.DISCONNECTED]

    def fail_with(self, status: int | None) -> None:
        """From now on every completion gets this error (429, 500 or 503); None serves again."""
        if status is not None and status not in _FAILURES:
            raise ValueError(f"the fake provider fails with one of {sorted(_FAILURES)}, not {status}")
        self._failing = status

    async def start(self, sock: socket.socket | None = None) -> None:
        if sock is None and self.port == 0:  # first start: any free port, kept for restarts
            sock = _bind(self.host, 0)
            self.port = sock.getsockname()[1]
        await super().start(sock)

    def _application(self) -> web.Application:
        app = super()._application()

        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._gate(request, handler)

        app.middlewares.append(gate)
        return app

    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        body = await request.read()
        model = _model_of(body)
        self.received.append(ProviderRequest(request.method, request.path, dict(request.headers), body, model))
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if given != f"Bearer {self.api_key}":
                token = given.removeprefix("Bearer ")
                message = (f"Incorrect API key provided: {token}." if token
                           else "You didn't provide an API key. You need to provide your API key in an "
                                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
                return _openai_error(401, message, "invalid_request_error", "invalid_api_key")
        if request.method != "POST":
            return await handler(request)
        if model != self.model_name:
            return _openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                                 "invalid_request_error", "model_not_found")
        failing = self._failing
        if failing is not None:
            message, kind, code = _FAILURES[failing]
            return _openai_error(failing, message, kind, code, retry_after="1" if failing == 429 else None)
        return await handler(request)


def _model_of(body: bytes) -> str | None:
    try:
        document: Any = json.loads(body) if body else None
    except ValueError:
        return None
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) else None


def _openai_error(status: int, message: str, kind: str, code: str | None, *,
                  retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status, headers=headers)
