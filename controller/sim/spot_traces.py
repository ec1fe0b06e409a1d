"""Spot capacity over a run: which nodes can host a spot replica, and when they are reclaimed or come back.

A node is a slot for one spot replica. ``remove`` is a reclaim at its termination time (the world delivers
the notice ``notice_seconds`` before it, so a reclaim less than that into the run has its notice due before
0: the traces keep such reclaims, e.g. ``trace_0203.txt`` removes a node at 60 s); ``add`` is capacity
coming back. Node names are never reused within a trace: a node that returns is a new
instance with a new name.

Sources:

- the SpotServe artifact's traces (ASPLOS'24, Apache-2.0; ``../shared/data/spot/spotserve``, see
  papers-and-traces.md §1.2): the full g4dn trace (:func:`read_spotserve_csv`) and its 20-minute segments
  (:func:`read_spotserve_segment`). Nodes added at time 0 are the initial nodes; the full trace has none
  (its first node arrives at 8 min). A remove of a node that is not up (``trace_0304_real.txt`` removes a
  ``node-10`` it never added) and an add of one that is already up are dropped: a slot cannot go twice.
  The report's source line counts them.
- a seeded model (:func:`model_spot_trace`): Poisson reclaims per node, correlated bursts, seeded returns,
  optional outages.
- ``none``: no reclaims, 1,000 nodes (spot capacity never binds).

A trace shorter than the run ends in its last state: the nodes up at its last event stay up to the end.
Cut to a run (``duration_seconds``), a trace keeps the events up to 120 s past the run's end (the AWS
notice, the longest of the three clouds, data/README.md), so a reclaim whose notice falls inside the run
is not lost.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from controller.sim.traces import default_data_dir

__all__ = [
    "SHORT_NAMES",
    "SpotEvent",
    "SpotTrace",
    "SpotTraceError",
    "capacity_at",
    "load_spot_trace",
    "model_spot_trace",
    "no_capacity_spans",
    "read_spotserve_csv",
    "read_spotserve_segment",
    "reclaim_times",
    "shifted",
]

SpotKind = Literal["add", "remove"]


class SpotTraceError(ValueError):
    """A spot trace file that cannot be read: the message names the file, the line, and what is wrong."""


@dataclass(frozen=True, slots=True)
class SpotEvent:
    t: float  # seconds from the start of the run; for "remove", the termination time
    kind: SpotKind
    node: str


@dataclass(frozen=True)
class SpotTrace:
    """Spot capacity over a run: the nodes up at 0, then the adds and removes in time order.

    Consistent by construction (checked): a node is added only while down and removed only while up.
    """

    name: str
    source: str  # the one line a report prints: file, licence, model parameters
    events: tuple[SpotEvent, ...]
    initial_nodes: tuple[str, ...]
    duration_seconds: float
    _times: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _capacity: tuple[int, ...] = field(init=False, repr=False, compare=False)  # after each event

    def __post_init__(self) -> None:
        up = set(self.initial_nodes)
        if len(up) != len(self.initial_nodes):
            raise ValueError(f"spot trace {self.name!r}: an initial node is listed twice")
        capacity: list[int] = []
        last = 0.0
        for event in self.events:
            if event.t < last:
                raise ValueError(f"spot trace {self.name!r}: events out of order at t={event.t}")
            last = event.t
            if event.kind == "add":
                if event.node in up:
                    raise ValueError(f"spot trace {self.name!r}: {event.node} added at t={event.t} while up")
                up.add(event.node)
            else:
                if event.node not in up:
                    raise ValueError(f"spot trace {self.name!r}: {event.node} removed at t={event.t} while down")
                up.discard(event.node)
            capacity.append(len(up))
        object.__setattr__(self, "_times", tuple(event.t for event in self.events))
        object.__setattr__(self, "_capacity", tuple(capacity))


def capacity_at(trace: SpotTrace, t: float) -> int:
    """Nodes up at time t (events at exactly t applied); O(log events)."""
    index = bisect.bisect_right(trace._times, t)
    return trace._capacity[index - 1] if index else len(trace.initial_nodes)


def reclaim_times(trace: SpotTrace) -> list[float]:
    """The termination time of every reclaim, in order (one per node; simultaneous ones repeat)."""
    return [event.t for event in trace.events if event.kind == "remove"]


def no_capacity_spans(trace: SpotTrace) -> list[tuple[float, float]]:
    """The spans within the trace's duration with no node up, as (start, end)."""
    spans: list[tuple[float, float]] = []
    down_since: float | None = 0.0 if not trace.initial_nodes else None
    for t, capacity in zip(trace._times, trace._capacity, strict=True):
        if capacity == 0 and down_since is None:
            down_since = t
        elif capacity > 0 and down_since is not None:
            if t > down_since:
                spans.append((down_since, t))
            down_since = None
    if down_since is not None and down_since < trace.duration_seconds:
        spans.append((down_since, trace.duration_seconds))
    return [(start, min(end, trace.duration_seconds)) for start, end in spans if start < trace.duration_seconds]


