"""Request traces for the simulator: real ones read from files, and a seeded synthetic one.

Every trace is a list of :class:`~controller.sim.request.SimRequest` sorted by arrival (ties keep the file's
order), ids ``0..n-1`` in that order, arrivals in seconds.

Readers (the Azure LLM 2023 CSVs and the Mooncake conversation trace, see ``../shared/data/README.md``) put
the first request at 0.0 and every other one relative to it. Timestamps are parsed to whole nanoseconds
and subtracted as integers, so the Azure trace's 7 fractional digits survive the parse exactly; the one
rounding is the final division to float seconds. Rows may be out of order (they are sorted). What a reader
rejects, with a :class:`TraceError` naming the file and the line: an empty file, a header without the
expected columns, a row with the wrong number of fields, a timestamp that does not parse, a token count
that is not a whole number, and a token count below 1. Zero tokens is a rejection by choice: vLLM refuses
an empty prompt and generates at least one token per request (TTFT is measured at it), and a trace row
with zero output tokens records a failed request (BurstGPT's "fails" are exactly those rows), whose cost
this model cannot say. None of the three real files has such a row.

The synthetic trace (:func:`synthetic_trace`) is the default when no file is at hand: a day's shape
compressed into the run (a sinusoid between 0.4x and 1.6x the mean rate, lowest at the start and the end),
a few seeded bursts of several times the rate lasting 30-120 s, Poisson arrivals within. Its token lengths
are drawn from the Azure conv trace's own quantiles; the prompt and output lengths are drawn independently
(the real trace's correlation between them is not modelled).

:func:`load_trace` names a trace for the CLI: a path, ``synthetic``, or a short name of a file under the
data directory. ``rate_scale`` k raises a file's rate k times in one of two ways (data/README.md: "scale the
rate (compress time) or superimpose shifted copies; say which"); the trace's ``source`` says which:

* ``superimpose`` (the default): k copies of the trace laid over each other, copy i shifted circularly by
  i/k of its span (a fractional k adds one more copy, thinned to its share, seeded). The trace keeps its
  hour and its bursts' shapes; a one-hour trace at 3x is an hour at three times the rate.
* ``compress``: every arrival divided by k, so an hour of the file lasts 60/k minutes.

``duration_seconds`` then cuts the trace. A real trace is never looped: asked for more than it holds, it ends
where it ends.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from controller.sim.request import SimRequest

__all__ = [
    "SHORT_NAMES",
    "Trace",
    "TraceError",
    "default_data_dir",
    "load_trace",
    "read_azure_csv",
    "read_mooncake_jsonl",
    "synthetic_trace",
]


class TraceError(ValueError):
    """A trace file that cannot be read: the message names the file, the line, and what is wrong."""


@dataclass(frozen=True)
class Trace:
    """A request trace ready for a run: its requests (as read, never served), its length, and its source.

    ``source`` is the one line a report prints about it: file, licence, and any rate scaling or cut.
    """

    name: str
    requests: tuple[SimRequest, ...]
    duration_seconds: float
    source: str

    def __post_init__(self) -> None:
        if self.duration_seconds <= 0:
            raise ValueError(f"trace {self.name!r}: duration must be positive, got {self.duration_seconds}")

    @property
    def mean_rate(self) -> float:
        """Requests per second over the whole duration."""
        return len(self.requests) / self.duration_seconds

    @property
    def mean_prompt_tokens(self) -> float:
        return _mean(request.prompt_tokens for request in self.requests)

    @property
    def mean_output_tokens(self) -> float:
        return _mean(request.output_tokens for request in self.requests)

    def rate_per_window(self, window_seconds: float = 60.0) -> list[float]:
        """Arrivals per second in consecutive windows from 0 to the duration.

        A last, partial window is still divided by the full window length: a few requests in its short
        span must not read as a spike.
        """
        if window_seconds <= 0:
            raise ValueError(f"window must be positive, got {window_seconds}")
        windows = max(1, math.ceil(self.duration_seconds / window_seconds))
        counts = [0] * windows
        for request in self.requests:
            counts[min(windows - 1, int(request.arrival // window_seconds))] += 1
        return [count / window_seconds for count in counts]

    def peak_rate(self, window_seconds: float = 60.0) -> float:
        """The highest arrival rate (requests per second) of any window."""
        return max(self.rate_per_window(window_seconds))

    def fresh_requests(self) -> list[SimRequest]:
        """New, unserved copies of the requests: one run fills in its own, the trace stays as read."""
        return [
            SimRequest(id=request.id, arrival=request.arrival, prompt_tokens=request.prompt_tokens,
                       output_tokens=request.output_tokens)
            for request in self.requests
        ]


def _mean(values: Iterable[int]) -> float:
    total = count = 0
    for value in values:
        total += value
        count += 1
    return total / count if count else 0.0


# ---------------------------------------------------------------------------------------------------------
# Readers


_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# 2023-11-16 18:15:46.6805900; the 2024 week traces add an offset (papers-and-traces.md §2.1).
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?"
)
_NANOSECONDS = 1_000_000_000


def read_azure_csv(path: Path | str) -> list[SimRequest]:
    """The Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``; more columns are
    ignored, in any order).
    """
    path = Path(path)
    rows: list[tuple[int, int, int]] = []
    with path.open(encoding="utf-8-sig") as lines:
        header: dict[str, int] | None = None
        width = timestamp_at = prompt_at = output_at = 0
        for line_number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            fields = [field.strip() for field in text.split(",")]
            if header is None:
                header = _azure_header(path, line_number, fields)
                width = len(fields)
                timestamp_at, prompt_at, output_at = (header[column] for column in _AZURE_COLUMNS)
                continue
            if len(fields) != width:
                raise TraceError(f"{path}, line {line_number}: expected {width} fields, got {len(fields)}: {text!r}")
            where = f"{path}, line {line_number}"
            rows.append((
                _timestamp_nanoseconds(fields[timestamp_at], where),
                _token_count(fields[prompt_at], "ContextTokens", where),
                _token_count(fields[output_at], "GeneratedTokens", where),
            ))
    if header is None:
        raise TraceError(f"{path}: empty file (expected the header {','.join(_AZURE_COLUMNS)})")
    if not rows:
        raise TraceError(f"{path}: no requests after the header")
    return _requests(rows, _NANOSECONDS)


def _azure_header(path: Path, line_number: int, fields: list[str]) -> dict[str, int]:
    positions = {name: index for index, name in enumerate(fields)}
    missing = [column for column in _AZURE_COLUMNS if column not in positions]
    if missing:
        raise TraceError(
            f"{path}, line {line_number}: bad header {','.join(fields)!r}: missing column(s) {', '.join(missing)}"
            f" (expected {','.join(_AZURE_COLUMNS)})"
        )
    return positions


_days_cache: dict[tuple[int, int, int], int] = {}


def _timestamp_nanoseconds(text: str, where: str) -> int:
    """Whole nanoseconds since 0001-01-01 (UTC when the timestamp has an offset): exact, no float."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise TraceError(f"{where}: unparseable timestamp {text!r} (expected e.g. 2023-11-16 18:15:46.6805900)")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    key = (year, month, day)
    days = _days_cache.get(key)
    if days is None:
        try:
            days = date(year, month, day).toordinal()
        except ValueError as error:
            raise TraceError(f"{where}: unparseable timestamp {text!r}: {error}") from None
        _days_cache[key] = days
    if hour > 23 or minute > 59 or second > 59:
        raise TraceError(f"{where}: unparseable timestamp {text!r}: time of day out of range")
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3_600 + int(digits[2:]) * 60)
    nanoseconds = int(fraction.ljust(9, "0")) if fraction else 0
    return seconds * _NANOSECONDS + nanoseconds


