"""Spot traces: the SpotServe readers, the seeded reclaim model, and naming a spot trace for a run."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from controller.sim.spot_traces import (
    SpotEvent,
    SpotTrace,
    SpotTraceError,
    capacity_at,
    load_spot_trace,
    model_spot_trace,
    no_capacity_spans,
    read_spotserve_csv,
    read_spotserve_segment,
    reclaim_times,
)
from controller.sim.traces import default_data_dir

SPOTSERVE = default_data_dir() / "spot" / "spotserve"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def up_node_hours(trace: SpotTrace) -> float:
    total, since = 0.0, 0.0
    for event in trace.events:
        if event.t > trace.duration_seconds:
            break
        total += capacity_at(trace, since) * (event.t - since)
        since = event.t
    return (total + capacity_at(trace, since) * (trace.duration_seconds - since)) / 3600


def reclaims_within_run(trace: SpotTrace) -> list[float]:
    return [t for t in reclaim_times(trace) if t <= trace.duration_seconds]


# ---------------------------------------------------------------------------------------------------------
# The SpotServe files


def test_every_spotserve_segment_parses(real_data: Path) -> None:
    segments = sorted((SPOTSERVE / "trace_seg").glob("*.txt"))
    assert len(segments) == 21
    for path in segments:
        trace = read_spotserve_segment(path)
        assert trace.initial_nodes, path  # every segment starts with nodes added at 0
        assert 200 <= trace.duration_seconds <= 1440, path  # "20-minute segments"
        assert all(event.t <= trace.duration_seconds for event in trace.events), path


def test_the_full_g4dn_trace(real_data: Path) -> None:
    trace = read_spotserve_csv(SPOTSERVE / "trace_full" / "g4dn.csv")
    assert len(trace.events) == 153  # data/README.md: 153 events
    assert trace.initial_nodes == ()  # its first node comes at 8 min
    assert trace.duration_seconds == 38_760.0
    assert max(capacity_at(trace, event.t) for event in trace.events) == 24  # "up to 24 nodes"
    assert len(reclaim_times(trace)) == 74
    assert capacity_at(trace, trace.duration_seconds) == 5  # 79 adds, 74 removes
    assert "ignored" not in trace.source


def test_the_papers_two_segments_by_short_name(real_data: Path) -> None:
    as_trace = load_spot_trace("spotserve-As")
    assert (as_trace.name, len(as_trace.initial_nodes), as_trace.duration_seconds) == ("spotserve-As", 7, 1320.0)
    bs_trace = load_spot_trace("spotserve-Bs")
    assert len(bs_trace.initial_nodes) == 10
    assert reclaim_times(bs_trace) == [120.0, 120.0, 240.0]  # node-4 and node-8, then node-0
    assert capacity_at(bs_trace, 119.9) == 10
    assert capacity_at(bs_trace, 120.0) == 8
    assert capacity_at(bs_trace, 240.0) == 7
    assert capacity_at(bs_trace, 960.0) == 9  # node-10 at 12 min, node-11 at 16 min
    assert bs_trace.source == "SpotServe trace_0506_real.txt (Apache-2.0)"


# ---------------------------------------------------------------------------------------------------------
# Segment and CSV parsing


def test_done_ends_a_segment_and_other_rows_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "seg.txt", "\n".join([
        '[0, "add", {"nodes": ["a", "b", "c"]}]',
        '[30000, "other", {"nodes": [], "required_tpt": 0.8}]',
        '[60000, "remove", {"nodes": ["a", "b"], "required_tpt": 0.6}]',
        '[90000, "add", {"nodes": ["d"]}]',
        '[100000, "DONE", {"nodes": []}]',
        '[0, "add", {"nodes": ["z"]}]',  # after DONE: ignored (some real files repeat themselves there)
    ]))
    trace = read_spotserve_segment(path)
    assert trace.initial_nodes == ("a", "b", "c")
    assert trace.events == (SpotEvent(60.0, "remove", "a"), SpotEvent(60.0, "remove", "b"),
                            SpotEvent(90.0, "add", "d"))
    assert trace.duration_seconds == 100.0


def test_a_segment_without_done_ends_at_its_last_event(tmp_path: Path) -> None:
    path = write(tmp_path, "seg.txt", '[0, "add", {"nodes": ["a"]}]\n[45000, "remove", {"nodes": ["a"]}]\n')
    trace = read_spotserve_segment(path)
    assert trace.duration_seconds == 45.0
    assert no_capacity_spans(trace) == []  # the span starts at the very end


def test_events_for_a_node_already_in_that_state_are_dropped_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "seg.txt", '[0, "add", {"nodes": ["a", "b"]}]\n'
                 '[60000, "remove", {"nodes": ["b", "ghost"]}]\n[70000, "add", {"nodes": ["a"]}]\n')
    trace = read_spotserve_segment(path)
    assert trace.events == (SpotEvent(60.0, "remove", "b"),)
    assert "2 event(s) for a node already in that state ignored" in trace.source


@pytest.mark.parametrize(
    ("line2", "problem"),
    [
        ('[60000, "remove", {"nodes": ["a"]', "not JSON"),
        ('[60000, "remove"]', "expected [ms, kind"),
        ('{"t": 60000}', "expected [ms, kind"),
        ('[60000, "evict", {"nodes": ["a"]}]', "unknown event 'evict'"),
        ('[-5, "remove", {"nodes": ["a"]}]', "time is not a non-negative number"),
        ('["soon", "remove", {"nodes": ["a"]}]', "time is not a whole, non-negative number"),
        ('[60000, "remove", {"nodes": "a"}]', '"nodes" must be a list'),
        ('[60000, "remove", {"nodes": [7]}]', "a node name must be a non-empty string"),
    ],
)
def test_a_malformed_segment_line_names_file_and_line(tmp_path: Path, line2: str, problem: str) -> None:
    path = write(tmp_path, "bad.txt", '[0, "add", {"nodes": ["a"]}]\n\n' + line2 + "\n")
    with pytest.raises(SpotTraceError) as raised:
        read_spotserve_segment(path)
    message = str(raised.value)
    assert f"{path}, line 3:" in message
    assert problem in message


@pytest.mark.parametrize(
    ("line2", "problem"),
    [
        ("60000,remove", "expected 3 fields"),
        ("1.5e3,remove,node1", "time is not a whole, non-negative number"),
        ("60000,preempt,node1", "unknown event 'preempt'"),
        ("60000,remove,", "a node name must be a non-empty string"),
    ],
)
def test_a_malformed_csv_row_names_file_and_line(tmp_path: Path, line2: str, problem: str) -> None:
    path = write(tmp_path, "bad.csv", "0,add,node1\n" + line2 + "\n")
    with pytest.raises(SpotTraceError) as raised:
        read_spotserve_csv(path)
    message = str(raised.value)
    assert f"{path}, line 2:" in message
    assert problem in message


def test_empty_spot_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(SpotTraceError, match="empty file"):
        read_spotserve_csv(write(tmp_path, "e.csv", ""))
    with pytest.raises(SpotTraceError, match="empty file"):
        read_spotserve_segment(write(tmp_path, "e.txt", "\n"))


def test_csv_rows_out_of_order_are_sorted(tmp_path: Path) -> None:
    trace = read_spotserve_csv(write(tmp_path, "t.csv", "120000,remove,n1\n0,add,n1\n60000,add,n2\n"))
    assert trace.initial_nodes == ("n1",)
    assert trace.events == (SpotEvent(60.0, "add", "n2"), SpotEvent(120.0, "remove", "n1"))


# ---------------------------------------------------------------------------------------------------------
# The trace and its helpers


def test_capacity_reclaims_and_spans_without_capacity() -> None:
    trace = SpotTrace(name="t", source="", duration_seconds=600.0, initial_nodes=("a", "b"), events=(
        SpotEvent(100.0, "remove", "a"), SpotEvent(100.0, "remove", "b"), SpotEvent(250.0, "add", "c"),
        SpotEvent(500.0, "remove", "c"),
    ))
    assert [capacity_at(trace, t) for t in (0.0, 99.0, 100.0, 249.0, 250.0, 499.0, 500.0, 9999.0)] == [
        2, 2, 0, 0, 1, 1, 0, 0]
    assert reclaim_times(trace) == [100.0, 100.0, 500.0]
    assert no_capacity_spans(trace) == [(100.0, 250.0), (500.0, 600.0)]


def test_a_trace_that_contradicts_itself_is_refused() -> None:
    with pytest.raises(ValueError, match=r"removed at t=5\.0 while down"):
        SpotTrace(name="t", source="", duration_seconds=10, initial_nodes=(), events=(SpotEvent(5.0, "remove", "a"),))
    with pytest.raises(ValueError, match=r"added at t=5\.0 while up"):
        SpotTrace(name="t", source="", duration_seconds=10, initial_nodes=("a",), events=(SpotEvent(5.0, "add", "a"),))
    with pytest.raises(ValueError, match="out of order"):
        SpotTrace(name="t", source="", duration_seconds=10, initial_nodes=("a", "b"),
                  events=(SpotEvent(5.0, "remove", "a"), SpotEvent(4.0, "remove", "b")))


# ---------------------------------------------------------------------------------------------------------
# The model


def test_the_model_is_deterministic_per_seed() -> None:
    first = model_spot_trace(duration_seconds=7200, nodes=8, seed=11)
    assert first == model_spot_trace(duration_seconds=7200, nodes=8, seed=11)
    assert first.events != model_spot_trace(duration_seconds=7200, nodes=8, seed=12).events
    assert len(first.initial_nodes) == 8
    assert first.duration_seconds == 7200


@pytest.mark.parametrize("asked", [0.55, 0.2])
def test_the_models_reclaim_rate_is_the_asked_one_over_a_long_run(asked: float) -> None:
    trace = model_spot_trace(duration_seconds=2000 * 3600, nodes=10, seed=3, reclaims_per_node_hour=asked)
    assert len(reclaims_within_run(trace)) / up_node_hours(trace) == pytest.approx(asked, rel=0.10)


def test_the_model_reclaims_in_correlated_bursts() -> None:
    def close_pairs(trace: SpotTrace) -> int:
        times = reclaim_times(trace)
        return sum(1 for a, b in itertools.pairwise(times) if b - a <= 180)

    bursty = model_spot_trace(duration_seconds=200 * 3600, nodes=10, seed=5)
    independent = model_spot_trace(duration_seconds=200 * 3600, nodes=10, seed=5, burst_probability=0)
    assert close_pairs(bursty) / len(reclaim_times(bursty)) > 2 * close_pairs(independent) / len(
        reclaim_times(independent))
    always = model_spot_trace(duration_seconds=3600, nodes=10, seed=5, burst_probability=1.0, burst_size=(2, 2))
    first = reclaim_times(always)[:3]
    assert first[2] - first[0] <= 180  # the first reclaim takes two more with it within 3 minutes


def test_reclaimed_capacity_comes_back_as_new_nodes() -> None:
    trace = model_spot_trace(duration_seconds=20 * 3600, nodes=6, seed=2)
    adds = [event for event in trace.events if event.kind == "add"]
    assert adds
    assert all(capacity_at(trace, event.t) <= 6 for event in trace.events)
    names = [event.node for event in adds] + list(trace.initial_nodes)
    assert len(names) == len(set(names))  # a returning slot is a new instance


def test_an_outage_leaves_no_capacity_for_its_span() -> None:
    trace = model_spot_trace(duration_seconds=3600, nodes=10, seed=4, outages=[(600.0, 1500.0)])
    assert (600.0, 1500.0) in no_capacity_spans(trace)
    assert capacity_at(trace, 599.0) > 0
    assert capacity_at(trace, 1500.0) > 0  # slots due back during it return at its end
    assert "outages 600-1500 s" in trace.source


def test_no_reclaims_at_rate_zero() -> None:
    trace = model_spot_trace(duration_seconds=3600, nodes=4, seed=1, reclaims_per_node_hour=0)
    assert trace.events == ()


# ---------------------------------------------------------------------------------------------------------
# Naming a spot trace: load_spot_trace


def test_none_is_unlimited_and_never_reclaims() -> None:
    trace = load_spot_trace("none", duration_seconds=1800)
    assert trace.events == ()
    assert len(trace.initial_nodes) == 1000
    assert trace.duration_seconds == 1800


def test_model_by_name_takes_nodes_and_seed() -> None:
    trace = load_spot_trace("model", duration_seconds=3600, seed=9, nodes=4)
    assert len(trace.initial_nodes) == 4
    assert trace == model_spot_trace(duration_seconds=3600, nodes=4, seed=9)


def test_a_longer_trace_is_cut_keeping_notices_inside_the_run(real_data: Path) -> None:
    trace = load_spot_trace("spotserve-g4dn", duration_seconds=1500)
    assert trace.duration_seconds == 1500
    assert max(event.t for event in trace.events) <= 1500 + 120
    assert 1560.0 in reclaim_times(trace)  # terminated 60 s after the run: its notice came 60 s before the end
    assert "first 25 min" in trace.source


def test_a_shorter_trace_holds_its_last_state(real_data: Path) -> None:
    trace = load_spot_trace("spotserve-Bs", duration_seconds=3600)
    assert trace.duration_seconds == 3600
    assert capacity_at(trace, 3000.0) == capacity_at(trace, 1020.0) == 9
    assert "its last state held to 60 min" in trace.source


def test_a_path_is_read_by_extension_or_content(tmp_path: Path) -> None:
    assert read_spotserve_csv(write(tmp_path, "a.csv", "0,add,n\n")).initial_nodes == ("n",)
    assert load_spot_trace(str(write(tmp_path, "b.jsonl", '[0, "add", {"nodes": ["m"]}]\n'))).initial_nodes == ("m",)
    assert load_spot_trace(str(write(tmp_path, "c", '[0, "add", {"nodes": ["k"]}]\n'))).initial_nodes == ("k",)
    assert load_spot_trace(str(write(tmp_path, "d.txt", "0,add,j\n"))).initial_nodes == ("j",)


def test_a_missing_spot_file_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(SpotTraceError, match="spot trace file not found") as raised:
        load_spot_trace("spotserve-As", data_dir=tmp_path)
    assert str(tmp_path / "spot/spotserve/trace_seg/trace_0304_real.txt") in str(raised.value)


def test_a_shifted_trace_starts_with_the_nodes_up_at_its_new_start(real_data: Path) -> None:
    from controller.sim.spot_traces import shifted

    full = load_spot_trace("spotserve-g4dn")
    later = shifted(full, 900.0)
    assert len(later.initial_nodes) == 24  # the g4dn trace's nodes are all up 15 min in
    assert later.events[0].t == pytest.approx(1440.0 - 900.0)  # its first reclaims
    assert later.events[0].kind == "remove"
    assert later.duration_seconds == pytest.approx(full.duration_seconds - 900.0)