# ---------------------------------------------------------------------------------------------------------
# Readers


_RawEvent = tuple[float, SpotKind, str]


def read_spotserve_csv(path: Path | str) -> SpotTrace:
    """SpotServe's full trace: rows ``ms,add|remove,nodeN`` (``trace_full/g4dn.csv``), no header."""
    path = Path(path)
    raw: list[_RawEvent] = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            where = f"{path}, line {line_number}"
            fields = [part.strip() for part in text.split(",")]
            if len(fields) != 3:
                raise SpotTraceError(f"{where}: expected 3 fields (ms,add|remove,node), got {len(fields)}: {text!r}")
            milliseconds, kind, node = fields
            raw.append((_seconds(milliseconds, where), _kind(kind, where), _node(node, where)))
    if not raw:
        raise SpotTraceError(f"{path}: empty file")
    return _trace(path.stem, f"SpotServe {path.name} (Apache-2.0)", raw, end=None)


def read_spotserve_segment(path: Path | str) -> SpotTrace:
    """A SpotServe segment: JSON lines ``[ms, "add"|"remove"|"DONE"|"other", {"nodes": [...]}]``.

    ``DONE`` ends the trace at its time (lines after it are ignored: some files repeat their content
    there); without it the trace ends at its last event. ``other`` rows carry SpotServe's workload
    annotations (``required_tpt``), not capacity, and are ignored, as are extra keys beside ``nodes``.
    """
    path = Path(path)
    raw: list[_RawEvent] = []
    end: float | None = None
    seen_any = False
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            seen_any = True
            where = f"{path}, line {line_number}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise SpotTraceError(f"{where}: not JSON: {error.msg}") from None
            if not (isinstance(row, list) and len(row) == 3 and isinstance(row[1], str) and isinstance(row[2], dict)):
                raise SpotTraceError(f"{where}: expected [ms, kind, {{\"nodes\": [...]}}], got {text!r}")
            milliseconds, kind, payload = row
            t = _seconds(milliseconds, where)
            if kind == "DONE":
                end = t
                break
            if kind == "other":
                continue
            nodes = payload.get("nodes")
            if not isinstance(nodes, list):
                raise SpotTraceError(f"{where}: \"nodes\" must be a list of node names, got {nodes!r}")
            spot_kind = _kind(kind, where)
            raw.extend((t, spot_kind, _node(node, where)) for node in nodes)
    if not seen_any:
        raise SpotTraceError(f"{path}: empty file")
    return _trace(path.stem, f"SpotServe {path.name} (Apache-2.0)", raw, end=end)


def _seconds(value: object, where: str) -> float:
    if isinstance(value, str):
        text = value
        if not (text.isascii() and text.isdigit()):
            raise SpotTraceError(f"{where}: time is not a whole, non-negative number of milliseconds: {value!r}")
        return int(text) / 1000
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SpotTraceError(f"{where}: time is not a non-negative number of milliseconds: {value!r}")
    return value / 1000


def _kind(value: str, where: str) -> SpotKind:
    if value == "add":
        return "add"
    if value == "remove":
        return "remove"
    raise SpotTraceError(f"{where}: unknown event {value!r} (expected add or remove)")


