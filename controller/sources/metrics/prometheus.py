"""Pool signals from Prometheus: ten PromQL queries per round, however many pools there are.

Why this shape:

- One query per signal for ALL pools (``sum by (namespace, pool)``), never one per pool:
  a cluster with 200 pools must not send 800 queries every evaluation. The rows are
  mapped back to the pools asked about; rows for other pools are ignored.
- Nothing from users is pasted into PromQL: the only values in the queries are the
  watched namespaces, escaped by :mod:`.promql`; label names are validated.
- Aggregation happens in Prometheus, so a pool of 40 replicas is still one row. Queue
  and running are summed over ``engine`` (data parallel) and replicas. KV is averaged
  per replica first and then over replicas, preferring ``vllm:kv_cache_usage_perc`` per
  series and falling back to the pre-0.9.2 ``vllm:gpu_cache_usage_perc`` (``or`` matches
  on all labels but the name), so a pool in the middle of a vLLM upgrade still counts
  every replica. This matches what the pods source computes.
- A fourth query returns each replica's newest sample time (``timestamp()``), which
  tells fresh data from samples Prometheus still returns but has stopped updating
  (a removed target's series answer instant queries for about two more scrape
  intervals; after a lost scrape pipeline, for up to the 5-minute lookback), and how
  many replicas report: ``replicas_reporting`` counts the fresh ones, while the sums
  may still include a just-removed replica's last values for those few seconds.
- Token rates are ``rate()`` of ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total`` over
  ``rate_window_seconds`` (per series, so a restarted replica's reset is handled by Prometheus), summed
  per pool. A counter needs two samples in the window: until then, no row, and the rate is None.
- The router's demand comes from its own series, ``poolpilot_router_*``: arrivals are the rate of
  ``requests_total`` (answered requests: under a steady load the arrival rate, a request's duration
  late), in flight is the gauge's sum, spills the rate of ``spills_total``, each summed per pool. The
  router's pods carry ``poolpilot.io/router: POOL`` rather than the pool label (which marks vLLM
  replicas), so its series are mapped onto the pool label with ``label_replace`` from ``router_label``;
  a series that already has the pool label keeps it. A router that has not spilled yet has no
  ``spills_total`` series (prometheus_client creates a labelled series at first use): its spills are 0
  while its requests are known, None otherwise. Bad router values make that figure None (logged),
  never the pool a problem; at zero replicas, router figures are the pool's reading (vLLM's None),
  not ``NoSamples``.
- The tokens the router sent to the hosted API (``poolpilot_router_prompt_tokens_total`` and
  ``..._generation_tokens_total`` with ``backend="api"``, rates as above) ride in the two token-rate
  queries, so they add no query: each is ``vLLM's rate by pool or the router's API rate by
  pool and backend``. The router's rows keep their ``backend`` label and vLLM's have none, so ``or`` keeps
  both and the rows tell themselves apart. Bad values make them None (logged), as the router's other figures.
- Time to first token: ``increase()`` of ``vllm:time_to_first_token_seconds_bucket`` over the same
  ``rate_window_seconds``, summed per pool and bucket bound (``sum by (le, namespace, pool)``): one row per
  pool and bound, the pool's ``ttft_histogram`` (the requests whose first token came within the window, per
  bucket; Prometheus extrapolates to the window's edges, so counts need not be whole). The percentile is
  the core's to compute, from the pool's SLO. A pool whose replicas expose no TTFT has no rows: None.
- The client (``prometheus-api-client``) is synchronous: each query runs in a thread,
  all of them concurrently, under one deadline. Retries are off: the next round is the retry.
- Failures become a ``MetricsProblem`` for every pool (unreachable, timeout) or for
  one pool (no samples, stale, invalid values); ``read`` does not raise for them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from controller.core.signals import VLLM_METRICS, MetricsProblem, MetricsProblemKind, PoolKey, PoolSignals
from controller.sources.metrics.base import PoolTarget, ReadStats, RouterFigures, SourceResults, invalid_signals
from controller.sources.metrics.names import ROUTER_METRICS, VLLM_COUNTERS, VLLM_TTFT
from controller.sources.metrics.promql import Matcher, aggregate, quote, selector, validate_label_name

__all__ = ["PrometheusQueries", "PrometheusSource", "build_queries"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SAMPLE_AGE_SECONDS = 60.0
DEFAULT_RATE_WINDOW_SECONDS = 60.0  # rate()'s range: at least two scrapes of the usual 15-30 s interval
_INSTANCE = "instance"  # set by Prometheus on every scraped series (host:port of the target)


@dataclass(frozen=True)
class PrometheusQueries:
    """The round's PromQL, built once per source."""

    queue: str
    running: str
    kv: str
    freshness: str
    prompt_rate: str
    generation_rate: str
    router_arrivals: str
    router_in_flight: str
    router_spills: str
    ttft_buckets: str

    def all(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _QUERY_NAMES}


