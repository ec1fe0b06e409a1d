"""Pool signals scraped straight from each ready replica's ``/metrics``: no Prometheus needed.

Why a second source: a cluster without Prometheus (or a pool that must react faster
than a scrape interval) can still scale. The price is one HTTP request per replica per
round, so the scrapes share one ``aiohttp`` session, run concurrently under a
source-wide bound (``max_concurrency``) and each has a short timeout.

The exposition is parsed with ``prometheus_client``'s parser, never by hand: names
match exactly (``vllm:num_requests_waiting`` is a prefix of ``..._waiting_by_reason``),
label order does not matter, and values are summed over the ``engine`` label (data
parallel). Per replica, KV use is the mean over its engines, from
``vllm:kv_cache_usage_perc`` when the replica has it, else the pre-0.9.2
``vllm:gpu_cache_usage_perc``. Per pool: queue and running are summed, KV averaged
over the replicas that answered (the Prometheus source computes the same).

Requests ask for the classic text format (``Accept``), not OpenMetrics. Redirects (old vLLM builds send
``/metrics`` to ``/metrics/``) are followed up to ``MAX_REDIRECTS`` times on the same scheme, host and
port only: a replica must not point the operator at another host.

A replica that fails (refused, timeout, HTTP error, a body that is not vLLM metrics,
NaN or out-of-range values) is skipped, logged and counted; ``replicas_reporting`` says
how many answered. Only when all of a pool's replicas fail is the pool a problem.

Token rates (``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``) need two scrapes of a
replica: the source remembers each replica's last sample (:mod:`.counters`), and a pool's rate is the
sum over the replicas that have one, None until one has.

Time to first token (``vllm:time_to_first_token_seconds_bucket``, summed per bucket bound over engines) is
read the same way, as increases: per replica, how many requests' first token came, per bucket, between its
last two scrapes (a restart, seen as for the token counters, gives none that round); per pool, the sum over
the replicas that have them, by bound (``PoolSignals.ttft_histogram``). The window is therefore the time
between two evaluations, where Prometheus' is its rate window; the scaler needs enough requests in it
(``MIN_TTFT_OBSERVATIONS``) before it reads a percentile.

The pool's router pods (``PoolTarget.router_addresses``) are scraped in the same round. Their figures
(``poolpilot_router_*``, summed over the router pods) are the pool's demand: arrivals per second (the
rate of ``poolpilot_router_requests_total``, which counts a request when it is answered: under a steady
load the same as arrivals, a request's duration late), requests in flight, spills per second; and the
tokens the router sent to the hosted API per second (the rates of ``poolpilot_router_prompt_tokens_total``
and ``poolpilot_router_generation_tokens_total`` with ``backend="api"``: what the API charges for). A router
that fails is logged and its figures are None: never the pool's problem. At zero ready replicas a
router that answers is the pool's reading (vLLM's figures None), not ``NoReadyReplicas``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from controller.core.signals import (
    VLLM_METRICS,
    Histogram,
    MetricsProblem,
    MetricsProblemKind,
    PoolKey,
    PoolSignals,
)
from controller.sources.metrics.base import PoolTarget, ReadStats, RouterFigures, SourceResults, invalid_signals
from controller.sources.metrics.counters import CounterMemory, CounterSample, Rates, summed_rates
from controller.sources.metrics.names import ROUTER_METRICS, VLLM_COUNTERS, VLLM_TTFT

__all__ = ["HTTPStatusError", "InvalidExposition", "PodsSource", "RedirectRefused", "ReplicaFailure",
           "ReplicaReading", "RouterReading", "fetch_metrics_text", "parse_router_metrics", "parse_vllm_metrics",
           "signal_lines"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # vLLM's /metrics is tens of KB; more is not vLLM
MAX_REDIRECTS = 3  # /metrics -> /metrics/ needs one
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"  # the classic text format, not OpenMetrics


@dataclass(frozen=True)
class ReplicaReading:
    """One replica's signals, summed (queue, running, token counters) or averaged (KV) over its engines."""

    waiting: float | None
    running: float | None
    kv: float | None
    kv_metric: str | None = None  # the KV-cache gauge ``kv`` comes from
    prompt_tokens: float | None = None  # vllm:prompt_tokens_total: a counter, a rate needs two readings
    generation_tokens: float | None = None  # vllm:generation_tokens_total
    counters_created: float | None = None  # the counters' earliest _created: later after a restart
    # vllm:time_to_first_token_seconds_bucket, summed over engines: (le, requests so far); None if not exposed.
    ttft_buckets: Histogram | None = None
    ttft_created: float | None = None  # the histogram's earliest _created

    def counter_sample(self, at: datetime) -> CounterSample:
        return CounterSample(at, (self.prompt_tokens, self.generation_tokens), self.counters_created)

    def ttft_sample(self, at: datetime) -> CounterSample | None:
        if self.ttft_buckets is None:
            return None
        return CounterSample(at, tuple(count for _, count in self.ttft_buckets), self.ttft_created,
                             keys=tuple(bound for bound, _ in self.ttft_buckets))