def _node(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpotTraceError(f"{where}: a node name must be a non-empty string, got {value!r}")
    return value


def _trace(name: str, source: str, raw: list[_RawEvent], *, end: float | None) -> SpotTrace:
    """A consistent trace from raw events (sorted, stable): adds at 0 become the initial nodes."""
    raw.sort(key=lambda event: event[0])
    up: set[str] = set()
    initial: list[str] = []
    events: list[SpotEvent] = []
    dropped = 0
    for t, kind, node in raw:
        if (kind == "add") == (node in up):
            dropped += 1
            continue
        if kind == "add":
            up.add(node)
            if t == 0:
                initial.append(node)
            else:
                events.append(SpotEvent(t, "add", node))
        else:
            up.discard(node)
            if t == 0:
                initial.remove(node)  # gone before the run starts
            else:
                events.append(SpotEvent(t, "remove", node))
    duration = end if end is not None else (raw[-1][0] if raw else 0.0)
    if dropped:
        source += f"; {dropped} event(s) for a node already in that state ignored"
    return SpotTrace(name=name, source=source, events=tuple(events), initial_nodes=tuple(initial),
                     duration_seconds=duration)


# ---------------------------------------------------------------------------------------------------------
# The model

# SpotServe g4dn.csv (papers-and-traces.md §1.2), computed from the file: 74 removes over 135.7 node-hours,
# 0.55 reclaims per node-hour. A volatile regime (AWS's Spot Advisor puts its worst band at >20 % of
# instances interrupted per month, papers-and-traces.md §3.5), picked so an hour's run sees reclaims at all.
DEFAULT_RECLAIMS_PER_NODE_HOUR = 0.55
# Same file: its removes fall into 40 clusters (each within 180 s of the previous), 16 of them with more
# than one node, those carrying 1-8 (mean 2.1) more.
DEFAULT_BURST_PROBABILITY = 0.4
DEFAULT_BURST_SIZE = (1, 3)
# Spot-and-Scoot (arXiv 2604.16457, data/README.md): >92 % of co-interruptions within 3 minutes.
DEFAULT_BURST_WINDOW_SECONDS = 180.0
# Same g4dn file: a remove is followed by the next add 13 min later on average (median 5). A model choice:
# each reclaimed slot comes back after an exponential delay of that mean.
DEFAULT_RETURN_MEAN_SECONDS = 780.0
# trace_0506_real.txt ("Bs", SpotServe) starts with 10 nodes.
DEFAULT_MODEL_NODES = 10
UNLIMITED_NODES = 1000
_LONGEST_NOTICE_SECONDS = 120.0  # AWS's 2 minutes (data/README.md)
_DEFAULT_DURATION_SECONDS = 3600.0


def model_spot_trace(
    *,
    duration_seconds: float,
    nodes: int,
    seed: int,
    reclaims_per_node_hour: float = DEFAULT_RECLAIMS_PER_NODE_HOUR,
    burst_probability: float = DEFAULT_BURST_PROBABILITY,
    burst_size: tuple[int, int] = DEFAULT_BURST_SIZE,
    burst_window_seconds: float = DEFAULT_BURST_WINDOW_SECONDS,
    return_mean_seconds: float = DEFAULT_RETURN_MEAN_SECONDS,
    outages: Sequence[tuple[float, float]] = (),
) -> SpotTrace:
    """A seeded spot trace: ``nodes`` up at 0, each reclaimed at Poisson times, reclaims in bursts.

    Each node up draws its own reclaim time (exponential). A reclaim, with probability
    ``burst_probability``, also reclaims a seeded number (uniform in ``burst_size``) of the other nodes up,
    each at a uniform time within ``burst_window_seconds`` after it; those correlated reclaims start no
    burst of their own. The primary rate is lowered by ``1 + burst_probability * mean burst size`` so the
    total rate is ``reclaims_per_node_hour`` per node up (a little less when a burst finds too few nodes).
    A reclaimed slot comes back as a new node after an exponential delay of mean ``return_mean_seconds``.
    ``outages`` are spans (start, end) with no spot capacity: every node up is reclaimed at the start, and
    no node comes back before the end (those due meanwhile come back at it).
    """
    if duration_seconds <= 0 or nodes < 0:
        raise ValueError(f"model spot trace needs a positive duration and nodes >= 0, got {duration_seconds}, {nodes}")
    low, high = burst_size
    if not (0 <= low <= high and 0 <= burst_probability <= 1 and reclaims_per_node_hour >= 0
            and return_mean_seconds > 0 and burst_window_seconds >= 0):
        raise ValueError("model spot trace: a parameter is out of range")
    spans = sorted((float(start), float(end)) for start, end in outages)
    if any(end <= start or start < 0 for start, end in spans):
        raise ValueError(f"outages must be (start, end) spans with 0 <= start < end, got {list(outages)}")
    rng = random.Random(seed)
    primary_per_second = reclaims_per_node_hour / (1 + burst_probability * (low + high) / 2) / 3600
    horizon = duration_seconds + _LONGEST_NOTICE_SECONDS

    # The heap orders (time, sequence, action, node); sequence keeps equal times in scheduling order.
    heap: list[tuple[float, int, str, str]] = []
    sequence = 0

    def schedule(t: float, action: str, node: str = "") -> None:
        nonlocal sequence
        if t <= horizon:
            heapq.heappush(heap, (t, sequence, action, node))
            sequence += 1

    up: dict[str, None] = {}  # insertion-ordered, so bursts pick deterministically
    doomed: set[str] = set()  # picked for a correlated reclaim already
    names = 0

    def add_node(t: float) -> str:
        nonlocal names
        node = f"spot-{names}"
        names += 1
        up[node] = None
        if primary_per_second > 0:
            schedule(t + rng.expovariate(primary_per_second), "reclaim", node)
        return node

    def returning_at(t: float) -> float:
        """When a slot reclaimed at t comes back: after the delay, and not within an outage."""
        back = t + rng.expovariate(1 / return_mean_seconds)
        for start, end in spans:
            if start <= back < end:
                back = end
        return back

    events: list[SpotEvent] = []

    def remove(t: float, node: str) -> None:
        del up[node]
        doomed.discard(node)
        events.append(SpotEvent(t, "remove", node))
        schedule(returning_at(t), "return")

    initial = tuple(add_node(0.0) for _ in range(nodes))
    for start, _end in spans:
        schedule(start, "outage")

    while heap:
        t, _, action, node = heapq.heappop(heap)
        if action in ("reclaim", "correlated"):
            if node not in up:  # gone already: a correlated reclaim or an outage came first
                continue
            remove(t, node)
            if action == "reclaim" and high > 0 and rng.random() < burst_probability:
                others = [other for other in up if other not in doomed]
                for other in rng.sample(others, min(len(others), rng.randint(low, high))):
                    doomed.add(other)
                    schedule(t + rng.uniform(0.0, burst_window_seconds), "correlated", other)
        elif action == "return":
            events.append(SpotEvent(t, "add", add_node(t)))
        else:  # an outage starts
            for victim in list(up):
                remove(t, victim)

    parameters = (f"{nodes} nodes, {reclaims_per_node_hour:g} reclaims/node-hour, bursts p={burst_probability:g}"
                  f" of {low}-{high} more within {burst_window_seconds:g} s, return after ~{return_mean_seconds:g} s")
    if spans:
        parameters += ", outages " + ", ".join(f"{start:g}-{end:g} s" for start, end in spans)
    return SpotTrace(name="model", source=f"spot model (seed {seed}): {parameters}", events=tuple(events),
                     initial_nodes=initial, duration_seconds=duration_seconds)


# ---------------------------------------------------------------------------------------------------------
# Naming a spot trace

# papers-and-traces.md §1.2: "As" and "Bs" are the paper's two representative segments.
SHORT_NAMES: dict[str, str] = {
    "spotserve-g4dn": "spot/spotserve/trace_full/g4dn.csv",
    "spotserve-As": "spot/spotserve/trace_seg/trace_0304_real.txt",
    "spotserve-Bs": "spot/spotserve/trace_seg/trace_0506_real.txt",
}


def load_spot_trace(
    spec: str,
    *,
    duration_seconds: float | None = None,
    seed: int = 0,
    nodes: int | None = None,
    data_dir: Path | None = None,
) -> SpotTrace:
    """The spot trace ``spec`` names: ``none``, ``model``, a short name (:data:`SHORT_NAMES`), or a path.

    ``nodes`` sizes ``model`` (default 10); a file brings its own nodes. ``duration_seconds`` (default: the
    file's length, or 3,600 s for ``model`` and ``none``) is the run's length: a longer file is cut (keeping
    120 s past the end for notices), a shorter one holds its last state to the end. A path's format
    follows its extension (``.csv`` the full trace, ``.txt``/``.jsonl`` a segment), else its first
    character (``[`` a segment).
    """
    if duration_seconds is not None and duration_seconds <= 0:
        raise ValueError(f"duration must be positive, got {duration_seconds}")
    if spec == "none":
        return SpotTrace(name="none", source="no spot reclaims (unlimited spot capacity)", events=(),
                         initial_nodes=tuple(f"spot-{index}" for index in range(UNLIMITED_NODES)),
                         duration_seconds=duration_seconds or _DEFAULT_DURATION_SECONDS)
    if spec == "model":
        return model_spot_trace(duration_seconds=duration_seconds or _DEFAULT_DURATION_SECONDS,
                                nodes=DEFAULT_MODEL_NODES if nodes is None else nodes, seed=seed)
    relative = SHORT_NAMES.get(spec)
    path = (data_dir or default_data_dir()) / relative if relative is not None else Path(spec)
    if not path.is_file():
        raise SpotTraceError(f"spot trace file not found: {path}" + (
            "" if relative is None else " (set POOLPILOT_DATA_DIR or pass the data directory)"))
    trace = _read_any(path)
    if relative is not None:
        trace = _renamed(trace, spec)
    return trace if duration_seconds is None else _fitted(trace, duration_seconds)


def _read_any(path: Path) -> SpotTrace:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_spotserve_csv(path)
    if suffix in (".txt", ".jsonl", ".json"):
        with path.open(encoding="utf-8") as lines:
            first = next((line.strip() for line in lines if line.strip()), "")
        if suffix != ".txt" or first.startswith("["):
            return read_spotserve_segment(path)
        return read_spotserve_csv(path)
    with path.open(encoding="utf-8") as lines:
        first = next((line.strip() for line in lines if line.strip()), "")
    return read_spotserve_segment(path) if first.startswith("[") else read_spotserve_csv(path)


def _renamed(trace: SpotTrace, name: str) -> SpotTrace:
    return SpotTrace(name=name, source=trace.source, events=trace.events, initial_nodes=trace.initial_nodes,
                     duration_seconds=trace.duration_seconds)


def _fitted(trace: SpotTrace, duration_seconds: float) -> SpotTrace:
    """The trace over a run of this length: cut past the end (plus notices), or held in its last state."""
    kept: Iterable[SpotEvent] = (event for event in trace.events
                                 if event.t <= duration_seconds + _LONGEST_NOTICE_SECONDS)
    source = trace.source
    if trace.duration_seconds < duration_seconds:
        source += (f"; ends at {trace.duration_seconds / 60:.1f} min, its last state held to "
                   f"{duration_seconds / 60:g} min")
    elif trace.duration_seconds > duration_seconds:
        source += f"; first {duration_seconds / 60:g} min"
    return SpotTrace(name=trace.name, source=source, events=tuple(kept), initial_nodes=trace.initial_nodes,
                     duration_seconds=duration_seconds)


def shifted(trace: SpotTrace, seconds: float) -> SpotTrace:
    """The trace from ``seconds`` on, as a run starting there sees it: the nodes up then, the events after."""
    up = set(trace.initial_nodes)
    kept: list[SpotEvent] = []
    for event in trace.events:
        if event.t <= seconds:  # what happens at the start is the state it starts in
            if event.kind == "add":
                up.add(event.node)
            else:
                up.discard(event.node)
        else:
            kept.append(SpotEvent(event.t - seconds, event.kind, event.node))
    return SpotTrace(name=trace.name, source=f"{trace.source}; from {seconds / 60:g} min on", events=tuple(kept),
                     initial_nodes=tuple(sorted(up)), duration_seconds=max(1.0, trace.duration_seconds - seconds))