_VALUE_QUERIES = ("queue", "running", "kv", "prompt_rate", "generation_rate")  # one row per pool
_ROUTER_QUERIES = ("router_arrivals", "router_in_flight", "router_spills")  # one row per pool
_QUERY_NAMES = (*_VALUE_QUERIES[:3], "freshness", *_VALUE_QUERIES[3:], *_ROUTER_QUERIES, "ttft_buckets")
# The router's API token rates, answered by the token-rate queries as rows with a backend label.
_ROUTER_API_ROWS = {"prompt_rate": "router_api_prompt", "generation_rate": "router_api_generation"}
_BACKEND = "backend"


def build_queries(*, pool_label: str, namespace_label: str, namespaces: Sequence[str] = (),
                  router_label: str = "poolpilot_io_router",
                  rate_window_seconds: float = DEFAULT_RATE_WINDOW_SECONDS) -> PrometheusQueries:
    """Per (namespace, pool): queue, running, KV, the token rates and the router's three figures; per
    replica the newest sample time; per pool and bucket bound, the TTFT requests over the window."""
    validate_label_name(router_label)
    if not (math.isfinite(rate_window_seconds) and rate_window_seconds >= 1):
        raise ValueError("rate_window_seconds must be at least 1")  # and then a whole number of milliseconds
    in_namespaces = [Matcher.one_of(namespace_label, namespaces)] if namespaces else []
    matchers = [Matcher(pool_label, "!=", ""), *in_namespaces]
    by_pool = [namespace_label, pool_label]
    by_replica = [*by_pool, _INSTANCE]
    milliseconds = round(rate_window_seconds * 1000)  # PromQL durations are integers with a unit
    window = f"[{milliseconds // 1000}s]" if milliseconds % 1000 == 0 else f"[{milliseconds}ms]"

    def series(metric: str) -> str:
        return selector(metric, matchers)

    def router_series(expression: str) -> str:
        """The router's series, labelled with the pool they serve (from ``router_label``, if set)."""
        return f"label_replace({expression}, {quote(pool_label)}, \"$1\", {quote(router_label)}, \"(.+)\")"

    def router_rate(metric: str) -> str:
        return aggregate("sum", by_pool, router_series(f"rate({selector(metric, in_namespaces)}{window})"))

    def token_rate(vllm_metric: str, router_metric: str) -> str:
        """vLLM's rate per pool, or (rows with a backend label) the router's rate of tokens sent to the API."""
        api_only = [Matcher(_BACKEND, "=", ROUTER_METRICS.API_BACKEND), *in_namespaces]
        router = aggregate("sum", [*by_pool, _BACKEND],
                           router_series(f"rate({selector(router_metric, api_only)}{window})"))
        return f"{aggregate('sum', by_pool, f'rate({series(vllm_metric)}{window})')} or {router}"

    kv_per_series = f"{series(VLLM_METRICS.KV_CACHE)} or {series(VLLM_METRICS.KV_CACHE_LEGACY)}"
    arrivals = router_rate(ROUTER_METRICS.REQUESTS)
    return PrometheusQueries(
        queue=aggregate("sum", by_pool, series(VLLM_METRICS.WAITING)),
        running=aggregate("sum", by_pool, series(VLLM_METRICS.RUNNING)),
        kv=aggregate("avg", by_pool, aggregate("avg", by_replica, kv_per_series)),
        freshness=aggregate("max", by_replica, f"timestamp({series(VLLM_METRICS.WAITING)})"),
        prompt_rate=token_rate(VLLM_COUNTERS.PROMPT_TOKENS, ROUTER_METRICS.PROMPT_TOKENS),
        generation_rate=token_rate(VLLM_COUNTERS.GENERATION_TOKENS, ROUTER_METRICS.GENERATION_TOKENS),
        router_arrivals=arrivals,
        router_in_flight=aggregate("sum", by_pool, router_series(selector(ROUTER_METRICS.IN_FLIGHT, in_namespaces))),
        # No spills series before the first spill: 0 for the pools whose router reports requests.
        router_spills=f"{router_rate(ROUTER_METRICS.SPILLS)} or (0 * {arrivals})",
        ttft_buckets=aggregate("sum", [VLLM_TTFT.BOUND_LABEL, *by_pool],
                               f"increase({series(VLLM_TTFT.BUCKET)}{window})"),
    )


