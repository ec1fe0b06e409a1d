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
``terminate``/``add_replica``/``remove_replica`` are coroutines on the fleet's loop (use
``fleet.call`` from another thread). Endpoints: ``/metrics``, ``/health`` (200, or 503 when set
unhealthy or draining), ``/live``, ``/v1/models``, and the OpenAI-compatible ``POST /v1/completions``
and ``POST /v1/chat/completions``. Failure modes apply to ``/metrics``; a delay applies to every endpoint.

Serving, as vLLM's OpenAI server does (response shapes of ``vllm/entrypoints/openai/protocol.py``):

* ``id`` (``cmpl-``/``chatcmpl-`` + 32 hex), ``object`` (``text_completion``, ``chat.completion``),
  ``created``, ``model``, ``choices`` (``finish_reason`` ``length`` at ``max_tokens``, ``stop`` when
  the model "ends" after ``ReplicaState.output_tokens``), ``usage``; ``stream: true`` sends Server-Sent
  Events (``text_completion`` / ``chat.completion.chunk`` chunks, a role chunk first for chat, the usage
  chunk with ``stream_options.include_usage``) and ``data: [DONE]``. Errors have vLLM's
  ``{"error": {"message", "type", "param", "code"}}`` shape (404 for an unknown model, 400 past the
  context length of 8192 tokens).
