"""Fake vLLM replicas that serve vLLM's exact ``/metrics`` exposition, for tests, the demo and benchmarks.

The real vLLM needs a GPU and gigabytes of wheels; what the operator reads from it is
small and well defined (``reference/llm-serving-control-planes.md`` section 1). A fake
replica serves the same names, types, HELP texts and labels (``engine``, ``model_name``),
rendered by ``prometheus_client`` as vLLM itself does, with values the test controls::

    async with FakeVLLMFleet(3) as fleet:          # 127.0.0.2, .3, .4, one shared port
        fleet.replicas[0].set(waiting=12, running=4, kv=0.83)
        fleet.replicas[1].set(engines=2, kv_metric=KVMetric.LEGACY)   # data parallel, old KV name
        fleet.replicas[2].set(failure=Failure.GARBAGE)

    with FakeVLLMFleet.in_thread(3) as fleet:      # sync tests, the demo, a Prometheus to scrape
        fleet.replicas[0].set(waiting=5)
        fleet.call(fleet.replicas[1].stop())       # connection refused from now on

Each replica listens on its own loopback address with the same port, as pods of one
Deployment do (``127.0.0.2:P``, ``127.0.0.3:P``, ...); where those addresses cannot be bound
(not Linux), every replica gets 127.0.0.1 with its own port and ``fleet.address_mode`` says so.
``add_replica(host="::1")`` serves on IPv6 (``replica.url`` is then ``http://[::1]:P``).

``set()`` is thread-safe (it swaps an immutable state under a lock); ``start``/``stop``/
``add_replica``/``remove_replica`` are coroutines on the fleet's loop (use ``fleet.call`` from
another thread). Endpoints: ``/metrics``, ``/health`` (200, or 503 when set unhealthy),
``/v1/models``. Failure modes apply to ``/metrics``; a delay applies to every endpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import ipaddress
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Self, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

from devkube.loopthread import in_thread, running_loop

__all__ = [
    "CONTENT_TYPE",
    "TTFT_BUCKETS",
    "Failure",
    "FakeVLLMFleet",
    "FakeVLLMReplica",
    "KVMetric",
    "ReplicaState",
    "ipv6_loopback_bindable",
    "loopback_aliases_bindable",
]

T = TypeVar("T")
Values = float | tuple[float, ...]  # one number (split over engines) or one per engine

# What vLLM's prometheus_client serves for the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM's buckets for vllm:time_to_first_token_seconds (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
_MAX_HANG_SECONDS = 120.0  # a hanging replica gives up after this, or when it is stopped
_GARBAGE = b"<html><body>502 Bad Gateway</body></html>\n{{{ vllm:num_requests_waiting 12 \x00 not metrics\n"


class KVMetric(StrEnum):
    """Which KV-cache gauge a replica exposes (vLLM renamed it in 0.9.2 and dropped the old name in 0.12)."""

    CURRENT = "current"  # vllm:kv_cache_usage_perc only (vLLM >= 0.11)
    LEGACY = "legacy"  # vllm:gpu_cache_usage_perc only (vLLM <= 0.9.1)
    BOTH = "both"  # both names (0.9.2 - 0.10.x)
    NONE = "none"  # neither: a replica that does not report KV use


class Failure(StrEnum):
    """How ``/metrics`` misbehaves."""

    NONE = "none"
    HTTP_500 = "http_500"
    GARBAGE = "garbage"  # 200 with a body that is not the exposition format
    HANG = "hang"  # never answers (until the replica stops, or _MAX_HANG_SECONDS)


@dataclass(frozen=True)
class ReplicaState:
    """Everything a replica reports; replaced as a whole by ``FakeVLLMReplica.set``."""

    waiting: Values = 0.0
    running: Values = 0.0
    kv: Values = 0.0  # a 0-1 fraction; a single number is every engine's value
    kv_legacy: Values | None = None  # what vllm:gpu_cache_usage_perc says, if not the same as kv
    deferred: Values = 0.0  # of the waiting requests, how many are 'deferred' (the rest are 'capacity')
    engines: int = 1
    kv_metric: KVMetric = KVMetric.CURRENT
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    preemptions: float = 0.0
    ttft_observations: tuple[float, ...] = ()
    delay_seconds: float = 0.0
    failure: Failure = Failure.NONE
    healthy: bool = True

    def __post_init__(self) -> None:
        if self.engines < 1:
            raise ValueError("a replica has at least one engine")
        for name in ("waiting", "running", "kv", "kv_legacy", "deferred"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != self.engines:
                raise ValueError(f"{name} has {len(value)} per-engine values for {self.engines} engines")


class _InFlight:
    """How many requests the fleet is serving at once (the pods source's concurrency bound is tested on it)."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.now += 1
        self.max = max(self.max, self.now)
        try:
            yield
        finally:
            self.now -= 1


_PER_ENGINE = ("waiting", "running", "kv", "kv_legacy", "deferred")


def _changes(**fields: Any) -> dict[str, Any]:
    """``ReplicaState`` fields to replace: the ones given (not ``None``), per-engine sequences as tuples."""
    return {
        key: tuple(value) if key in _PER_ENGINE and not isinstance(value, int | float) else value
        for key, value in fields.items()
        if value is not None
    }


class FakeVLLMReplica:
    """One fake vLLM server on ``host:port``."""

    def __init__(self, host: str, port: int, *, name: str, model_name: str = DEFAULT_MODEL,
                 state: ReplicaState | None = None, in_flight: _InFlight | None = None) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.model_name = model_name
        self.requests: Counter[str] = Counter()  # path -> requests received
        self._state = state or ReplicaState()
        self._lock = threading.Lock()
        self._in_flight = in_flight or _InFlight()
        self._created = time.time()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_VLLMCollector(self))

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def address(self) -> str:
        """``host:port`` (``[::1]:port`` for IPv6), as a Prometheus target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def serving(self) -> bool:
        return self._runner is not None

    def set(self, *, waiting: float | Sequence[float] | None = None, running: float | Sequence[float] | None = None,
            kv: float | Sequence[float] | None = None, kv_legacy: float | Sequence[float] | None = None,
            deferred: float | Sequence[float] | None = None,
            engines: int | None = None, kv_metric: KVMetric | None = None, prompt_tokens: float | None = None,
            generation_tokens: float | None = None, preemptions: float | None = None,
            delay_seconds: float | None = None, failure: Failure | None = None, healthy: bool | None = None) -> None:
        """Change what the replica reports; ``None`` leaves a field as it is. Any thread."""
        changes = _changes(waiting=waiting, running=running, kv=kv, kv_legacy=kv_legacy, deferred=deferred,
                           engines=engines, kv_metric=kv_metric, prompt_tokens=prompt_tokens,
                           generation_tokens=generation_tokens, preemptions=preemptions,
                           delay_seconds=delay_seconds, failure=failure, healthy=healthy)
        with self._lock:
            self._state = dataclasses.replace(self._state, **changes)

    def observe_ttft(self, *seconds: float) -> None:
        """Record time-to-first-token observations (spread over the engines round-robin). Any thread."""
        with self._lock:
            self._state = dataclasses.replace(self._state, ttft_observations=self._state.ttft_observations + seconds)

    def exposition(self) -> bytes:
        """The ``/metrics`` body for the current state, exactly as served."""
        return generate_latest(self._registry)

    # --- serving --------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (already bound), or bind ``host:port`` again (a restart)."""
        if self._runner is not None:
            return
        if sock is None:
            sock = _bind(self.host, self.port)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._closing = asyncio.Event()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening (connections are refused from now on); hanging requests are released."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._closing is not None:
            self._closing.set()
        await runner.cleanup()

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if the replica is stopping meanwhile."""
        if seconds <= 0:
            return True
        closing = self._closing or asyncio.Event()
        try:
            await asyncio.wait_for(closing.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def _metrics(self, request: web.Request) -> web.Response:
        self.requests["/metrics"] += 1
        state = self._state
        with self._in_flight.track():
            if not await self._pause(state.delay_seconds):
                return web.Response(status=503, text="shutting down")
            if state.failure is Failure.HTTP_500:
                return web.Response(status=500, text="Internal Server Error")
            if state.failure is Failure.GARBAGE:
                return web.Response(body=_GARBAGE, headers={"Content-Type": CONTENT_TYPE})
            if state.failure is Failure.HANG:
                await self._pause(_MAX_HANG_SECONDS)
                return web.Response(status=503, text="gave up hanging")
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _health(self, request: web.Request) -> web.Response:
        self.requests["/health"] += 1
        state = self._state
        if not await self._pause(state.delay_seconds):
            return web.Response(status=503)
        return web.Response(status=200 if state.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        self.requests["/v1/models"] += 1
        if not await self._pause(self._state.delay_seconds):
            return web.Response(status=503)
        model = {
            "id": self.model_name, "object": "model", "created": int(self._created), "owned_by": "vllm",
            "root": self.model_name, "parent": None, "max_model_len": 8192,
        }
        return web.json_response({"object": "list", "data": [model]})


class _VLLMCollector:
    """Renders a replica's state as vLLM's metric families (prometheus_client does the text format)."""

    def __init__(self, replica: FakeVLLMReplica) -> None:
        self._replica = replica

    def collect(self) -> Iterable[Metric]:
        replica = self._replica
        state = replica.state
        engines = [str(i) for i in range(state.engines)]
        labels = ["engine", "model_name"]

        def per_engine(values: Values, *, split: bool) -> list[float]:
            if isinstance(values, tuple):
                return list(values)
            return _split(values, state.engines) if split else [values] * state.engines

        def gauge(name: str, doc: str, values: Values, *, split: bool = True) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            for engine, value in zip(engines, per_engine(values, split=split), strict=True):
                family.add_metric([engine, replica.model_name], value)
            return family

        def counter(name: str, doc: str, total: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            for engine, value in zip(engines, _split(total, state.engines), strict=True):
                family.add_metric([engine, replica.model_name], value, created=replica._created)
            return family

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", state.running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", state.waiting)
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting, by reason. 'capacity' = waiting for scheduling capacity; 'deferred' = "
            "deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons "
            "equals vllm:num_requests_waiting.",
            labels=[*labels, "reason"],
        )
        waiting = per_engine(state.waiting, split=True)
        deferred = per_engine(state.deferred, split=True)
        for engine, total, late in zip(engines, waiting, deferred, strict=True):
            by_reason.add_metric([engine, replica.model_name, "capacity"], total - late)
            by_reason.add_metric([engine, replica.model_name, "deferred"], late)
        yield by_reason
        if state.kv_metric in (KVMetric.CURRENT, KVMetric.BOTH):
            yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", state.kv,
                        split=False)
        if state.kv_metric in (KVMetric.LEGACY, KVMetric.BOTH):
            doc = ("GPU KV-cache usage. 1 means 100 percent usage." if state.kv_metric is KVMetric.LEGACY
                   else "DEPRECATED: Use vllm:kv_cache_usage_perc instead.")
            legacy = state.kv if state.kv_legacy is None else state.kv_legacy
            yield gauge("vllm:gpu_cache_usage_perc", doc, legacy, split=False)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", state.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", state.generation_tokens)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", state.preemptions)
        yield self._ttft(state, engines, labels)

    def _ttft(self, state: ReplicaState, engines: list[str], labels: list[str]) -> HistogramMetricFamily:
        replica = self._replica
        family = HistogramMetricFamily(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels=labels)
        for index, engine in enumerate(engines):
            observations = state.ttft_observations[index::len(engines)]
            # repr() is what prometheus_client writes for these bounds: '0.001', '1.0', '2560.0'.
            buckets = [(repr(bound), float(sum(1 for s in observations if s <= bound))) for bound in TTFT_BUCKETS]
            buckets.append(("+Inf", float(len(observations))))
            family.add_metric([engine, replica.model_name], buckets, float(sum(observations)))
            # prometheus_client's Histogram also exposes _created; the family helper has no argument for it.
            family.samples.append(Sample(f"{family.name}_created", {"engine": engine, "model_name": replica.model_name},
                                         replica._created))
        return family


def _split(total: float, parts: int) -> list[float]:
    """Spread a replica's total over its engines: whole numbers stay whole (13 over 2 -> 7, 6)."""
    if math.isfinite(total) and total == int(total) and total >= 0:
        base, extra = divmod(int(total), parts)
        return [float(base + (1 if i < extra else 0)) for i in range(parts)]
    return [total / parts] * parts