@dataclass(frozen=True)
class RouterReading:
    """One router pod's figures, summed over their labels (backend, outcome, reason).

    A family the router declares without a series yet (prometheus_client writes HELP and TYPE for a
    labelled metric before its first use) is 0: no request, no spill so far. One it does not declare is None.
    """

    requests: float | None  # poolpilot_router_requests_total: answered requests, a counter
    in_flight: float | None  # poolpilot_router_in_flight
    spills: float | None  # poolpilot_router_spills_total, a counter
    counters_created: float | None = None
    api_prompt_tokens: float | None = None  # poolpilot_router_prompt_tokens_total{backend="api"}, a counter
    api_generation_tokens: float | None = None  # poolpilot_router_generation_tokens_total{backend="api"}

    def counter_sample(self, at: datetime) -> CounterSample:
        return CounterSample(at, (self.requests, self.spills, self.api_prompt_tokens, self.api_generation_tokens),
                             self.counters_created)


Reading = ReplicaReading | RouterReading


@dataclass(frozen=True)
class ReplicaFailure:
    kind: MetricsProblemKind  # UNREACHABLE, TIMEOUT or INVALID
    message: str


class InvalidExposition(ValueError):
    """A body that is not vLLM's metrics. Its text (``str``) never quotes the body, for it goes into the
    pool's status and Events; ``line`` is the offending line itself, for a person at a terminal."""

    def __init__(self, message: str, *, line_number: int | None = None, line: str | None = None) -> None:
        super().__init__(message)
        self.line_number = line_number
        self.line = line


def _not_the_format(lines: Iterable[tuple[int, str]]) -> InvalidExposition:
    """The error for a body the parser refused, naming the first line it refuses on its own."""
    for number, line in lines:
        try:
            for _family in text_string_to_metric_families(line + "\n"):
                pass
        except Exception:  # the parser raises ValueError mostly, but any failure means "not the format"
            return InvalidExposition(f"line {number} is not the Prometheus text format", line_number=number,
                                     line=line)
    return InvalidExposition("the body is not the Prometheus text format")


_GAUGE_NAMES = (VLLM_METRICS.WAITING, VLLM_METRICS.RUNNING, VLLM_METRICS.KV_CACHE, VLLM_METRICS.KV_CACHE_LEGACY)
_COUNTER_NAMES = (VLLM_COUNTERS.PROMPT_TOKENS, VLLM_COUNTERS.GENERATION_TOKENS)
_CREATED_NAMES = (VLLM_COUNTERS.PROMPT_TOKENS_CREATED, VLLM_COUNTERS.GENERATION_TOKENS_CREATED)
_SIGNAL_NAMES = (*_GAUGE_NAMES, *_COUNTER_NAMES, *_CREATED_NAMES, VLLM_TTFT.BUCKET, VLLM_TTFT.CREATED)
# A sample or HELP/TYPE line of exactly one of those names (the name ends at `{` or a blank, so
# `vllm:num_requests_waiting_by_reason` is not `vllm:num_requests_waiting`).
_SIGNAL_LINE = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(?:" + "|".join(re.escape(name) for name in _SIGNAL_NAMES) + r")[{ \t].*$",
    re.MULTILINE)