* A real queue, as vLLM's scheduler: at most ``max_num_seqs`` sequences run at once (first come, first
  served), the others wait; each running sequence gets ``tokens_per_second`` tokens. ``/metrics``
  reports the live state *added to* the explicit values of ``set()`` (running, waiting, prompt and
  generation tokens; the first token's time goes to the TTFT histogram), so a test that sets
  ``waiting=12`` and sends nothing still reads 12, and one that sends traffic reads the traffic.
* ``await replica.terminate(shutdown_timeout=S)`` is SIGTERM to ``vllm serve --shutdown-timeout=S``
  (vllm PRs #34730/#36666, ``vllm/entrypoints/launcher.py`` and ``entrypoints/serve/middleware.py``):
  with S > 0 the server keeps listening but answers every new request with 503
  ``{"error": "Server is unavailable. Please try again later."}`` (``/metrics`` and ``/live`` stay
  up; ``/health`` is 503), lets the in-flight requests (queued ones too) finish for up to S seconds,
  then aborts the rest: a non-streaming one gets 503 ``{"error": "Server is shutting down."}``, a stream
  is cut (no ``[DONE]``); then the socket closes and connections are refused. With S = 0 (vLLM's default)
  everything in flight is cut at once. It returns the in-flight requests ``finished`` and ``aborted``.

The replica model (opt-in): with ``ReplicaState.profile`` set (a ``controller.sim.profiles.ReplicaProfile``,
or a profile's name for ``set``), the completions are served by the simulator's replica engine,
``controller.sim.replica.ReplicaEngine`` (continuous batching, chunked prefill, KV blocks, recompute
preemption, the profile's step times), so load behaves: a fixed request rate spread over more replicas gives
each a shorter queue::

    FakeVLLMFleet(3, state=ReplicaState(profile=profile_named("llama-3.1-8b-l4"), time_scale=10))
    fleet.set_all(profile="llama-3.1-8b-l4")       # or on a running fleet (add_replica(profile=...) too)

* One engine per replica, made at the first request; its clock is ``time_scale`` x the event loop's seconds
  since then (``time_scale=10``: the replica is 10 times faster than the wall clock, for short tests; the TTFT
  observations are wall seconds). A change of profile or scale takes a new engine once the old one is empty.
* The engine decides when a request's first token comes and when it finishes (``first_token_at``,
  ``finished_at``). A stream gets its first token then, the next ones paced at the engine's current decode step
  (the profile's step time for the batch and KV the engine holds: the engine does not say when each of a
  request's tokens comes), and the last one, with any left, when the engine finishes it; a non-streamed answer
  comes whole at the finish. The output length is ``max_tokens`` or ``output_tokens`` as without a profile.
* The context length is the profile's ``max_model_len`` (the 400, ``/v1/models``); ``tokens_per_second`` and
  ``max_num_seqs`` are not used (the profile has its own ``max_num_seqs``: ``dataclasses.replace`` it).
* ``/metrics`` adds the engine's live ``waiting``, ``running``, KV use (``vllm:kv_cache_usage_perc``, and the
  legacy name), prompt and generation tokens and preemptions to the explicit values of ``set()``; each first
  token is a TTFT observation. Read on the replica's loop, the gauges are as of now; from another thread, as
  of the engine's last step.
* ``terminate`` drains as above; at the timeout, ``engine.abort`` drops what is left. A request whose client
  went away mid-stream runs on in the engine to its end (vLLM would abort it).

Differences from vLLM: one token per ``1/tokens_per_second`` per sequence whatever the batch (no step
model, no prefill time, no KV cache or preemption) unless a profile is set (the engine's own simplifications
are in ``controller.sim.replica``); prompt tokens are counted as 4 characters each; a
missing ``max_tokens`` means 16 (vLLM gives the rest of the context); no ``n`` > 1, batch prompts, logprobs,
stop strings, tools or sampling; a client that goes away is noticed only on the next write (vLLM aborts
the request at once); the listening socket is the replica's own, so "the process exits" is the socket
closing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import ipaddress
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Self, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

from controller.core.signals import VLLM_TTFT_BUCKETS
from controller.sim.profiles import ReplicaProfile, profile_named
from controller.sim.replica import ReplicaEngine
from controller.sim.request import SimRequest
from devkube.loopthread import in_thread, running_loop

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_TOKENS",
    "MAX_MODEL_LEN",
    "TTFT_BUCKETS",
    "DrainResult",
    "Failure",
    "FakeVLLMFleet",
    "FakeVLLMReplica",
    "KVMetric",
    "Outcome",
    "ReplicaState",
    "ipv6_loopback_bindable",
    "loopback_aliases_bindable",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Values = float | tuple[float, ...]  # one number (split over engines) or one per engine

# What vLLM's prometheus_client serves for the classic text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# vLLM's buckets for vllm:time_to_first_token_seconds, as the core knows them.
TTFT_BUCKETS = VLLM_TTFT_BUCKETS
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
_MAX_HANG_SECONDS = 120.0  # a hanging replica gives up after this, or when it is stopped
MAX_MODEL_LEN = 8192  # what /v1/models reports; prompt + max_tokens beyond it is a 400, as in vLLM
DEFAULT_MAX_TOKENS = 16  # when a request gives none (OpenAI's completions default; vLLM: the rest of the context)
_CHARS_PER_TOKEN = 4  # the usual rule of thumb, for counting prompt tokens without a tokenizer
_WORDS = ("the", "model", "answers", "slowly", "and", "steadily", "one", "token", "at", "a", "time")
_UNAVAILABLE = "Server is unavailable. Please try again later."  # vLLM's ServiceUnavailableMiddleware
_SHUTTING_DOWN = "Server is shutting down."
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
    tokens_per_second: float = 50.0  # per running sequence
    max_num_seqs: int = 256  # vLLM's default for the API server (--max-num-seqs)
    output_tokens: int | None = None  # the model "ends its answer" after this many tokens (None: at max_tokens)
    # The replica model (controller.sim): with a profile, a ReplicaEngine serves the completions instead of the
    # miniature scheduler (tokens_per_second and max_num_seqs are then the profile's business, not used).
    profile: ReplicaProfile | None = None
    time_scale: float = 1.0  # with a profile: engine seconds per wall second (10: the replica runs 10x faster)

    def __post_init__(self) -> None:
        if self.engines < 1:
            raise ValueError("a replica has at least one engine")
        if not self.tokens_per_second > 0 or self.max_num_seqs < 1:
            raise ValueError("tokens_per_second must be > 0 and max_num_seqs >= 1")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError(f"time_scale must be a positive number, not {self.time_scale}")
        if self.profile is not None:
            ReplicaEngine(self.profile)  # a profile vLLM could not start with fails here, not at the first request
        if self.output_tokens is not None and self.output_tokens < 1:
            raise ValueError("output_tokens must be >= 1")
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


class Outcome(StrEnum):
    """How a completion request ended (``FakeVLLMReplica.completions`` counts them)."""

    FINISHED = "finished"
    ABORTED = "aborted"  # cut by the replica's shutdown
    REJECTED = "rejected"  # 503 while draining
    DISCONNECTED = "disconnected"  # the client went away mid-stream


@dataclass(frozen=True)
class DrainResult:
    """Of the requests in flight when ``terminate`` began: how many finished, how many were aborted."""

    finished: int
    aborted: int


@dataclass(eq=False)
class _Sequence:
    """One request in the engine: queued until admitted, then decoding until done or aborted."""

    prompt_tokens: int
    arrived: float
    admitted: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    aborted: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    outcome: Outcome | None = None


class _Scheduler:
    """vLLM's admission in miniature: first come, first served, at most ``max_num_seqs`` running."""

    def __init__(self) -> None:
        self.running: dict[_Sequence, None] = {}
        self.waiting: deque[_Sequence] = deque()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def submit(self, sequence: _Sequence, max_num_seqs: int) -> None:
        self.waiting.append(sequence)
        self.idle.clear()
        self.admit(max_num_seqs)

    def admit(self, max_num_seqs: int) -> None:
        while self.waiting and len(self.running) < max_num_seqs:
            sequence = self.waiting.popleft()
            self.running[sequence] = None
            self.prompt_tokens += sequence.prompt_tokens  # prefilled on admission
            sequence.admitted.set()

    def release(self, sequence: _Sequence, max_num_seqs: int) -> None:
        self.running.pop(sequence, None)
        if sequence in self.waiting:
            self.waiting.remove(sequence)
        self.admit(max_num_seqs)
        if not self.running and not self.waiting:
            self.idle.set()

    def in_flight(self) -> list[_Sequence]:
        return [*self.running, *self.waiting]

    def abort_all(self) -> None:
        for sequence in self.in_flight():
            if sequence.outcome is None:
                sequence.outcome = Outcome.ABORTED
            sequence.aborted.set()


@dataclass(eq=False, kw_only=True)
class _ModelledSequence(_Sequence):
    """A request served by the replica model: the engine's request, and the moments the handler waits for."""

    request: SimRequest
    first_token: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # finished in the engine, or aborted


class _ReplicaModel:
    """The replica's :class:`ReplicaEngine` on the event loop's clock, when its state has a profile.

    Engine time is ``time_scale`` x the loop's seconds since the engine was made (lazily, at the first request
    with that profile and scale); it never goes back. One task drives the engine: it sleeps until
    ``engine.next_change`` (woken early by a submission), advances the engine, and wakes the handlers whose
    request got its first token (recording the TTFT) or finished. A change of profile or time scale takes a new
    engine at the first request that finds the old one empty; its counters carry over.
    """

    def __init__(self, observe_ttft: Callable[[float], None]) -> None:
        self.engine: ReplicaEngine | None = None
        self._observe_ttft = observe_ttft
        self._key: tuple[ReplicaProfile, float] | None = None
        self._scale = 1.0
        self._origin = 0.0  # loop time at engine time 0
        self._last = 0.0  # latest engine time handed to the engine
        self._next_id = 0
        self._in_engine: dict[int, _ModelledSequence] = {}  # by request id; a request whose handler left is not
        self._awaiting_first: dict[int, _ModelledSequence] = {}
        self._active: dict[_ModelledSequence, None] = {}  # handlers under way (a drain waits for them)
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._retired = (0, 0, 0)  # prompt, generation tokens and preemptions of engines replaced
        self.idle = asyncio.Event()
        self.idle.set()

    # --- the engine and its clock ---------------------------------------------------------------

    def engine_for(self, profile: ReplicaProfile, time_scale: float) -> ReplicaEngine:
        """The engine serving the next request: a new one when the profile or scale changed and the old is empty."""
        key = (profile, time_scale)
        engine = self.engine
        if engine is not None and (key == self._key or self._active or engine.outstanding):
            return engine
        if engine is not None:
            prompt, generation, preemptions = self._retired
            self._retired = (prompt + engine.prompt_tokens_total, generation + engine.generation_tokens_total,
                             preemptions + engine.preemptions_total)
        self.engine = engine = ReplicaEngine(profile)
        self._key = key
        self._scale = time_scale
        self._origin = asyncio.get_running_loop().time()
        self._last = 0.0
        return engine

    def now(self) -> float:
        """Engine time now (monotonic: a timer that fires a hair early does not take the engine back)."""
        self._last = max(self._last, (asyncio.get_running_loop().time() - self._origin) * self._scale)
        return self._last

    def advance(self) -> None:
        """Bring the engine's gauges to now (the driver hands out what this produces at its next wake)."""
        if self.engine is not None:
            self.engine.advance(self.now())

    def token_interval(self) -> float:
        """Wall seconds of the engine's current decode step: the profile's step time for the batch and KV held."""
        engine = self.engine
        assert engine is not None
        profile = engine.profile
        context = round(engine.kv_usage * profile.kv_capacity_tokens)
        return profile.step_seconds(max(1, engine.running), 0, context) / self._scale

    # --- requests ----------------------------------------------------------------------------------

    def submit(self, prompt_tokens: int, output_tokens: int) -> _ModelledSequence | None:
        """Queue a request in the engine; None when it exceeds the engine's ``max_model_len``."""
        engine = self.engine
        assert engine is not None, "engine_for comes first"
        now = self.now()
        request = SimRequest(id=self._next_id, arrival=now, prompt_tokens=prompt_tokens, output_tokens=output_tokens)
        if not engine.submit(request, now):
            return None
        self._next_id += 1
        sequence = _ModelledSequence(prompt_tokens, arrived=asyncio.get_running_loop().time(), request=request)
        self._in_engine[request.id] = sequence
        self._awaiting_first[request.id] = sequence
        self._active[sequence] = None
        self.idle.clear()
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="fakevllm-engine")
        self._wake.set()
        return sequence

    def release(self, sequence: _ModelledSequence) -> None:
        """The handler is done. A request still in the engine (its client went away) runs on to its end."""
        with contextlib.suppress(KeyError):
            del self._active[sequence]
        self._awaiting_first.pop(sequence.request.id, None)
        self._in_engine.pop(sequence.request.id, None)
        if not self._active:
            self.idle.set()

    def in_flight(self) -> list[_ModelledSequence]:
        return list(self._active)

    def abort_all(self) -> None:
        """The shutdown's abort: every request still in the engine is dropped and its handler told."""
        if self.engine is None:
            return
        dropped = self.engine.abort(self.now())
        self._hand_out()
        for request in dropped:
            sequence = self._in_engine.pop(request.id, None)
            if sequence is None:
                continue
            self._awaiting_first.pop(request.id, None)
            if sequence.outcome is None:
                sequence.outcome = Outcome.ABORTED
            sequence.aborted.set()
            sequence.done.set()

    async def close(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver

    async def _drive(self) -> None:
        try:
            while True:
                self._wake.clear()
                engine = self.engine
                assert engine is not None
                now = self.now()
                engine.advance(now)
                self._hand_out()
                next_change = engine.next_change  # may bring only a change of the batch: nothing to hand out
                if math.isinf(next_change):
                    await self._wake.wait()
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=(next_change - now) / self._scale)
                except TimeoutError:
                    self._last = max(self._last, next_change)
        except Exception:  # a bug in the model must not leave the handlers waiting forever
            log.exception("the replica model failed; aborting its requests")
            for sequence in list(self._active):
                sequence.outcome = sequence.outcome or Outcome.ABORTED
                sequence.aborted.set()
                sequence.done.set()
            raise

    def _hand_out(self) -> None:
        """Wake the handlers whose request got its first token or finished since the last look."""
        engine = self.engine
        assert engine is not None
        if self._awaiting_first:
            for request_id, sequence in list(self._awaiting_first.items()):
                first_token_at = sequence.request.first_token_at
                if first_token_at is not None:
                    del self._awaiting_first[request_id]
                    self._observe_ttft((first_token_at - sequence.request.arrival) / self._scale)
                    sequence.first_token.set()
        for request in engine.pop_finished():
            finished = self._in_engine.pop(request.id, None)
            if finished is not None:
                finished.done.set()

    # --- gauges --------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return 0 if self.engine is None else self.engine.running

    @property
    def waiting(self) -> int:
        return 0 if self.engine is None else self.engine.waiting

    @property
    def kv_usage(self) -> float:
        return 0.0 if self.engine is None else self.engine.kv_usage

    @property
    def prompt_tokens(self) -> int:
        return self._retired[0] + (0 if self.engine is None else self.engine.prompt_tokens_total)

    @property
    def generation_tokens(self) -> int:
        return self._retired[1] + (0 if self.engine is None else self.engine.generation_tokens_total)

    @property
    def preemptions(self) -> int:
        return self._retired[2] + (0 if self.engine is None else self.engine.preemptions_total)


_PER_ENGINE = ("waiting", "running", "kv", "kv_legacy", "deferred")


def _changes(**fields: Any) -> dict[str, Any]:
    """``ReplicaState`` fields to replace: the ones given (not ``None``), per-engine sequences as tuples, a
    profile given by name as the profile."""
    changes: dict[str, Any] = {
        key: tuple(value) if key in _PER_ENGINE and not isinstance(value, int | float) else value
        for key, value in fields.items()
        if value is not None
    }
    profile = changes.get("profile")
    if isinstance(profile, str):
        changes["profile"] = profile_named(profile)
    return changes


class FakeVLLMReplica:
    """One fake vLLM server on ``host:port``."""

    def __init__(self, host: str, port: int, *, name: str, model_name: str = DEFAULT_MODEL,
                 state: ReplicaState | None = None, in_flight: _InFlight | None = None) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.model_name = model_name
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.completions: Counter[Outcome] = Counter()  # completion requests by how they ended
        self._state = state or ReplicaState()
        self._lock = threading.Lock()
        self._in_flight = in_flight or _InFlight()
        self._created = time.time()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler = _Scheduler()
        self._model = _ReplicaModel(self.observe_ttft)  # serves instead of the scheduler when a profile is set
        self._rejecting = False  # draining: new requests get 503
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
        """Listening (also while draining)."""
        return self._runner is not None

    @property
    def draining(self) -> bool:
        return self._rejecting

    @property
    def running(self) -> int:
        """Sequences decoding now (the live part of vllm:num_requests_running)."""
        return len(self._scheduler.running) + self._model.running

    @property
    def waiting(self) -> int:
        """Sequences queued now (the live part of vllm:num_requests_waiting)."""
        return len(self._scheduler.waiting) + self._model.waiting

    @property
    def engine(self) -> ReplicaEngine | None:
        """The replica model's engine (None until a request is served with a profile)."""
        return self._model.engine

    def set(self, *, waiting: float | Sequence[float] | None = None, running: float | Sequence[float] | None = None,
            kv: float | Sequence[float] | None = None, kv_legacy: float | Sequence[float] | None = None,
            deferred: float | Sequence[float] | None = None,
            engines: int | None = None, kv_metric: KVMetric | None = None, prompt_tokens: float | None = None,
            generation_tokens: float | None = None, preemptions: float | None = None,
            delay_seconds: float | None = None, failure: Failure | None = None, healthy: bool | None = None,
            tokens_per_second: float | None = None, max_num_seqs: int | None = None,
            output_tokens: int | None = None, profile: ReplicaProfile | str | None = None,
            time_scale: float | None = None) -> None:
        """Change what the replica reports and how it serves; ``None`` leaves a field as it is. Any thread.

        ``profile`` (a :class:`ReplicaProfile` or a profile's name) turns the replica model on, ``time_scale``
        speeds it up; see the module's doc.
        """
        changes = _changes(waiting=waiting, running=running, kv=kv, kv_legacy=kv_legacy, deferred=deferred,
                           engines=engines, kv_metric=kv_metric, prompt_tokens=prompt_tokens,
                           generation_tokens=generation_tokens, preemptions=preemptions,
                           delay_seconds=delay_seconds, failure=failure, healthy=healthy,
                           tokens_per_second=tokens_per_second, max_num_seqs=max_num_seqs,
                           output_tokens=output_tokens, profile=profile, time_scale=time_scale)
        with self._lock:
            self._state = dataclasses.replace(self._state, **changes)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._admit)  # a larger max_num_seqs lets waiting sequences in

    def _admit(self) -> None:
        self._scheduler.admit(self._state.max_num_seqs)

    def observe_ttft(self, *seconds: float) -> None:
        """Record time-to-first-token observations (spread over the engines round-robin). Any thread."""
        with self._lock:
            self._state = dataclasses.replace(self._state, ttft_observations=self._state.ttft_observations + seconds)

    def exposition(self) -> bytes:
        """The ``/metrics`` body for the current state, exactly as served."""
        if self._loop is not None and running_loop() is self._loop:
            self._model.advance()  # the replica model's gauges as of now (from another thread: as of its last step)
        return generate_latest(self._registry)

    # --- serving --------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Serve on ``sock`` (already bound), or bind ``host:port`` again (a restart)."""
        if self._runner is not None:
            return
        if sock is None:
            sock = _bind(self.host, self.port)
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._closing = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._scheduler = _Scheduler()  # a new process: nothing in flight, counters from zero
        self._model = _ReplicaModel(self.observe_ttft)
        self._rejecting = False
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    def _application(self) -> web.Application:
        """The server's routes (a subclass adds middlewares: the fake provider's key check and failures)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/live", self._live)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        return app

    async def stop(self) -> None:
        """Stop at once (``terminate(0)``): in-flight completions are cut, hanging requests released,
        connections refused from now on."""
        await self.terminate(shutdown_timeout=0.0)

    async def terminate(self, shutdown_timeout: float = 0.0) -> DrainResult:
        """What SIGTERM does to ``vllm serve --shutdown-timeout=<shutdown_timeout>`` (see the module's doc)."""
        if self._runner is None:
            return DrainResult(finished=0, aborted=0)
        scheduler, model = self._scheduler, self._model
        in_flight: list[_Sequence] = [*scheduler.in_flight(), *model.in_flight()]
        if shutdown_timeout > 0:
            self._rejecting = True  # set_rejecting_requests(True): 503 for new requests, the socket stays open
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_all_set(scheduler.idle, model.idle), timeout=shutdown_timeout)
        scheduler.abort_all()
        model.abort_all()
        await model.close()
        runner, self._runner = self._runner, None
        if self._closing is not None:
            self._closing.set()
        await runner.cleanup()
        self._rejecting = False
        return DrainResult(
            finished=sum(1 for s in in_flight if s.outcome is Outcome.FINISHED),
            aborted=sum(1 for s in in_flight if s.outcome is Outcome.ABORTED),
        )

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
        if self._rejecting:
            return _unavailable()
        state = self._state
        if not await self._pause(state.delay_seconds):
            return web.Response(status=503)
        return web.Response(status=200 if state.healthy else 503)

    async def _live(self, request: web.Request) -> web.Response:
        self.requests["/live"] += 1  # liveness: 200 while the process runs, draining or not
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        self.requests["/v1/models"] += 1
        if self._rejecting:
            return _unavailable()
        if not await self._pause(self._state.delay_seconds):
            return web.Response(status=503)
        profile = self._state.profile
        model = {
            "id": self.model_name, "object": "model", "created": int(self._created), "owned_by": "vllm",
            "root": self.model_name, "parent": None,
            "max_model_len": MAX_MODEL_LEN if profile is None else profile.max_model_len,
        }
        return web.json_response({"object": "list", "data": [model]})

    # --- completions ----------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions`` and ``/v1/chat/completions``: queue, decode, answer or stream."""
        self.requests[request.path] += 1
        if self._rejecting:
            self.completions[Outcome.REJECTED] += 1
            return _unavailable()
        state = self._state
        if not await self._pause(state.delay_seconds):
            return _unavailable()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "BadRequestError", "The request body is not valid JSON.")
        chat = request.path.endswith("/chat/completions")
        if state.profile is not None:
            return await self._generate_modelled(request, body, chat, state.profile, state.time_scale)
        parsed = _parse_generation(body, chat=chat, model=self.model_name)
        if isinstance(parsed, web.Response):
            return parsed
        sequence = _Sequence(parsed.prompt_tokens, arrived=asyncio.get_running_loop().time())
        scheduler = self._scheduler
        scheduler.submit(sequence, state.max_num_seqs)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, sequence)
            return await self._answer(request, parsed, sequence)
        finally:
            scheduler.release(sequence, self._state.max_num_seqs)
            if sequence.outcome is not None:
                self.completions[sequence.outcome] += 1

    async def _generate_modelled(self, request: web.Request, body: Any, chat: bool, profile: ReplicaProfile,
                                 time_scale: float) -> web.StreamResponse:
        """A completion served by the replica model: the engine says when its first token comes and it ends."""
        model = self._model
        engine = model.engine_for(profile, time_scale)
        parsed = _parse_generation(body, chat=chat, model=self.model_name, max_model_len=engine.max_model_len)
        if isinstance(parsed, web.Response):
            return parsed
        sequence = model.submit(parsed.prompt_tokens, self._output_length(parsed))
        if sequence is None:  # past the engine's max_model_len: vLLM's 400 (the check above catches it first)
            return _context_too_long(parsed.prompt_tokens, parsed.max_tokens, engine.max_model_len)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, sequence)
            return await self._answer(request, parsed, sequence)
        finally:
            model.release(sequence)
            if sequence.outcome is not None:
                self.completions[sequence.outcome] += 1

    async def _decode_modelled(self, parsed: _Generation, sequence: _ModelledSequence) -> AsyncIterator[str]:
        """The first token at the engine's first token; a stream's next ones at the engine's decode step; the
        last (and any left) when the engine finishes the request; stops early if aborted."""
        if not await _first_of(sequence.first_token, sequence.aborted) or sequence.aborted.is_set():
            return
        total = sequence.request.output_tokens
        sent = 0
        if parsed.stream:
            loop = asyncio.get_running_loop()
            due = loop.time()
            yield _word(sent)
            sent += 1
            while sent < total - 1 and not sequence.done.is_set():
                due += self._model.token_interval()  # a schedule, so the writes' time does not add up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sequence.done.wait(), timeout=max(0.0, due - loop.time()))
                if sequence.done.is_set():
                    break
                yield _word(sent)
                sent += 1
        await sequence.done.wait()
        if sequence.aborted.is_set():
            return
        for index in range(sent, total):
            yield _word(index)

    async def _decode(self, parsed: _Generation, sequence: _Sequence) -> AsyncIterator[str]:
        """The sequence's tokens at the replica's pace, once admitted; stops early if aborted."""
        if isinstance(sequence, _ModelledSequence):
            async for token in self._decode_modelled(parsed, sequence):
                yield token
            return
        if not await _first_of(sequence.admitted, sequence.aborted) or sequence.aborted.is_set():
            return
        for index in range(self._output_length(parsed)):
            try:  # wait one token's time, unless aborted meanwhile
                await asyncio.wait_for(sequence.aborted.wait(), timeout=1.0 / self._state.tokens_per_second)
                return
            except TimeoutError:
                pass
            self._scheduler.generation_tokens += 1
            if index == 0:
                self.observe_ttft(asyncio.get_running_loop().time() - sequence.arrived)
            yield _word(index)

    def _output_length(self, parsed: _Generation) -> int:
        natural = self._state.output_tokens
        return parsed.max_tokens if natural is None else min(natural, parsed.max_tokens)

    async def _answer(self, request: web.Request, parsed: _Generation, sequence: _Sequence) -> web.StreamResponse:
        tokens = [token async for token in self._decode(parsed, sequence)]
        if sequence.aborted.is_set():
            if self._rejecting:  # the middleware answers a request cancelled during a drain
                return _unavailable(_SHUTTING_DOWN)
            return _cut(request)  # an immediate shutdown just closes the connection
        sequence.outcome = Outcome.FINISHED
        text, finish = "".join(tokens), _finish_reason(len(tokens), parsed.max_tokens)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text, "reasoning_content": None,
                                     "tool_calls": []},
             "logprobs": None, "finish_reason": finish, "stop_reason": None}
            if parsed.chat else
            {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None,
             "prompt_logprobs": None}
        )
        return web.json_response({
            "id": parsed.id, "object": "chat.completion" if parsed.chat else "text_completion",
            "created": parsed.created, "model": self.model_name, "choices": [choice],
            "usage": _usage(parsed.prompt_tokens, len(tokens)), "prompt_logprobs": None,
        })

    async def _stream(self, request: web.Request, parsed: _Generation, sequence: _Sequence) -> web.StreamResponse:
        """Server-Sent Events as vLLM's streaming generators write them; the headers go out at once."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        chunk_type = "chat.completion.chunk" if parsed.chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {"id": parsed.id, "object": chunk_type, "created": parsed.created, "model": self.model_name,
                       "choices": choices, **extra}
            return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            if parsed.chat:
                return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish,
                        "stop_reason": None}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

        length = (sequence.request.output_tokens if isinstance(sequence, _ModelledSequence)
                  else self._output_length(parsed))
        sent = 0
        try:
            async for token in self._decode(parsed, sequence):
                if sent == 0 and parsed.chat:  # the role comes first, with the first output
                    await response.write(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]))
                sent += 1
                await response.write(chunk([choice(token, _finish_reason(sent, parsed.max_tokens)
                                                   if sent == length else None)]))
            if sequence.aborted.is_set():
                return _cut(request, response)  # a stream under way cannot become a 503: it is cut
            if parsed.include_usage:
                await response.write(chunk([], usage=_usage(parsed.prompt_tokens, sent)))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError: the client went away
            sequence.outcome = sequence.outcome or Outcome.DISCONNECTED
            return response
        sequence.outcome = Outcome.FINISHED
        return response


@dataclass(frozen=True)
class _Generation:
    """A completion request, validated."""

    chat: bool
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    id: str
    created: int


def _parse_generation(body: Any, *, chat: bool, model: str, max_model_len: int = MAX_MODEL_LEN,
                      ) -> _Generation | web.Response:
    """The fields the fake honours, checked as vLLM checks them (400/404 with vLLM's error shape)."""
    if not isinstance(body, Mapping):
        return _error(400, "BadRequestError", "The request body must be a JSON object.")
    if body.get("model") not in (None, model):
        return _error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.", param="model")
    if body.get("n", 1) != 1:
        return _error(400, "BadRequestError", "The fake vLLM replica serves n=1 only.", param="n")
    prompt_tokens = _chat_prompt_tokens(body.get("messages")) if chat else _prompt_tokens(body.get("prompt"))
    if prompt_tokens is None:
        field = "messages" if chat else "prompt"
        return _error(400, "BadRequestError", f"`{field}` is missing or not of a supported form.", param=field)
    requested = body.get("max_completion_tokens") if chat else None
    requested = body.get("max_tokens") if requested is None else requested
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool) or requested < 1):
        return _error(400, "BadRequestError", f"max_tokens must be at least 1, got {requested}.", param="max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if requested is None else requested
    if prompt_tokens + max_tokens > max_model_len:
        return _context_too_long(prompt_tokens, max_tokens, max_model_len)
    options = body.get("stream_options") or {}
    return _Generation(
        chat=chat, prompt_tokens=prompt_tokens, max_tokens=max_tokens, stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, Mapping) and options.get("include_usage")),
        id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", created=int(time.time()),
    )