# --- addresses ------------------------------------------------------------------------------

_ALIAS_PROBE: bool | None = None
_FIRST_ALIAS = ipaddress.IPv4Address("127.0.0.2")
_PORT_ATTEMPTS = 20


def loopback_aliases_bindable() -> bool:
    """Whether 127.0.0.2 and up can be bound here (Linux routes all of 127/8 to lo; macOS does not)."""
    global _ALIAS_PROBE
    if _ALIAS_PROBE is None:
        try:
            _bind(str(_FIRST_ALIAS), 0).close()
            _ALIAS_PROBE = True
        except OSError:
            _ALIAS_PROBE = False
    return _ALIAS_PROBE


def ipv6_loopback_bindable() -> bool:
    """Whether ``::1`` can be bound here (not in a container or on a host with IPv6 disabled)."""
    if not socket.has_ipv6:
        return False
    try:
        _bind("::1", 0).close()
    except OSError:
        return False
    return True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _alias(index: int) -> str:
    address = _FIRST_ALIAS + index
    if address not in ipaddress.IPv4Network("127.0.0.0/8") or address == ipaddress.IPv4Address("127.255.255.255"):
        raise ValueError("out of loopback addresses")
    return str(address)


class FakeVLLMFleet:
    """N fake replicas on distinct loopback addresses with one shared port."""

    def __init__(self, replicas: int = 1, *, port: int | None = None, model_name: str = DEFAULT_MODEL,
                 state: ReplicaState | None = None) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.model_name = model_name
        self.port: int | None = port  # the shared port (None in "distinct-ports" mode until started)
        self.address_mode: Literal["loopback-aliases", "distinct-ports"] = (
            "loopback-aliases" if loopback_aliases_bindable() else "distinct-ports")
        self.replicas: list[FakeVLLMReplica] = []
        self._initial = replicas
        self._state = state or ReplicaState()
        self._in_flight = _InFlight()
        self._next_index = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sockets = self._bind_all(self._initial)
        try:
            for index, sock in enumerate(sockets):
                host, port = sock.getsockname()[:2]
                replica = self._new_replica(host, port, index)
                await replica.start(sock)
                self.replicas.append(replica)
        except BaseException:
            for sock in sockets:
                sock.close()
            await self.stop()
            raise
        self._next_index = len(sockets)

    async def stop(self) -> None:
        replicas, self.replicas = self.replicas, []
        await asyncio.gather(*(replica.stop() for replica in replicas))

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, replicas: int = 1, **kwargs: Any) -> Iterator[FakeVLLMFleet]:
        """Run the fleet on its own event loop in a background thread (sync tests, the demo)."""
        with in_thread(cls(replicas, **kwargs), name="fakevllm") as fleet:
            yield fleet

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the fleet's loop from another thread and wait for it."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the fleet is not running")
        if running_loop() is loop:
            coroutine.close()
            raise RuntimeError("call() blocks; on the fleet's own loop, await the coroutine instead")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return future.result(timeout)

    # --- replicas -------------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Base URLs of the serving replicas (what the pods source gets as READY endpoints)."""
        return tuple(replica.url for replica in self.replicas if replica.serving)

    @property
    def max_in_flight(self) -> int:
        """The most ``/metrics`` requests the fleet has served at the same time."""
        return self._in_flight.max

    def reset_max_in_flight(self) -> None:
        self._in_flight.max = self._in_flight.now

    def set_all(self, **changes: Any) -> None:
        """``set`` on every replica, and on the state a replica added from now on starts with. Any thread."""
        self._state = dataclasses.replace(self._state, **_changes(**changes))
        for replica in list(self.replicas):
            replica.set(**changes)

    async def add_replica(self, host: str | None = None, **state: Any) -> FakeVLLMReplica:
        """Start one more replica on the fleet's port: at ``host`` (a pod's own IP), or at the next loopback
        address; ``state`` as for ``set``."""
        if host is not None:
            if self.port is None:
                raise RuntimeError("a fleet with no port yet cannot serve at a given host: pass port=")
            sock = _bind(host, self.port)
        else:
            (sock,) = self._bind_all(1, first_index=self._next_index)
        host, port = sock.getsockname()[:2]
        replica = self._new_replica(host, port, self._next_index)
        try:
            await replica.start(sock)
        except BaseException:
            sock.close()
            raise
        self._next_index += 1
        replica.set(**state)
        self.replicas.append(replica)
        return replica

    async def remove_replica(self, replica: FakeVLLMReplica) -> None:
        self.replicas.remove(replica)
        await replica.stop()

    def _new_replica(self, host: str, port: int, index: int) -> FakeVLLMReplica:
        return FakeVLLMReplica(host, port, name=f"vllm-{index}", model_name=self.model_name, state=self._state,
                               in_flight=self._in_flight)

    def _bind_all(self, count: int, first_index: int = 0) -> list[socket.socket]:
        if count == 0:
            return []
        if self.address_mode == "distinct-ports":
            return [_bind("127.0.0.1", 0) for _ in range(count)]
        hosts = [_alias(first_index + i) for i in range(count)]
        for _attempt in range(_PORT_ATTEMPTS if self.port is None else 1):
            bound: list[socket.socket] = []
            try:
                first = _bind(hosts[0], self.port or 0)
                bound.append(first)
                port = first.getsockname()[1]
                bound.extend(_bind(host, port) for host in hosts[1:])
            except OSError as e:
                for sock in bound:
                    sock.close()
                if e.errno != errno.EADDRINUSE or self.port is not None:
                    raise
                continue
            self.port = port
            return bound
        raise OSError(errno.EADDRINUSE, f"no port free on all of {hosts[0]}..{hosts[-1]} in {_PORT_ATTEMPTS} tries")