def signal_lines(text: str) -> str:
    """The part of an exposition the signals come from. A real vLLM body is tens of KB, mostly
    histograms; parsing all of it costs milliseconds of the event loop per replica per round, a
    regular expression over it a small fraction of that (``python -m bench.parse_cost``). Of the
    histograms only TTFT's buckets are kept (without their HELP and TYPE: the samples parse as untyped)."""
    return "\n".join(_SIGNAL_LINE.findall(text)) + "\n"


def _numbered_signal_lines(text: str) -> list[tuple[int, str]]:
    """The signal lines with their line numbers in ``text`` (only a failure needs them)."""
    numbered, number, position = [], 1, 0
    for match in _SIGNAL_LINE.finditer(text):
        number += text.count("\n", position, match.start())
        position = match.start()
        numbered.append((number, match.group(0)))
    return numbered


def parse_vllm_metrics(text: str) -> ReplicaReading:
    """vLLM's signals from one ``/metrics`` body; :class:`InvalidExposition` if it is not usable."""
    totals: dict[str, float] = {}
    kv: dict[str, list[float]] = {VLLM_METRICS.KV_CACHE: [], VLLM_METRICS.KV_CACHE_LEGACY: []}
    created: list[float] = []
    ttft: dict[float, float] = {}
    ttft_created: list[float] = []
    try:
        for family in text_string_to_metric_families(signal_lines(text)):
            for sample in family.samples:
                if sample.name in (VLLM_METRICS.WAITING, VLLM_METRICS.RUNNING, *_COUNTER_NAMES):
                    totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
                elif sample.name in kv:
                    kv[sample.name].append(float(sample.value))
                elif sample.name in _CREATED_NAMES and math.isfinite(sample.value):
                    created.append(float(sample.value))
                elif sample.name == VLLM_TTFT.BUCKET:
                    bound = _bucket_bound(sample.labels.get(VLLM_TTFT.BOUND_LABEL))
                    ttft[bound] = ttft.get(bound, 0.0) + float(sample.value)
                elif sample.name == VLLM_TTFT.CREATED and math.isfinite(sample.value):
                    ttft_created.append(float(sample.value))
    except InvalidExposition:
        raise
    except Exception as e:  # the parser raises ValueError mostly, but any failure means "not the format"
        raise _not_the_format(_numbered_signal_lines(text)) from e
    if VLLM_METRICS.WAITING not in totals and VLLM_METRICS.RUNNING not in totals and not any(kv.values()):
        _refuse_what_is_not_an_exposition(text)
    kv_metric = next((name for name in (VLLM_METRICS.KV_CACHE, VLLM_METRICS.KV_CACHE_LEGACY) if kv[name]), None)
    engines_kv = kv[kv_metric] if kv_metric else []
    reading = ReplicaReading(
        waiting=totals.get(VLLM_METRICS.WAITING),
        running=totals.get(VLLM_METRICS.RUNNING),
        kv=sum(engines_kv) / len(engines_kv) if engines_kv else None,
        kv_metric=kv_metric,
        prompt_tokens=totals.get(VLLM_COUNTERS.PROMPT_TOKENS),
        generation_tokens=totals.get(VLLM_COUNTERS.GENERATION_TOKENS),
        counters_created=min(created) if created else None,
        ttft_buckets=tuple(sorted(ttft.items())) if ttft else None,
        ttft_created=min(ttft_created) if ttft_created else None,
    )
    if reading.waiting is None and reading.running is None and reading.kv is None:
        raise InvalidExposition("the body has none of vLLM's load metrics (is this a vLLM server?)")
    problems = invalid_signals(queue=reading.waiting, running=reading.running, kv=reading.kv, counts={
        f"prompt tokens ({VLLM_COUNTERS.PROMPT_TOKENS})": reading.prompt_tokens,
        f"generation tokens ({VLLM_COUNTERS.GENERATION_TOKENS})": reading.generation_tokens,
        **{f"TTFT requests up to {bound:g} s ({VLLM_TTFT.BUCKET})": count for bound, count in ttft.items()}})
    if problems:
        raise InvalidExposition("; ".join(problems))
    return reading