def _context_too_long(prompt_tokens: int, max_tokens: int, max_model_len: int) -> web.Response:
    return _error(400, "BadRequestError",
                  f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                  f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                  f"completion). Please reduce the length of the messages or completion.")


def _word(index: int) -> str:
    return f" {_WORDS[index % len(_WORDS)]}"


def _text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def _prompt_tokens(prompt: Any) -> int | None:
    """A string, one string in a list, or token ids (batches of prompts are not served)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return len(prompt)
    return None


def _chat_prompt_tokens(messages: Any) -> int | None:
    """The messages as a chat template would render them: role and text of each."""
    if not isinstance(messages, list) or not messages:
        return None
    rendered = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: only the text ones count
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        rendered.append(f"<|{message.get('role', 'user')}|>{content}")
    return _text_tokens("".join(rendered))


def _finish_reason(tokens: int, max_tokens: int) -> str:
    return "length" if tokens >= max_tokens else "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens, "prompt_tokens_details": None}


def _error(status: int, kind: str, message: str, *, param: str | None = None) -> web.Response:
    """vLLM's ErrorResponse: ``{"error": {"message", "type", "param", "code"}}``."""
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": status}},
                             status=status)


def _unavailable(message: str = _UNAVAILABLE) -> web.Response:
    return web.json_response({"error": message}, status=503)