def _token_count(text: str, column: str, where: str) -> int:
    """A CSV field's token count."""
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise TraceError(f"{where}: {column} is not a whole number: {text!r}")
    return _positive(int(text), column, where)


def _json_token_count(value: object, column: str, where: str) -> int:
    """A JSON value's token count: a number (an integral float is taken), never a string or a boolean."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{where}: {column} is not a whole number: {value!r}")
    return _positive(value, column, where)


def _positive(value: int, column: str, where: str) -> int:
    if value < 0:
        raise TraceError(f"{where}: {column} is negative: {value}")
    if value == 0:
        raise TraceError(f"{where}: {column} is 0 (a request has at least one prompt and one output token)")
    return value


def read_mooncake_jsonl(path: Path | str) -> list[SimRequest]:
    """The Mooncake trace: JSON lines with ``timestamp`` (ms), ``input_length``, ``output_length``.

    ``hash_ids`` (the prompt's 512-token prefix blocks) are ignored: the replica model has no prefix
    cache, so prefix reuse does not change what a request costs here.
    """
    path = Path(path)
    rows: list[tuple[int | float, int, int]] = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            where = f"{path}, line {line_number}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise TraceError(f"{where}: not JSON: {error.msg}") from None
            if not isinstance(row, dict):
                raise TraceError(f"{where}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in ("timestamp", "input_length", "output_length") if key not in row]
            if missing:
                raise TraceError(f"{where}: missing field(s) {', '.join(missing)}")
            timestamp = row["timestamp"]
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
                raise TraceError(f"{where}: unparseable timestamp {timestamp!r} (expected milliseconds)")
            rows.append((
                timestamp,
                _json_token_count(row["input_length"], "input_length", where),
                _json_token_count(row["output_length"], "output_length", where),
            ))
    if not rows:
        raise TraceError(f"{path}: empty file")
    return _requests(rows, 1000)


def _requests(rows: Sequence[tuple[int | float, int, int]], per_second: int) -> list[SimRequest]:
    """Sort by time (stable), start at the first request, number them; times are in 1/per_second units."""
    rows = sorted(rows, key=lambda row: row[0])
    start = rows[0][0]
    return [
        SimRequest(id=index, arrival=(time - start) / per_second, prompt_tokens=prompt, output_tokens=output)
        for index, (time, prompt, output) in enumerate(rows)
    ]


# ---------------------------------------------------------------------------------------------------------
# The synthetic trace

# The Azure LLM 2023 conv trace (traces/azure-llm-2023/AzureLLMInferenceTrace_conv_2023.csv, 19,366 rows),
# computed once from the file: token counts at these cumulative probabilities (linear interpolation between
# order statistics). Prompt mean 1,155, p50 1,020, p90 2,735; output mean 211, p50 129, p90 424
# (papers-and-traces.md §2.1 gives the same figures). Sampling by linear interpolation in this table gives
# means of 1,149 and 211.
_CONV_PROBABILITIES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
                       0.8, 0.85, 0.9, 0.95, 0.99, 0.999, 1.0)
_CONV_PROMPT_TOKENS = (2, 181, 207, 372, 387, 396, 403, 414, 703, 984, 1020, 1045, 1071, 1097, 1130, 1189,
                       1315, 1876, 2734, 4083, 4142, 6179, 14050)
_CONV_OUTPUT_TOKENS = (7, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395, 400, 411, 424,
                       451, 601, 954, 1000)
# 19,366 requests over 3,501.7 s (papers-and-traces.md §2.1: 5.53 rps, Azure LLM 2023 conv).
AZURE_CONV_MEAN_RATE = 5.53
# The code trace's busiest minute is 3x its mean (585 vs 196 requests, papers-and-traces.md §2.1): bursts
# of 2-4x the rate around it.
_BURST_MULTIPLIER = (2.0, 4.0)


def synthetic_trace(
    *,
    duration_seconds: float,
    mean_rate: float,
    seed: int,
    diurnal_low: float = 0.4,
    diurnal_high: float = 1.6,
    bursts_per_hour: float = 3.0,
    burst_multiplier: tuple[float, float] = _BURST_MULTIPLIER,
    burst_seconds: tuple[float, float] = (30.0, 120.0),
) -> list[SimRequest]:
    """A seeded trace: a diurnal sinusoid over the duration, a few bursts, Poisson arrivals, conv-like tokens.

    The rate follows ``low + (high - low) * (1 - cos(2 pi t / duration)) / 2`` times the mean (lowest at the
    start and the end, highest in the middle); each burst multiplies it by a seeded factor in
    ``burst_multiplier`` for a seeded span in ``burst_seconds``. The whole shape is scaled so the expected
    number of requests is ``mean_rate * duration_seconds``. Bursts: ``bursts_per_hour`` of the duration,
    rounded, at least one unless 0 is asked. Times start at the window's start (0.0), not at a request.
    """
    if duration_seconds <= 0 or mean_rate <= 0:
        raise ValueError(f"synthetic trace needs a positive duration and rate, got {duration_seconds}, {mean_rate}")
    if not 0 <= diurnal_low <= diurnal_high:
        raise ValueError(f"diurnal range must satisfy 0 <= low <= high, got {diurnal_low}, {diurnal_high}")
    rng = random.Random(seed)
    middle, amplitude = (diurnal_low + diurnal_high) / 2, (diurnal_high - diurnal_low) / 2
    omega = 2 * math.pi / duration_seconds

    def diurnal_integral(start: float, end: float) -> float:
        return middle * (end - start) - amplitude / omega * (math.sin(omega * end) - math.sin(omega * start))

    count = 0 if bursts_per_hour <= 0 else max(1, round(bursts_per_hour * duration_seconds / 3600))
    bursts: list[tuple[float, float, float]] = []  # (start, end, extra rate as a multiple of the diurnal one)
    for _ in range(count):
        length = min(duration_seconds, rng.uniform(*burst_seconds))
        start = rng.uniform(0.0, duration_seconds - length)
        bursts.append((start, start + length, rng.uniform(*burst_multiplier) - 1.0))
    shape_integral = diurnal_integral(0.0, duration_seconds) + sum(
        extra * diurnal_integral(start, end) for start, end, extra in bursts
    )
    scale = mean_rate * duration_seconds / shape_integral

    def thinned(start: float, end: float, factor: float) -> list[float]:
        """Poisson arrivals in [start, end) at factor * scale * diurnal(t), by thinning at its maximum."""
        bound = factor * scale * diurnal_high
        arrivals: list[float] = []
        if bound <= 0:
            return arrivals
        t = start
        while True:
            t += rng.expovariate(bound)
            if t >= end:
                return arrivals
            if rng.random() * diurnal_high < middle - amplitude * math.cos(omega * t):
                arrivals.append(t)

    arrivals = thinned(0.0, duration_seconds, 1.0)
    for start, end, extra in bursts:
        arrivals.extend(thinned(start, end, extra))
    arrivals.sort()
    return [
        SimRequest(id=index, arrival=arrival,
                   prompt_tokens=_conv_tokens(rng.random(), _CONV_PROMPT_TOKENS),
                   output_tokens=_conv_tokens(rng.random(), _CONV_OUTPUT_TOKENS))
        for index, arrival in enumerate(arrivals)
    ]


def _conv_tokens(u: float, quantiles: Sequence[int]) -> int:
    """The token count at cumulative probability u, interpolated in the conv trace's quantile table."""
    index = min(len(_CONV_PROBABILITIES) - 2, bisect.bisect_right(_CONV_PROBABILITIES, u) - 1)
    low_p, high_p = _CONV_PROBABILITIES[index], _CONV_PROBABILITIES[index + 1]
    low, high = quantiles[index], quantiles[index + 1]
    return max(1, round(low + (high - low) * (u - low_p) / (high_p - low_p)))


# ---------------------------------------------------------------------------------------------------------
# Naming a trace


@dataclass(frozen=True)
class _KnownFile:
    relative_path: str  # under the data directory
    label: str  # for the report's source line


# data/README.md: the files, their sources and licences.
SHORT_NAMES: dict[str, _KnownFile] = {
    "azure-conv": _KnownFile("traces/azure-llm-2023/AzureLLMInferenceTrace_conv_2023.csv",
                             "Azure LLM 2023 conv (CC-BY-4.0)"),
    "azure-code": _KnownFile("traces/azure-llm-2023/AzureLLMInferenceTrace_code_2023.csv",
                             "Azure LLM 2023 code (CC-BY-4.0)"),
    "mooncake": _KnownFile("traces/mooncake/mooncake_conversation_trace.jsonl",
                           "Mooncake conversation trace (Apache-2.0)"),
}
_DEFAULT_SYNTHETIC_SECONDS = 3600.0  # as long as the real traces (~1 h each, data/README.md)


def default_data_dir() -> Path:
    """``$POOLPILOT_DATA_DIR`` if set, else ``shared/data`` beside the repository (``<repo>/../shared/data``)."""
    configured = os.environ.get("POOLPILOT_DATA_DIR")
    if configured:
        return Path(configured)
    repository = Path(__file__).resolve().parents[2]  # controller/sim/traces.py -> the repository
    return repository.parent / "shared" / "data"


def load_trace(
    spec: str,
    *,
    duration_seconds: float | None = None,
    rate_scale: float = 1.0,
    seed: int = 0,
    data_dir: Path | None = None,
    rate_mode: str = "superimpose",
) -> Trace:
    """The trace ``spec`` names: ``synthetic``, a short name (:data:`SHORT_NAMES`), or a file path.

    A path's format follows its extension (``.csv`` Azure, ``.jsonl``/``.json`` Mooncake), else its first
    character (``{`` Mooncake). ``rate_scale`` k divides every arrival by k (for ``synthetic`` it multiplies
    the mean rate instead, keeping the day's shape and the bursts' lengths). ``duration_seconds`` keeps the
    requests that arrive before it (after scaling); the synthetic trace lasts it, 3,600 s by default.
    """
    if rate_scale <= 0 or not math.isfinite(rate_scale):
        raise ValueError(f"rate scale must be a positive number, got {rate_scale}")
    if duration_seconds is not None and duration_seconds <= 0:
        raise ValueError(f"duration must be positive, got {duration_seconds}")
    if spec == "synthetic":
        duration = duration_seconds or _DEFAULT_SYNTHETIC_SECONDS
        rate = AZURE_CONV_MEAN_RATE * rate_scale
        requests = synthetic_trace(duration_seconds=duration, mean_rate=rate, seed=seed)
        source = (f"synthetic (seed {seed}): diurnal 0.4-1.6x of {rate:.3g} req/s with bursts, "
                  "Azure LLM 2023 conv token lengths (CC-BY-4.0)")
        return Trace(name="synthetic", requests=tuple(requests), duration_seconds=duration, source=source)

    path, label, name = _resolve(spec, data_dir)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}" + (
            "" if spec not in SHORT_NAMES else " (set POOLPILOT_DATA_DIR or pass the data directory)"))
    if rate_mode not in RATE_MODES:
        raise ValueError(f"rate mode must be one of {', '.join(RATE_MODES)}, got {rate_mode!r}")
    requests = _read_any(path)
    notes = [label]
    if rate_scale != 1.0 and rate_mode == "compress":
        for request in requests:
            request.arrival /= rate_scale
        notes.append(f"time compressed {rate_scale:g}x")
    elif rate_scale != 1.0:
        requests = superimposed(requests, rate_scale, seed=seed)
        notes.append(f"{rate_scale:g}x its rate ({rate_scale:g} copies superimposed, shifted)")
    span = requests[-1].arrival
    if duration_seconds is not None and duration_seconds < span:
        requests = [request for request in requests if request.arrival < duration_seconds]
        notes.append(f"first {duration_seconds / 60:g} min")
        duration = duration_seconds
    else:
        duration = span if span > 0 else 1.0  # a one-request trace still lasts a moment
        if duration_seconds is not None and duration_seconds > span:
            notes.append(f"ends at {span / 60:.1f} min of the {duration_seconds / 60:g} asked (not looped)")
    return Trace(name=name, requests=tuple(requests), duration_seconds=duration, source=", ".join(notes))