def _bucket_bound(label: str | None) -> float:
    """A bucket's ``le`` as a number (``+Inf`` is math.inf); :class:`InvalidExposition` if it is not one."""
    try:
        bound = float(label) if label is not None else math.nan
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise InvalidExposition(f"a {VLLM_TTFT.BUCKET} sample has no numeric le label")
    return bound


def _summed_histogram(parts: Iterable[tuple[tuple[float, ...], Rates]]) -> Histogram | None:
    """Per bucket bound, the sum over the replicas' increases (``(bounds, increases)`` each), as Prometheus'
    ``sum by (le)`` adds them; None if no replica has any."""
    by_bound: dict[float, list[float]] = {}
    for bounds, increases in parts:
        for bound, increase in zip(bounds, increases, strict=True):
            if increase is not None:
                by_bound.setdefault(bound, []).append(increase)
    return tuple((bound, math.fsum(by_bound[bound])) for bound in sorted(by_bound)) if by_bound else None


# The router's families as the parser names them: a counter's family drops ``_total`` (with a TYPE line).
_ROUTER_FAMILIES = {
    "poolpilot_router_requests": ROUTER_METRICS.REQUESTS, ROUTER_METRICS.REQUESTS: ROUTER_METRICS.REQUESTS,
    ROUTER_METRICS.IN_FLIGHT: ROUTER_METRICS.IN_FLIGHT,
    "poolpilot_router_spills": ROUTER_METRICS.SPILLS, ROUTER_METRICS.SPILLS: ROUTER_METRICS.SPILLS,
    "poolpilot_router_prompt_tokens": ROUTER_METRICS.PROMPT_TOKENS,
    ROUTER_METRICS.PROMPT_TOKENS: ROUTER_METRICS.PROMPT_TOKENS,
    "poolpilot_router_generation_tokens": ROUTER_METRICS.GENERATION_TOKENS,
    ROUTER_METRICS.GENERATION_TOKENS: ROUTER_METRICS.GENERATION_TOKENS,
}
# Of the token counters only the hosted API's series count: the pool's own tokens come from vLLM.
_API_ONLY = frozenset((ROUTER_METRICS.PROMPT_TOKENS, ROUTER_METRICS.GENERATION_TOKENS))
_ROUTER_CREATED = (ROUTER_METRICS.REQUESTS_CREATED, ROUTER_METRICS.SPILLS_CREATED,
                   ROUTER_METRICS.PROMPT_TOKENS_CREATED, ROUTER_METRICS.GENERATION_TOKENS_CREATED)