class _Client:
    """A typed face on ``PrometheusConnect`` (whose annotations, where it has any, say ``int`` seconds)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        connect: Any = PrometheusConnect  # requests takes float seconds; the library's hints say int
        self._connect: Any = connect(url=url, retry=Retry(total=0), timeout=timeout_seconds)
        # Only allowed URLs are queried (POOLPILOT_ALLOWED_PROMETHEUS_URLS): a redirect could lead anywhere.
        self._connect._session.max_redirects = 0

    def query(self, promql: str, timeout_seconds: float) -> list[dict[str, Any]]:
        # Prometheus' own timeout stops the evaluation server-side too; requests' stops the socket wait.
        result = self._connect.custom_query(promql, params={"timeout": f"{timeout_seconds:g}s"},
                                            timeout=timeout_seconds)
        if not isinstance(result, list) or not all(isinstance(row, dict) for row in result):
            raise ValueError("the query result is not a list of series")
        return result

    def close(self) -> None:
        close = getattr(self._connect, "close", None)  # PrometheusConnect.close() is recent; its session is not
        if close is not None:
            close()
        else:
            self._connect._session.close()


class _RoundFailed(Exception):
    def __init__(self, kind: MetricsProblemKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class PrometheusSource:
    """A :class:`~controller.sources.metrics.base.MetricsSource` reading one Prometheus."""

    def __init__(self, url: str, *, timeout_seconds: float, pool_label: str = "poolpilot_io_pool",
                 namespace_label: str = "namespace", router_label: str = "poolpilot_io_router",
                 max_sample_age_seconds: float = DEFAULT_MAX_SAMPLE_AGE_SECONDS,
                 rate_window_seconds: float = DEFAULT_RATE_WINDOW_SECONDS,
                 namespaces: Sequence[str] = ()) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if max_sample_age_seconds <= 0:
            raise ValueError("max_sample_age_seconds must be positive")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_sample_age_seconds = max_sample_age_seconds
        self.pool_label = validate_label_name(pool_label)
        self.namespace_label = validate_label_name(namespace_label)
        self.queries = build_queries(pool_label=pool_label, namespace_label=namespace_label,
                                     namespaces=tuple(namespaces), router_label=router_label,
                                     rate_window_seconds=rate_window_seconds)
        self._client = _Client(self.url, timeout_seconds)
        self._last_round = ReadStats()

    @property
    def last_round(self) -> ReadStats:
        return self._last_round

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def read(self, pools: Sequence[PoolTarget], *, now: datetime) -> SourceResults:
        if not pools:
            self._last_round = ReadStats()
            return {}
        started = time.monotonic()
        queries = self.queries.all()
        try:
            rows = await self._run_all(queries)
        except _RoundFailed as failure:
            logger.warning("Prometheus at %s: %s (%d pools without signals)", self.url, failure.message, len(pools))
            results: SourceResults = {pool.key: MetricsProblem(failure.kind, failure.message, now) for pool in pools}
            failed = len(queries)
        else:
            indexed = self._index(rows)
            results = {pool.key: self._pool_result(pool.key, indexed, now) for pool in pools}
            failed = 0
        problems = sum(isinstance(result, MetricsProblem) for result in results.values())
        self._last_round = ReadStats(pools=len(pools), requests=len(queries), failed_requests=failed,
                                     problems=problems, seconds=time.monotonic() - started)
        logger.debug("Prometheus round: %s", self._last_round)
        return results

    # --- querying -------------------------------------------------------------------------

    async def _run_all(self, queries: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
        names = list(queries)
        tasks = [asyncio.to_thread(self._query, queries[name]) for name in names]
        try:
            async with asyncio.timeout(self.timeout_seconds):
                answers = await asyncio.gather(*tasks, return_exceptions=True)
        except TimeoutError:
            raise _RoundFailed(MetricsProblemKind.TIMEOUT,
                               f"Prometheus did not answer within {self.timeout_seconds:g} s") from None
        failures = [answer for answer in answers if isinstance(answer, BaseException)]
        if failures:
            raise self._classify(failures[0]) from failures[0]
        return {name: answer for name, answer in zip(names, answers, strict=True)
                if not isinstance(answer, BaseException)}

    def _query(self, promql: str) -> list[dict[str, Any]]:
        return self._client.query(promql, self.timeout_seconds)

    def _classify(self, error: BaseException) -> _RoundFailed:
        if isinstance(error, requests.Timeout | TimeoutError):
            return _RoundFailed(MetricsProblemKind.TIMEOUT,
                                f"Prometheus did not answer within {self.timeout_seconds:g} s ({error})")
        if isinstance(error, requests.TooManyRedirects):
            return _RoundFailed(MetricsProblemKind.UNREACHABLE,
                                f"Prometheus at {self.url} answered with a redirect, which is not followed: "
                                "configure the URL it redirects to (and allow it)")
        if isinstance(error, requests.ConnectionError):
            return _RoundFailed(MetricsProblemKind.UNREACHABLE,
                                f"cannot connect to Prometheus at {self.url}: {_connection_reason(error)}")
        # What Prometheus (or a proxy in front of it) answered is never repeated: the message goes into the
        # pool's status and Events, and an error page may carry anything. The status code says enough.
        if isinstance(error, PrometheusApiClientException):
            status = re.match(r"HTTP Status Code (\d+)", str(error))
            return _RoundFailed(MetricsProblemKind.UNREACHABLE,
                                f"Prometheus answered HTTP {status.group(1)}" if status
                                else "Prometheus answered with an error")
        # A body that is not Prometheus' JSON (a proxy's error page, a wrong URL), or anything else.
        return _RoundFailed(MetricsProblemKind.UNREACHABLE,
                            f"unexpected answer from Prometheus (not its query API's JSON: {type(error).__name__})")

    # --- mapping rows to pools ------------------------------------------------------------

    def _pool_result(self, key: PoolKey, rows: _IndexedRows, now: datetime) -> PoolSignals | MetricsProblem:
        values = {name: rows.values[name].get(key) for name in _VALUE_QUERIES}
        demand = self._router_demand(key, rows)
        replica_times = [t for t in rows.replica_times.get(key, ()) if math.isfinite(t)]
        if all(values[name] is None for name in ("queue", "running", "kv")) and not replica_times:
            if demand.known:  # no replicas, but the router sees demand
                return demand.into(PoolSignals(queue_depth=None, running_requests=None, kv_cache_utilization=None,
                                               replicas_reporting=0, observed_at=now))
            return MetricsProblem(MetricsProblemKind.NO_SAMPLES,
                                  f"Prometheus has no vLLM samples for pool {key[1]!r} in namespace {key[0]!r} "
                                  f"(series labels {self.namespace_label}, {self.pool_label})", now)
        ttft = tuple(sorted(rows.ttft.get(key, {}).items())) or None
        invalid = invalid_signals(queue=values["queue"], running=values["running"], kv=values["kv"], counts={
            f"prompt tokens per second (rate of {VLLM_COUNTERS.PROMPT_TOKENS})": values["prompt_rate"],
            f"generation tokens per second (rate of {VLLM_COUNTERS.GENERATION_TOKENS})": values["generation_rate"],
            **{f"TTFT requests up to {bound:g} s (increase of {VLLM_TTFT.BUCKET})": count
               for bound, count in ttft or ()}})
        if invalid:
            message = "Prometheus returned invalid values: " + "; ".join(invalid)
            logger.warning("pool %s/%s: %s", key[0], key[1], message)
            return MetricsProblem(MetricsProblemKind.INVALID, message, now)
        now_ts = now.timestamp()
        fresh = [t for t in replica_times if now_ts - t <= self.max_sample_age_seconds]
        if replica_times and not fresh:
            age = now_ts - max(replica_times)
            return MetricsProblem(MetricsProblemKind.STALE,
                                  f"the newest vLLM sample of this pool is {age:.1f} s old "
                                  f"(allowed: {self.max_sample_age_seconds:g} s): its replicas are no longer "
                                  f"scraped", now)
        return demand.into(PoolSignals(queue_depth=values["queue"], running_requests=values["running"],
                                       kv_cache_utilization=values["kv"], replicas_reporting=len(fresh),
                                       observed_at=now, prompt_tokens_per_second=values["prompt_rate"],
                                       generation_tokens_per_second=values["generation_rate"],
                                       ttft_histogram=ttft))

    def _router_demand(self, key: PoolKey, rows: _IndexedRows) -> RouterFigures:
        """The router's figures; one Prometheus returned bad is None (and logged)."""
        figures = []
        for name, what in (("router_arrivals", f"rate of {ROUTER_METRICS.REQUESTS}"),
                           ("router_in_flight", ROUTER_METRICS.IN_FLIGHT),
                           ("router_spills", f"rate of {ROUTER_METRICS.SPILLS}"),
                           ("router_api_prompt", f"rate of {ROUTER_METRICS.PROMPT_TOKENS} to the API"),
                           ("router_api_generation", f"rate of {ROUTER_METRICS.GENERATION_TOKENS} to the API")):
            value = rows.values[name].get(key)
            if value is not None and invalid_signals(queue=None, running=None, kv=None, counts={what: value}):
                logger.warning("pool %s/%s: Prometheus returned %s for the router's %s; left out",
                               key[0], key[1], value, what)
                value = None
            figures.append(value)
        return RouterFigures(*figures)

    def _index(self, rows: Mapping[str, list[dict[str, Any]]]) -> _IndexedRows:
        """Rows by pool, once per round (not a scan per pool)."""
        indexed = _IndexedRows()
        for name in _ROUTER_API_ROWS.values():
            indexed.values[name] = {}
        for name in (*_VALUE_QUERIES, *_ROUTER_QUERIES):
            by_key = indexed.values[name] = {}
            for row in rows[name]:
                key = self._key_of(row)
                if key is None:
                    continue
                if name in _ROUTER_API_ROWS and _BACKEND in row.get("metric", {}):
                    indexed.values[_ROUTER_API_ROWS[name]][key] = _sample_value(row)
                else:
                    by_key[key] = _sample_value(row)
        for row in rows["freshness"]:
            key = self._key_of(row)
            if key is not None:
                indexed.replica_times.setdefault(key, []).append(_sample_value(row))
        for row in rows["ttft_buckets"]:
            key = self._key_of(row)
            if key is not None:
                bound = _bucket_bound(row)
                indexed.ttft.setdefault(key, {})[bound] = math.nan if math.isnan(bound) else _sample_value(row)
        return indexed

    def _key_of(self, row: Mapping[str, Any]) -> PoolKey | None:
        labels = row.get("metric")
        if not isinstance(labels, Mapping):
            return None
        namespace, pool = labels.get(self.namespace_label), labels.get(self.pool_label)
        if not isinstance(namespace, str) or not isinstance(pool, str):
            return None
        return namespace, pool


@dataclass
class _IndexedRows:
    values: dict[str, dict[PoolKey, float]] = field(default_factory=dict)
    replica_times: dict[PoolKey, list[float]] = field(default_factory=dict)
    ttft: dict[PoolKey, dict[float, float]] = field(default_factory=dict)  # per pool: bucket bound -> requests


def _bucket_bound(row: Mapping[str, Any]) -> float:
    """A row's ``le`` as a number (``+Inf`` is math.inf); NaN if it has none (its count is then NaN: invalid)."""
    try:
        return float(row["metric"][VLLM_TTFT.BOUND_LABEL])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _sample_value(row: Mapping[str, Any]) -> float:
    """The value of an instant-vector row, ``[<time>, "<value>"]``; NaN if it cannot be read."""
    try:
        return float(row["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return math.nan


def _connection_reason(error: BaseException) -> str:
    """'[Errno 111] Connection refused' out of requests' nested 'Max retries exceeded ... (Caused by ...)'."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    return found.group(0).strip() if found else f"{_first_line(error):.300}"


def _first_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text.strip() else type(error).__name__