def _cut(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the connection under the request, as a server that goes away does."""
    if request.transport is not None:
        request.transport.close()
    return response if response is not None else web.Response(status=503)


async def _all_set(*events: asyncio.Event) -> None:
    """Until every event is set (each stays set once it is: a draining replica takes no new requests)."""
    for event in events:
        await event.wait()


async def _first_of(wanted: asyncio.Event, other: asyncio.Event) -> bool:
    """Wait for either event; True if ``wanted`` is set."""
    if not wanted.is_set() and not other.is_set():
        waiters = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(other.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    return wanted.is_set()


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

        # The live engine adds to what the test set: explicit values stay as they were without traffic.
        live, model = replica._scheduler, replica._model
        running = _plus(state.running, len(live.running) + model.running, state.engines)
        waiting_total = _plus(state.waiting, len(live.waiting) + model.waiting, state.engines)
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting_total)
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting, by reason. 'capacity' = waiting for scheduling capacity; 'deferred' = "
            "deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons "
            "equals vllm:num_requests_waiting.",
            labels=[*labels, "reason"],
        )
        waiting = per_engine(waiting_total, split=True)
        deferred = per_engine(state.deferred, split=True)
        for engine, total, late in zip(engines, waiting, deferred, strict=True):
            by_reason.add_metric([engine, replica.model_name, "capacity"], total - late)
            by_reason.add_metric([engine, replica.model_name, "deferred"], late)
        yield by_reason
        if state.kv_metric in (KVMetric.CURRENT, KVMetric.BOTH):
            yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                        _plus_each(state.kv, model.kv_usage), split=False)
        if state.kv_metric in (KVMetric.LEGACY, KVMetric.BOTH):
            doc = ("GPU KV-cache usage. 1 means 100 percent usage." if state.kv_metric is KVMetric.LEGACY
                   else "DEPRECATED: Use vllm:kv_cache_usage_perc instead.")
            legacy = state.kv if state.kv_legacy is None else state.kv_legacy
            yield gauge("vllm:gpu_cache_usage_perc", doc, _plus_each(legacy, model.kv_usage), split=False)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
                      state.prompt_tokens + live.prompt_tokens + model.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.",
                      state.generation_tokens + live.generation_tokens + model.generation_tokens)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                      state.preemptions + model.preemptions)
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


def _plus(values: Values, live: int, engines: int) -> Values:
    """Explicit values plus the live count (spread over the engines as ``_split`` does)."""
    if not live:
        return values
    if isinstance(values, tuple):
        return tuple(v + extra for v, extra in zip(values, _split(live, engines), strict=True))
    return values + live


def _plus_each(values: Values, live: float) -> Values:
    """A live fraction added to every engine's explicit value (the KV gauge is not split over engines)."""
    if not live:
        return values
    if isinstance(values, tuple):
        return tuple(v + live for v in values)
    return values + live


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

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the fleet's loop from any thread, without waiting for it."""
        if self._loop is None or self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the fleet is not running")
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop closed in between
            coroutine.close()
            raise

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
        return tuple(replica.url for replica in self.replicas if replica.serving and not replica.draining)

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

    async def add_replica(self, host: str | None = None, *, model_name: str | None = None,
                          **state: Any) -> FakeVLLMReplica:
        """Start one more replica on the fleet's port: at ``host`` (a pod's own IP), or at the next loopback
        address; serving ``model_name`` (``--served-model-name``; the fleet's by default); ``state`` as for
        ``set``."""
        if host is not None:
            if self.port is None:
                raise RuntimeError("a fleet with no port yet cannot serve at a given host: pass port=")
            sock = _bind(host, self.port)
        else:
            (sock,) = self._bind_all(1, first_index=self._next_index)
        host, port = sock.getsockname()[:2]
        replica = self._new_replica(host, port, self._next_index, model_name or self.model_name)
        try:
            await replica.start(sock)
        except BaseException:
            sock.close()
            raise
        self._next_index += 1
        replica.set(**state)
        self.replicas.append(replica)
        return replica

    async def remove_replica(self, replica: FakeVLLMReplica, *, shutdown_timeout: float = 0.0) -> DrainResult:
        """Take the replica out and stop it as ``terminate(shutdown_timeout)`` does."""
        self.replicas.remove(replica)
        return await replica.terminate(shutdown_timeout=shutdown_timeout)

    def _new_replica(self, host: str, port: int, index: int, model_name: str | None = None) -> FakeVLLMReplica:
        return FakeVLLMReplica(host, port, name=f"vllm-{index}", model_name=model_name or self.model_name,
                               state=self._state, in_flight=self._in_flight)

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
