"""What PoolPilot reads from one replica, for on-call engineers (``poolpilot signals SOURCE``).

The text comes from a replica's metrics URL (fetched as the pods source fetches it: the same Accept
header, redirect rule, size bound), a file, or stdin, and goes through the pods source's own
:func:`~controller.sources.metrics.pods.parse_vllm_metrics`: what this prints is what the operator
sees, summed over ``engine``, KV from ``vllm:kv_cache_usage_perc`` or else ``vllm:gpu_cache_usage_perc``.
The token counters are shown as totals: the operator's rates need two scrapes, this is one. So is time to
first token: its percentile here (``--ttft-percentile``, the SLO's default 95) is over every request since
the replica started, through the same :func:`~controller.core.signals.ttft_quantile` the scaler reads a
pool's window with (and, as there, not read below ``MIN_TTFT_OBSERVATIONS`` requests).
Every failure is :class:`SignalsUnavailable`, one line; unlike a pool's status, which never quotes a
replica, it shows the offending line, for the engineer at the terminal.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
import urllib.parse
from typing import TextIO

import aiohttp

from controller.api.spec import SLOSpec
from controller.core.signals import MIN_TTFT_OBSERVATIONS, VLLM_METRICS, ttft_observations, ttft_quantile
from controller.sources.metrics.names import VLLM_COUNTERS, VLLM_TTFT
from controller.sources.metrics.pods import (
    HTTPStatusError,
    InvalidExposition,
    RedirectRefused,
    ReplicaReading,
    fetch_metrics_text,
    parse_vllm_metrics,
)

__all__ = ["DEFAULT_TTFT_PERCENTILE", "SignalsUnavailable", "describe_reading", "read_replica", "reading_as_json"]

_SHOWN_LINE_CHARACTERS = 120
DEFAULT_TTFT_PERCENTILE = SLOSpec().ttft_percentile  # what a pool's spec.slo reads unless it says otherwise


class SignalsUnavailable(Exception):
    """Why a source gave no signals, in one line."""


def read_replica(source: str, *, timeout_seconds: float, stdin: TextIO | None = None) -> ReplicaReading:
    """The signals in ``source``: an http(s) URL (no path: ``/metrics``), ``-`` for stdin, or a file path."""
    text = _load(source, timeout_seconds=timeout_seconds, stdin=stdin or sys.stdin)
    try:
        return parse_vllm_metrics(text)
    except InvalidExposition as e:
        shown = f": {_one_line(e.line)[:_SHOWN_LINE_CHARACTERS]!r}" if e.line is not None else ""
        raise SignalsUnavailable(f"{source}: {e}{shown}") from None


def reading_as_json(reading: ReplicaReading, ttft_percentile: float = DEFAULT_TTFT_PERCENTILE
                    ) -> dict[str, float | None]:
    return {"queueDepth": reading.waiting, "runningRequests": reading.running, "kvCacheUtilization": reading.kv,
            "promptTokensTotal": reading.prompt_tokens, "generationTokensTotal": reading.generation_tokens,
            "ttftPercentile": ttft_percentile, "ttftSeconds": ttft_quantile(reading.ttft_buckets, ttft_percentile),
            "ttftRequestsTotal": None if reading.ttft_buckets is None else ttft_observations(reading.ttft_buckets)}


def describe_reading(reading: ReplicaReading, ttft_percentile: float = DEFAULT_TTFT_PERCENTILE) -> str:
    """Six lines: each signal, its value (or that the text lacks it) and where it comes from."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    kv = number(reading.kv) if reading.kv is None else f"{reading.kv:.4g} ({reading.kv:.0%})"
    kv_source = f"{reading.kv_metric}, mean over engines" if reading.kv_metric else \
        f"not reported ({VLLM_METRICS.KV_CACHE} or {VLLM_METRICS.KV_CACHE_LEGACY})"
    rows = [
        ("queue depth", number(reading.waiting), _summed(VLLM_METRICS.WAITING, reading.waiting)),
        ("running requests", number(reading.running), _summed(VLLM_METRICS.RUNNING, reading.running)),
        ("KV-cache utilization", kv, kv_source),
        ("prompt tokens", number(reading.prompt_tokens), _summed(VLLM_COUNTERS.PROMPT_TOKENS, reading.prompt_tokens)),
        ("generation tokens", number(reading.generation_tokens),
         _summed(VLLM_COUNTERS.GENERATION_TOKENS, reading.generation_tokens)),
        _ttft_row(reading, ttft_percentile),
    ]
    return "\n".join(f"{name:<22}{value:<14}{where}" for name, value, where in rows)


def _ttft_row(reading: ReplicaReading, percentile: float) -> tuple[str, str, str]:
    name = f"TTFT p{percentile:g}"
    if reading.ttft_buckets is None:
        return name, "-", f"not reported ({VLLM_TTFT.HISTOGRAM})"
    seconds = ttft_quantile(reading.ttft_buckets, percentile)
    requests = f"{ttft_observations(reading.ttft_buckets):g}"
    if seconds is None:
        return name, "-", (f"{VLLM_TTFT.HISTOGRAM}: {requests} requests since the replica started, fewer than "
                           f"the {MIN_TTFT_OBSERVATIONS} it takes")
    return name, f"{seconds:.3g} s", (f"{VLLM_TTFT.HISTOGRAM}, {requests} requests since the replica started "
                                      "(the operator reads those between two scrapes)")


def _summed(metric: str, value: float | None) -> str:
    counter = " (a total: the operator rates it over two scrapes)" if metric.endswith("_total") else ""
    return f"{metric}, summed over engines{counter}" if value is not None else f"not reported ({metric})"


def _load(source: str, *, timeout_seconds: float, stdin: TextIO) -> str:
    if source == "-":
        return stdin.read()
    if urllib.parse.urlsplit(source).scheme.lower() in ("http", "https"):
        return asyncio.run(_fetch(source, timeout_seconds))
    try:
        return pathlib.Path(source).read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise SignalsUnavailable(f"{source}: {e.strerror or e}") from None


async def _fetch(url: str, timeout_seconds: float) -> str:
    if urllib.parse.urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + "/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            return await fetch_metrics_text(session, url, timeout_seconds=timeout_seconds)
    except TimeoutError:
        raise SignalsUnavailable(f"{url}: no answer within {timeout_seconds:g} s") from None
    except (HTTPStatusError, RedirectRefused, InvalidExposition) as e:
        raise SignalsUnavailable(f"{url}: {e}") from None
    except (aiohttp.ClientError, OSError, ValueError) as e:  # refused, DNS, not a URL aiohttp can use
        raise SignalsUnavailable(f"{url}: cannot connect: {_one_line(str(e)) or type(e).__name__}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
