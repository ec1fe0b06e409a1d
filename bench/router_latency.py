"""What the router adds to a request: latency (p50, p99), time to the first streamed byte, requests per second.

A fake OpenAI-compatible backend on loopback answers at once (a fixed completion, or a short Server-Sent
Events stream with a usage chunk), so what is measured is the router, not a model. The router runs in a
process of its own pinned to one core (``os.sched_setaffinity``), in ``Off`` mode with the backend as its
one replica; the backend and this client share the other core. Every request goes once directly to the
backend and once through the router, alternating, in the same run, so both see the same machine.

    python -m bench.router_latency [--requests 2000] [--concurrency 32] [--throughput-requests 6000]

Prints a table with the router's figures as ratios to the direct ones. Goal: under 1 ms p50 added.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import web

from controller.router.proxy import build_app
from controller.router.server import make_runner
from controller.router.settings import RouterSettings
from controller.router.view import RouterView, ViewHolder

MODEL = "bench/model"
GOAL_P50_ADDED_MS = 1.0
WARMUP = 200
START_TIMEOUT_SECONDS = 30.0
ROUTER_CORE, CLIENT_CORE = 0, 1

_COMPLETION = json.dumps({
    "id": "cmpl-bench", "object": "text_completion", "created": 1, "model": MODEL,
    "choices": [{"index": 0, "text": " the model answers", "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
}).encode()
_EVENTS = [b"data: " + json.dumps({"id": "cmpl-bench", "object": "text_completion", "created": 1, "model": MODEL,
                                   "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]}).encode()
           + b"\n\n" for i in range(3)]
_EVENTS.append(b'data: {"id":"cmpl-bench","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,'
               b'"total_tokens":7}}\n\ndata: [DONE]\n\n')


def _pin(core: int | None) -> bool:
    """Run on one core if this OS lets us (Linux), and there is such a core; None: anywhere."""
    if core is None or not hasattr(os, "sched_setaffinity") or core not in os.sched_getaffinity(0):
        return False
    os.sched_setaffinity(0, {core})
    return True


async def _backend(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if b'"stream":true' not in body:
        return web.Response(body=_COMPLETION, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in _EVENTS:
        await response.write(event)
    await response.write_eof()
    return response


async def _serve_until_stopped(app: web.Application, report: Connection, pinned: bool) -> None:
    """Serve; on the pipe, answer "cpu" with this process's CPU seconds so far, stop on anything else."""
    runner = make_runner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    report.send((runner.addresses[0][1], pinned))
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, report.recv) == "cpu":
        report.send(time.process_time())
    await runner.cleanup()


def run_backend(report: Connection, core: int | None) -> None:
    pinned = _pin(core)
    app = web.Application()
    app.router.add_post("/v1/completions", _backend)
    asyncio.run(_serve_until_stopped(app, report, pinned))


def run_router(report: Connection, core: int | None, backend_url: str) -> None:
    pinned = _pin(core)
    settings = RouterSettings(namespace="bench", pool="bench", served_model=MODEL)
    holder = ViewHolder(RouterView(mode="Off", replicas=(backend_url,), known=True))
    asyncio.run(_serve_until_stopped(build_app(settings, holder), report, pinned))


@dataclass
class Server:
    """A server in a process of its own."""

    port: int
    pinned: bool
    pipe: Connection

    def cpu_seconds(self) -> float:
        self.pipe.send("cpu")
        seconds: float = self.pipe.recv()
        return seconds


@contextlib.contextmanager
def process(target: Callable[..., None], *args: Any) -> Iterator[Server]:
    """Start ``target`` in a process of its own; stopped on exit."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=target, args=(theirs, *args), daemon=True)
    child.start()
    try:
        if not ours.poll(START_TIMEOUT_SECONDS):
            raise RuntimeError(f"{target.__name__} did not start")
        port, pinned = ours.recv()
        yield Server(port, pinned, ours)
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        child.join(5)
        if child.is_alive():
            child.kill()


def _body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "Count:", "max_tokens": 3, "stream": stream},
                      separators=(",", ":")).encode()


async def _one(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """Seconds to the first body byte (all of a non-streamed answer is one read); the rest is drained."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.content.readany()
        first = time.perf_counter() - started
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return first


