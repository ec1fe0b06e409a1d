"""A small, bounded load generator: streaming completions at a steady rate, for tests, benchmarks and the demo.

Each request goes to an endpoint picked when it is sent, from a callable that returns the current
candidates (e.g. ``lambda: ready_endpoints(cluster, "llm", "vllm")``, what kube-proxy would route
to), round-robin over them as IPVS's ``rr`` does. Open loop: one request every ``1/rate`` seconds
whatever the answers, as users arrive. Every request is recorded (endpoint, outcome, HTTP status,
tokens received, time to the first token)::

    report = await run_load(lambda: ready_endpoints(cluster, NS, "web"), requests=50, rate=20)
    report.summary  # {'sent': 50, 'completed': 48, 'reset': 2}

Outcomes: ``completed`` (``data: [DONE]`` arrived), ``reset`` (the connection broke before it),
``refused`` (no connection), ``http_error`` (a status other than 200: 503 while a replica drains),
``timeout``, ``no_endpoint`` (the callable had none). Bounded: at most ``MAX_REQUESTS`` requests and
``MAX_CONCURRENCY`` at once; only loopback addresses are accepted (anything else raises), and the
HTTP session ignores proxy settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
import itertools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

import aiohttp

__all__ = ["MAX_CONCURRENCY", "MAX_REQUESTS", "LoadReport", "RequestOutcome", "RequestRecord", "run_load"]

Address = tuple[str, int]
EndpointSource = Callable[[], Sequence[Address] | Awaitable[Sequence[Address]]]

MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 512


class RequestOutcome(StrEnum):
    COMPLETED = "completed"
    RESET = "reset"
    REFUSED = "refused"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    NO_ENDPOINT = "no_endpoint"


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    index: int
    endpoint: Address | None
    outcome: RequestOutcome
    status: int | None  # the HTTP status, if one came
    tokens: int  # text chunks received
    sent_at: float  # seconds since the run began
    first_token_seconds: float | None
    duration_seconds: float


@dataclasses.dataclass(frozen=True)
class LoadReport:
    records: tuple[RequestRecord, ...]

    @property
    def summary(self) -> dict[str, int]:
        """``sent`` plus a count per outcome that occurred."""
        counts = Counter(str(record.outcome) for record in self.records)
        return {"sent": len(self.records), **dict(sorted(counts.items()))}

    @property
    def completed(self) -> int:
        return sum(1 for record in self.records if record.outcome is RequestOutcome.COMPLETED)

    @property
    def failed(self) -> Counter[RequestOutcome]:
        """The requests that did not complete, by outcome."""
        return Counter(r.outcome for r in self.records if r.outcome is not RequestOutcome.COMPLETED)

    def by_endpoint(self) -> Counter[Address | None]:
        return Counter(record.endpoint for record in self.records)


def _check_loopback(address: Address) -> Address:
    host, port = address
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the load generator sends to loopback addresses only, not {host!r}")
    return host, int(port)


def _url(address: Address, chat: bool) -> str:
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/v1/{'chat/completions' if chat else 'completions'}"


async def run_load(
    endpoints: EndpointSource,
    *,
    requests: int,
    rate: float,
    max_tokens: int = 16,
    model: str | None = None,
    chat: bool = False,
    timeout_seconds: float = 30.0,
) -> LoadReport:
    """Send ``requests`` streaming completions, one every ``1/rate`` seconds; wait for all; report each."""
    if not 0 < requests <= MAX_REQUESTS or not rate > 0:
        raise ValueError(f"requests must be in 1..{MAX_REQUESTS} and rate > 0")
    loop = asyncio.get_running_loop()
    began = loop.time()
    turn = itertools.count()
    gate = asyncio.Semaphore(MAX_CONCURRENCY)
    payload: dict[str, Any] = {"max_tokens": max_tokens, "stream": True}
    if model is not None:
        payload["model"] = model
    if chat:
        payload["messages"] = [{"role": "user", "content": "Tell me a story."}]
    else:
        payload["prompt"] = "Tell me a story."

    async def pick() -> Address | None:
        found = endpoints()
        candidates = list(await found if inspect.isawaitable(found) else found)
        if not candidates:
            return None
        return _check_loopback(candidates[next(turn) % len(candidates)])

    async def one(index: int, session: aiohttp.ClientSession) -> RequestRecord:
        sent_at = loop.time()
        endpoint = await pick()
        status: int | None = None
        tokens, first_token = 0, None
        outcome = RequestOutcome.NO_ENDPOINT
        if endpoint is not None:
            async with gate:
                outcome, status, tokens, first_token = await _stream(
                    session, _url(endpoint, chat), payload, timeout_seconds, sent_at)
        return RequestRecord(index, endpoint, outcome, status, tokens, sent_at - began, first_token,
                             loop.time() - sent_at)

    connector = aiohttp.TCPConnector(limit=MAX_CONCURRENCY, force_close=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        tasks: list[asyncio.Task[RequestRecord]] = []
        for index in range(requests):
            await asyncio.sleep(max(0.0, began + index / rate - loop.time()))
            tasks.append(asyncio.create_task(one(index, session)))
        records = await asyncio.gather(*tasks)
    return LoadReport(tuple(records))


async def _stream(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], timeout_seconds: float, sent_at: float
) -> tuple[RequestOutcome, int | None, int, float | None]:
    """One streaming request: (outcome, status, tokens, seconds to the first token)."""
    loop = asyncio.get_running_loop()
    status: int | None = None
    tokens, first_token = 0, None
    try:
        async with asyncio.timeout(timeout_seconds), session.post(url, json=payload) as response:
            status = response.status
            if status != 200:
                await response.read()
                return RequestOutcome.HTTP_ERROR, status, 0, None
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    return RequestOutcome.COMPLETED, status, tokens, first_token
                chunk = json.loads(data)
                if any(_chunk_text(choice) for choice in chunk.get("choices") or []):
                    tokens += 1
                    if first_token is None:
                        first_token = loop.time() - sent_at
            return RequestOutcome.RESET, status, tokens, first_token  # the body ended without [DONE]
    except TimeoutError:
        return RequestOutcome.TIMEOUT, status, tokens, first_token
    except aiohttp.ClientConnectorError:
        return RequestOutcome.REFUSED, status, tokens, first_token
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return RequestOutcome.RESET, status, tokens, first_token


def _chunk_text(choice: dict[str, Any]) -> str:
    return str(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