def parse_router_metrics(text: str) -> RouterReading:
    """The router's demand figures from its ``/metrics`` body (small: parsed whole); :class:`InvalidExposition`
    if it is not the router's."""
    totals: dict[str, float] = {}
    created: list[float] = []
    try:
        for family in text_string_to_metric_families(text):
            metric = _ROUTER_FAMILIES.get(family.name)
            if metric is not None:
                totals.setdefault(metric, 0.0)
            for sample in family.samples:
                if sample.name == metric:
                    if metric not in _API_ONLY or sample.labels.get("backend") == ROUTER_METRICS.API_BACKEND:
                        totals[metric] += float(sample.value)
                elif sample.name in _ROUTER_CREATED and math.isfinite(sample.value):
                    created.append(float(sample.value))
    except Exception as e:  # the parser raises ValueError mostly, but any failure means "not the format"
        raise _not_the_format(enumerate(text.split("\n"), start=1)) from e
    if not totals.keys() - _API_ONLY:  # token counters alone are not the router's demand
        raise InvalidExposition("the body has none of the router's metrics (poolpilot_router_requests_total, "
                                "poolpilot_router_in_flight, poolpilot_router_spills_total)")
    reading = RouterReading(requests=totals.get(ROUTER_METRICS.REQUESTS),
                            in_flight=totals.get(ROUTER_METRICS.IN_FLIGHT),
                            spills=totals.get(ROUTER_METRICS.SPILLS),
                            counters_created=min(created) if created else None,
                            api_prompt_tokens=totals.get(ROUTER_METRICS.PROMPT_TOKENS),
                            api_generation_tokens=totals.get(ROUTER_METRICS.GENERATION_TOKENS))
    problems = invalid_signals(queue=None, running=None, kv=None, counts={
        f"requests ({ROUTER_METRICS.REQUESTS})": reading.requests,
        f"requests in flight ({ROUTER_METRICS.IN_FLIGHT})": reading.in_flight,
        f"spills ({ROUTER_METRICS.SPILLS})": reading.spills,
        f"API prompt tokens ({ROUTER_METRICS.PROMPT_TOKENS})": reading.api_prompt_tokens,
        f"API generation tokens ({ROUTER_METRICS.GENERATION_TOKENS})": reading.api_generation_tokens})
    if problems:
        raise InvalidExposition("; ".join(problems))
    return reading


def _refuse_what_is_not_an_exposition(text: str) -> None:
    """No signal lines: say whether the body is another exporter's metrics or not metrics at all (an
    HTML error page, say). Only this failure path parses the body's head as a whole."""
    head = text[:4096].rsplit("\n", 1)[0] + "\n" if len(text) > 4096 else text
    try:
        for _family in text_string_to_metric_families(head):
            pass
    except Exception as e:
        raise _not_the_format(enumerate(head.split("\n"), start=1)) from e