async def _latencies(session: aiohttp.ClientSession, direct: str, routed: str, body: bytes,
                     requests: int) -> tuple[list[float], list[float]]:
    for _ in range(WARMUP):
        await _one(session, direct, body)
        await _one(session, routed, body)
    times_direct, times_routed = [], []
    for _ in range(requests):  # alternating: both see the same moments of the machine
        times_direct.append(await _one(session, direct, body))
        times_routed.append(await _one(session, routed, body))
    return times_direct, times_routed


async def _throughput(session: aiohttp.ClientSession, url: str, body: bytes, requests: int,
                      concurrency: int) -> float:
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            await _one(session, url, body)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


Row = tuple[str, float, float]  # what, direct, through the router


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e3 if q != 50 else statistics.median(values) * 1e3


async def measure(direct: str, router: Server, backend: Server,
                  args: argparse.Namespace) -> tuple[list[Row], float, float]:
    """The table's rows, and the router's and the backend's CPU time per request they served."""
    routed = f"http://127.0.0.1:{router.port}/v1/completions"
    connector = aiohttp.TCPConnector(limit=0)
    cpu_before, backend_before = router.cpu_seconds(), backend.cpu_seconds()
    routed_requests = 0
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        rows: list[Row] = []
        for label, stream in (("non-streaming latency", False), ("streaming, first byte", True)):
            plain, through = await _latencies(session, direct, routed, _body(stream), args.requests)
            routed_requests += WARMUP + args.requests
            rows.append((f"{label} p50 (ms)", _p(plain, 50), _p(through, 50)))
            rows.append((f"{label} p99 (ms)", _p(plain, 99), _p(through, 99)))
        measurements: dict[str, Callable[[], Awaitable[float]]] = {
            "direct": lambda: _throughput(session, direct, _body(False), args.throughput_requests, args.concurrency),
            "router": lambda: _throughput(session, routed, _body(False), args.throughput_requests, args.concurrency),
        }
        rps = {name: await run() for name, run in measurements.items()}
        routed_requests += args.throughput_requests
        rows.append((f"requests/s, {args.concurrency} in flight", rps["direct"], rps["router"]))
    backend_cpu = (backend.cpu_seconds() - backend_before) / (2 * routed_requests)  # direct and routed
    return rows, (router.cpu_seconds() - cpu_before) / routed_requests, backend_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per path and kind, for the latencies")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--throughput-requests", type=int, default=6000)
    parser.add_argument("--no-pin", action="store_true", help="let the OS place the processes")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.throughput_requests) < 1 or args.requests < 100:
        parser.error("--requests must be >= 100 and the others >= 1")
    router_core, client_core = (None, None) if args.no_pin else (ROUTER_CORE, CLIENT_CORE)
    with process(run_backend, client_core) as backend:
        backend_url = f"http://127.0.0.1:{backend.port}"
        with process(run_router, router_core, backend_url) as router:
            client_pinned = _pin(client_core)
            rows, cpu_per_request, backend_cpu = asyncio.run(
                measure(f"{backend_url}/v1/completions", router, backend, args))
    where = (f"router pinned to core {ROUTER_CORE}, backend and client to core {CLIENT_CORE}"
             if router.pinned and client_pinned else "not pinned")
    print(f"Router overhead on loopback: {args.requests} requests per kind, alternating direct and routed; {where}")
    print("| measure | direct | through the router | added | ratio |")
    print("|---|---|---|---|---|")
    for label, plain, through in rows:
        if label.startswith("requests/s"):
            print(f"| {label} | {plain:.0f} | {through:.0f} | | {through / plain:.2f}x |")
        else:
            print(f"| {label} | {plain:.3f} | {through:.3f} | {through - plain:+.3f} | {through / plain:.2f}x |")
    print(f"Router CPU per request: {cpu_per_request * 1e6:.0f} us (at most {1 / cpu_per_request:.0f} requests/s "
          f"on its one core); the backend, an aiohttp server alone: {backend_cpu * 1e6:.0f} us.")
    added = rows[0][2] - rows[0][1]
    verdict = "met" if added < GOAL_P50_ADDED_MS else "NOT met"
    print(f"Goal: under {GOAL_P50_ADDED_MS:.0f} ms p50 added (non-streaming): {added:.3f} ms, {verdict}.")


if __name__ == "__main__":
    main()