RATE_MODES = ("superimpose", "compress")


def superimposed(requests: Sequence[SimRequest], factor: float, *, seed: int) -> list[SimRequest]:
    """``factor`` copies of the requests over the same span, copy i shifted circularly by i/factor of it.

    A fractional factor adds one more copy keeping each request with that fraction's probability (seeded).
    Ids are renumbered in arrival order.
    """
    if not requests:
        return []
    span = max(r.arrival for r in requests)
    if span <= 0:
        span = 1.0
    whole = int(factor)
    fraction = factor - whole
    rng = random.Random(seed)
    copies = whole + (1 if fraction > 1e-9 else 0)
    laid: list[tuple[float, int, int]] = []
    for copy in range(copies):
        offset = span * copy / factor
        thin = copy == whole  # the fractional copy
        for request in requests:
            if thin and rng.random() >= fraction:
                continue
            arrival = request.arrival + offset
            if arrival > span:
                arrival -= span
            laid.append((arrival, request.prompt_tokens, request.output_tokens))
    laid.sort(key=lambda row: row[0])
    return [SimRequest(id=index, arrival=arrival, prompt_tokens=prompt, output_tokens=output)
            for index, (arrival, prompt, output) in enumerate(laid)]


def _resolve(spec: str, data_dir: Path | None) -> tuple[Path, str, str]:
    """The file, its report label and the trace's name."""
    known = SHORT_NAMES.get(spec)
    if known is not None:
        return (data_dir or default_data_dir()) / known.relative_path, known.label, spec
    path = Path(spec)
    for short_name, entry in SHORT_NAMES.items():
        if path.name == Path(entry.relative_path).name:
            return path, entry.label, short_name
    return path, path.name, path.stem


def _read_any(path: Path) -> list[SimRequest]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_azure_csv(path)
    if suffix in (".jsonl", ".json"):
        return read_mooncake_jsonl(path)
    with path.open(encoding="utf-8-sig") as lines:
        first = next((line.strip() for line in lines if line.strip()), "")
    return read_mooncake_jsonl(path) if first.startswith("{") else read_azure_csv(path)