class PodsSource:
    """A :class:`~controller.sources.metrics.base.MetricsSource` that scrapes the replicas themselves.

    The session and the concurrency bound are created on the first ``read`` and belong to
    that event loop (the operator's). The counters' last samples are kept per pool, for its
    replicas and router pods listed in the latest read of it; ``forget`` drops a pool's.
    """

    def __init__(self, *, timeout_seconds: float, max_concurrency: int = 32,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.timeout_seconds = timeout_seconds
        self.max_concurrency = max_concurrency
        self.max_body_bytes = max_body_bytes
        self._session_factory = session_factory or self._default_session
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_round = ReadStats()
        self.replica_counters = CounterMemory()  # vLLM's token counters, per replica URL
        self.router_counters = CounterMemory()  # the router's requests and spills, per router pod URL
        self.ttft_counters = CounterMemory(increases=True)  # vLLM's TTFT buckets, per replica URL

    @property
    def last_round(self) -> ReadStats:
        return self._last_round

    def _default_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_concurrency))

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def forget(self, key: PoolKey) -> None:
        """A pool is gone (or reads elsewhere now): drop its counters' samples."""
        self.replica_counters.forget(key)
        self.router_counters.forget(key)
        self.ttft_counters.forget(key)

    async def read(self, pools: Sequence[PoolTarget], *, now: datetime) -> SourceResults:
        started = time.monotonic()
        session, semaphore = self._bind_loop()
        # One scrape per distinct endpoint, even if (wrongly) listed under two pools.
        replica_urls = sorted({endpoint for pool in pools for endpoint in pool.endpoints})
        router_urls = sorted({address for pool in pools for address in pool.router_addresses})
        scrapes = [*(self._scrape(session, semaphore, url, parse_vllm_metrics) for url in replica_urls),
                   *(self._scrape(session, semaphore, url, parse_router_metrics) for url in router_urls)]
        answers = await asyncio.gather(*scrapes)
        replicas = dict(zip(replica_urls, answers[:len(replica_urls)], strict=True))
        routers = dict(zip(router_urls, answers[len(replica_urls):], strict=True))
        results: SourceResults = {pool.key: self._aggregate(pool, replicas, routers, now) for pool in pools}
        self._last_round = ReadStats(
            pools=len(pools), requests=len(answers),
            failed_requests=sum(isinstance(answer, ReplicaFailure) for answer in answers),
            problems=sum(isinstance(result, MetricsProblem) for result in results.values()),
            seconds=time.monotonic() - started,
        )
        logger.debug("pods round: %s", self._last_round)
        return results

    def _bind_loop(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("a PodsSource belongs to the event loop of its first read()")
        self._loop = loop
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        return self._session, self._semaphore

    async def _scrape(self, session: aiohttp.ClientSession, semaphore: asyncio.Semaphore, endpoint: str,
                      parse: Callable[[str], Reading]) -> Reading | ReplicaFailure:
        url = endpoint.rstrip("/") + "/metrics"
        try:
            async with semaphore:
                text = await fetch_metrics_text(session, url, timeout_seconds=self.timeout_seconds,
                                                max_body_bytes=self.max_body_bytes)
            return parse(text)
        except TimeoutError:
            failure = ReplicaFailure(MetricsProblemKind.TIMEOUT, f"{url}: no answer within {self.timeout_seconds:g} s")
        except InvalidExposition as e:
            failure = ReplicaFailure(MetricsProblemKind.INVALID, f"{url}: {e}")
        except (HTTPStatusError, RedirectRefused) as e:
            failure = ReplicaFailure(MetricsProblemKind.UNREACHABLE, f"{url}: {e}")
        except (aiohttp.ClientError, OSError) as e:
            failure = ReplicaFailure(MetricsProblemKind.UNREACHABLE, f"{url}: {type(e).__name__}: {e}")
        except Exception as e:  # never let one replica break the round; but say it loudly, it is a bug or worse
            logger.exception("scraping %s failed unexpectedly", url)
            failure = ReplicaFailure(MetricsProblemKind.UNREACHABLE, f"{url}: {type(e).__name__}: {e}")
        logger.info("%s skipped: %s", "router" if parse is parse_router_metrics else "replica", failure.message)
        return failure

    def _aggregate(self, pool: PoolTarget, replicas: Mapping[str, Reading | ReplicaFailure],
                   routers: Mapping[str, Reading | ReplicaFailure], now: datetime) -> PoolSignals | MetricsProblem:
        demand = self._router_demand(pool, routers, now)
        if not pool.endpoints:
            self.replica_counters.forget(pool.key)
            self.ttft_counters.forget(pool.key)
            if demand is not None:  # scaled to zero, but the router sees the demand: that is the reading
                return demand.into(PoolSignals(queue_depth=None, running_requests=None, kv_cache_utilization=None,
                                               replicas_reporting=0, observed_at=now))
            router_words = " (and its router did not answer)" if pool.router_addresses else ""
            return MetricsProblem(MetricsProblemKind.NO_READY_REPLICAS,
                                  f"the pool has no ready replicas to scrape{router_words}", now)
        mine = {endpoint: replicas[endpoint] for endpoint in dict.fromkeys(pool.endpoints)}
        readings = {url: outcome for url, outcome in mine.items() if isinstance(outcome, ReplicaReading)}
        failures = [outcome for outcome in mine.values() if isinstance(outcome, ReplicaFailure)]
        rates = self.replica_counters.advance(
            pool.key, pool.endpoints, {url: reading.counter_sample(now) for url, reading in readings.items()})
        ttft_samples = {url: sample for url, reading in readings.items()
                        if (sample := reading.ttft_sample(now)) is not None}
        ttft_increases = self.ttft_counters.advance(pool.key, pool.endpoints, ttft_samples)
        if not readings:
            kinds = Counter(failure.kind for failure in failures)
            kind = next(iter(kinds)) if len(kinds) == 1 else MetricsProblemKind.UNREACHABLE
            summary = ", ".join(f"{count} {_WORDS.get(k, k.value)}" for k, count in kinds.most_common())
            message = f"none of the {len(mine)} ready replicas answered ({summary}); first: {failures[0].message}"
            logger.warning("pool %s/%s: %s", pool.key[0], pool.key[1], message)
            return MetricsProblem(kind, message, now)
        if failures:
            logger.warning("pool %s/%s: %d of %d replicas skipped", pool.key[0], pool.key[1], len(failures), len(mine))
        waiting = [r.waiting for r in readings.values() if r.waiting is not None]
        running = [r.running for r in readings.values() if r.running is not None]
        kv = [r.kv for r in readings.values() if r.kv is not None]
        prompt_rate, generation_rate = summed_rates(rates.values(), 2)
        return (demand or RouterFigures()).into(PoolSignals(
            queue_depth=math.fsum(waiting) if waiting else None,
            running_requests=math.fsum(running) if running else None,
            kv_cache_utilization=math.fsum(kv) / len(kv) if kv else None,
            replicas_reporting=len(readings),
            observed_at=now,
            prompt_tokens_per_second=prompt_rate,
            generation_tokens_per_second=generation_rate,
            ttft_histogram=_summed_histogram((ttft_samples[url].keys, increases)
                                             for url, increases in ttft_increases.items()),
        ))

    def _router_demand(self, pool: PoolTarget, routers: Mapping[str, Reading | ReplicaFailure],
                       now: datetime) -> RouterFigures | None:
        """The router's figures over the pool's router pods that answered; None if none did."""
        mine = {address: routers[address] for address in dict.fromkeys(pool.router_addresses)}
        readings = {url: outcome for url, outcome in mine.items() if isinstance(outcome, RouterReading)}
        rates = self.router_counters.advance(
            pool.key, pool.router_addresses, {url: reading.counter_sample(now) for url, reading in readings.items()})
        if len(readings) < len(mine):
            logger.warning("pool %s/%s: %d of %d router pods did not answer", pool.key[0], pool.key[1],
                           len(mine) - len(readings), len(mine))
        if not readings:
            return None
        in_flight = [reading.in_flight for reading in readings.values() if reading.in_flight is not None]
        arrivals, spills, api_prompt, api_generation = summed_rates(rates.values(), 4)
        return RouterFigures(arrivals, math.fsum(in_flight) if in_flight else None, spills, api_prompt,
                             api_generation)


class HTTPStatusError(Exception):
    """An answer other than 200. Only the code is kept: the body is the server's, never repeated in a status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RedirectRefused(Exception):
    pass


async def fetch_metrics_text(session: aiohttp.ClientSession, url: str, *, timeout_seconds: float,
                             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> str:
    """One ``/metrics`` body, in the classic text format, within ``timeout_seconds`` in all.

    Redirects are followed by hand: old vLLM builds answer ``/metrics`` with a redirect to ``/metrics/``,
    but a replica (whose image the pool's editor picks) must not send the operator to another host.
    """
    target = url
    async with asyncio.timeout(timeout_seconds):
        for _hop in range(MAX_REDIRECTS + 1):
            async with session.get(target, headers={"Accept": _ACCEPT}, allow_redirects=False) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    following = urllib.parse.urljoin(target, response.headers["Location"])
                    if not _same_origin(following, target):
                        raise RedirectRefused(f"HTTP {response.status} redirected to another host; not followed")
                    target = following
                    continue
                if response.status != 200:
                    raise HTTPStatusError(response.status)
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > max_body_bytes:
                        raise InvalidExposition(f"the body is larger than {max_body_bytes} bytes")
                return body.decode("utf-8", errors="replace")
    raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects; not followed")


def _same_origin(url: str, other: str) -> bool:
    def origin(text: str) -> tuple[str, str | None, int | None]:
        parts = urllib.parse.urlsplit(text)
        return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)

    try:
        return origin(url) == origin(other)
    except ValueError:  # a Location with a port that is not a number
        return False


_WORDS = {
    MetricsProblemKind.TIMEOUT: "timed out",
    MetricsProblemKind.UNREACHABLE: "unreachable or failing",
    MetricsProblemKind.INVALID: "served invalid metrics",
}
