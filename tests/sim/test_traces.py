"""The request-trace readers, the synthetic trace, and naming a trace for a run."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from controller.sim.request import SimRequest
from controller.sim.traces import (
    Trace,
    TraceError,
    default_data_dir,
    load_trace,
    read_azure_csv,
    read_mooncake_jsonl,
    synthetic_trace,
)

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_ordered(requests: list[SimRequest]) -> None:
    assert [request.id for request in requests] == list(range(len(requests)))
    assert requests[0].arrival == 0.0
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(requests))


# ---------------------------------------------------------------------------------------------------------
# The real files (data/README.md: rows and spans)


@pytest.mark.parametrize(
    ("name", "rows", "minutes", "mean_prompt", "mean_output"),
    [
        ("azure-conv", 19_366, 58.4, 1155, 211),
        ("azure-code", 8_819, 57.3, 2048, 28),
        ("mooncake", 12_031, 59.0, 12_035, 343),
    ],
)
def test_reads_the_real_traces(real_data: Path, name: str, rows: int, minutes: float, mean_prompt: int,
                               mean_output: int) -> None:
    trace = load_trace(name)
    requests = list(trace.requests)
    assert len(requests) == rows
    assert_ordered(requests)
    assert trace.duration_seconds / 60 == pytest.approx(minutes, abs=0.1)
    assert trace.mean_prompt_tokens == pytest.approx(mean_prompt, abs=1)
    assert trace.mean_output_tokens == pytest.approx(mean_output, abs=1)
    assert "CC-BY-4.0" in trace.source or "Apache-2.0" in trace.source


def test_the_azure_conv_trace_parses_exactly(real_data: Path) -> None:
    requests = read_azure_csv(default_data_dir() / "traces/azure-llm-2023/AzureLLMInferenceTrace_conv_2023.csv")
    # The file's first two rows: 18:15:46.6805900 and 18:15:50.9951690.
    assert requests[1].arrival == 4.314579
    assert (requests[0].prompt_tokens, requests[0].output_tokens) == (374, 44)
    # The last row: 19:14:08.4025270.
    assert requests[-1].arrival == 3501.721937


# ---------------------------------------------------------------------------------------------------------
# The Azure CSV


def test_azure_timestamps_are_exact_across_midnight(tmp_path: Path) -> None:
    rows = "2023-11-16 23:59:59.9999999,10,5\n2023-11-17 00:00:00.0000001,20,6\n"
    path = write(tmp_path, "t.csv", AZURE_HEADER + rows)
    requests = read_azure_csv(path)
    assert requests[1].arrival == 2e-7  # a float parse of epoch seconds has ~2.4e-7 resolution here


def test_azure_rows_out_of_order_are_sorted_and_renumbered(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", AZURE_HEADER + "2023-11-16 18:00:05,30,3\n2023-11-16 18:00:01,10,1\n"
                 "2023-11-16 18:00:05,40,4\n\n")
    requests = read_azure_csv(path)
    assert [(r.id, r.arrival, r.prompt_tokens) for r in requests] == [(0, 0.0, 10), (1, 4.0, 30), (2, 4.0, 40)]


def test_azure_columns_are_found_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "NumImages,GeneratedTokens,TIMESTAMP,ContextTokens\n"
                 "0,7,2024-05-10 00:00:00.5+00:00,100\n1,8,2024-05-10 01:00:01+01:00,200\n")
    requests = read_azure_csv(path)
    assert [(r.arrival, r.prompt_tokens, r.output_tokens) for r in requests] == [(0.0, 100, 7), (0.5, 200, 8)]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("time,ctx,gen\n2023-11-16 18:00:00,1,1\n", 1, "bad header"),
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,1\n", 1, "missing column(s) GeneratedTokens"),
        (AZURE_HEADER + "2023-11-16 18:00:00,1,1\n2023-11-16 18:00:01,abc,1\n", 3,
         "ContextTokens is not a whole number"),
        (AZURE_HEADER + "2023-11-16 18:00:00,1,1.5\n", 2, "GeneratedTokens is not a whole number"),
        (AZURE_HEADER + "2023-11-16 18:00:00,-4,1\n", 2, "ContextTokens is negative"),
        (AZURE_HEADER + "2023-11-16 18:00:00,4,0\n", 2, "GeneratedTokens is 0"),
        (AZURE_HEADER + "2023-11-16 18:00:00,4,2\n\nyesterday,4,2\n", 4, "unparseable timestamp 'yesterday'"),
        (AZURE_HEADER + "2023-11-16 25:00:00,4,2\n", 2, "unparseable timestamp"),
        (AZURE_HEADER + "2023-02-30 10:00:00,4,2\n", 2, "unparseable timestamp"),
        (AZURE_HEADER + "2023-11-16 18:00:00,4\n", 2, "expected 3 fields, got 2"),
    ],
)
def test_a_malformed_azure_row_names_file_and_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError) as raised:
        read_azure_csv(path)
    message = str(raised.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert problem in message


@pytest.mark.parametrize(("text", "problem"), [("", "empty file"), ("\n\n", "empty file"),
                                               (AZURE_HEADER, "no requests")])
def test_an_empty_azure_file_is_an_error(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "empty.csv", text)
    with pytest.raises(TraceError, match=problem) as raised:
        read_azure_csv(path)
    assert str(path) in str(raised.value)


# ---------------------------------------------------------------------------------------------------------
# The Mooncake JSON lines


def test_mooncake_reads_milliseconds_and_ignores_hash_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl",
                 '{"timestamp": 1500, "input_length": 900, "output_length": 30, "hash_ids": [0, 1]}\n'
                 '{"timestamp": 1000, "input_length": 512, "output_length": 20}\n')
    requests = read_mooncake_jsonl(path)
    assert [(r.id, r.arrival, r.prompt_tokens, r.output_tokens) for r in requests] == [
        (0, 0.0, 512, 20), (1, 0.5, 900, 30)]


@pytest.mark.parametrize(
    ("line2", "problem"),
    [
        ('{"timestamp": 5, "input_length": 1', "not JSON"),
        ("[5, 1, 1]", "expected a JSON object"),
        ('{"timestamp": 5, "input_length": 1}', "missing field(s) output_length"),
        ('{"timestamp": "soon", "input_length": 1, "output_length": 1}', "unparseable timestamp"),
        ('{"timestamp": 5, "input_length": -1, "output_length": 1}', "input_length is negative"),
        ('{"timestamp": 5, "input_length": 1, "output_length": "7"}', "output_length is not a whole number"),
        ('{"timestamp": 5, "input_length": true, "output_length": 1}', "input_length is not a whole number"),
    ],
)
def test_a_malformed_mooncake_line_names_file_and_line(tmp_path: Path, line2: str, problem: str) -> None:
    path = write(tmp_path, "bad.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n' + line2 + "\n")
    with pytest.raises(TraceError) as raised:
        read_mooncake_jsonl(path)
    message = str(raised.value)
    assert f"{path}, line 2:" in message
    assert problem in message


def test_an_empty_mooncake_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="empty file"):
        read_mooncake_jsonl(write(tmp_path, "empty.jsonl", "\n"))


# ---------------------------------------------------------------------------------------------------------
# The synthetic trace


def test_synthetic_is_deterministic_per_seed() -> None:
    def signature(seed: int) -> list[tuple[float, int, int]]:
        requests = synthetic_trace(duration_seconds=1800, mean_rate=4.0, seed=seed)
        return [(r.arrival, r.prompt_tokens, r.output_tokens) for r in requests]

    assert signature(7) == signature(7)
    assert signature(7) != signature(8)


@pytest.mark.parametrize(("seed", "rate", "duration"), [(0, 5.53, 3600.0), (1, 16.6, 3600.0), (2, 2.0, 7200.0),
                                                        (3, 10.0, 900.0)])
def test_synthetic_mean_rate_is_the_asked_one(seed: int, rate: float, duration: float) -> None:
    requests = synthetic_trace(duration_seconds=duration, mean_rate=rate, seed=seed)
    assert len(requests) / duration == pytest.approx(rate, rel=0.10)
    assert [r.id for r in requests] == list(range(len(requests)))
    assert all(0 <= a.arrival <= b.arrival < duration for a, b in itertools.pairwise(requests))


def test_synthetic_has_a_day_and_bursts() -> None:
    rate = 10.0
    trace = Trace(name="s", requests=tuple(synthetic_trace(duration_seconds=3600, mean_rate=rate, seed=0)),
                  duration_seconds=3600, source="")
    minutes = trace.rate_per_window(60)
    night = (sum(minutes[:6]) + sum(minutes[-6:])) / 12
    noon = sum(minutes[24:36]) / 12
    assert night < 0.7 * rate < 1.3 * rate < noon  # the sinusoid: ~0.4x at the ends, ~1.6x in the middle
    # A burst (2-4x for 30-120 s) lifts some 60 s window above the sinusoid's peak.
    assert trace.peak_rate(60) > 1.7 * rate


def test_synthetic_without_bursts_stays_under_the_sinusoid() -> None:
    requests = synthetic_trace(duration_seconds=3600, mean_rate=20.0, seed=0, bursts_per_hour=0)
    trace = Trace(name="s", requests=tuple(requests), duration_seconds=3600, source="")
    assert trace.peak_rate(60) < 1.6 * 20.0 * 1.15


def test_synthetic_tokens_are_shaped_like_the_azure_conv_trace() -> None:
    requests = synthetic_trace(duration_seconds=3600, mean_rate=20.0, seed=3)
    trace = Trace(name="s", requests=tuple(requests), duration_seconds=3600, source="")
    assert trace.mean_prompt_tokens == pytest.approx(1155, rel=0.05)
    assert trace.mean_output_tokens == pytest.approx(211, rel=0.05)
    prompts = sorted(r.prompt_tokens for r in requests)
    assert prompts[len(prompts) // 2] == pytest.approx(1020, rel=0.05)
    assert min(prompts) >= 1
    assert max(r.output_tokens for r in requests) <= 1000


# ---------------------------------------------------------------------------------------------------------
# Naming a trace: load_trace


def test_rate_scale_superimposes_shifted_copies_by_default(real_data: Path) -> None:
    plain = load_trace("azure-conv")
    busy = load_trace("azure-conv", rate_scale=3)
    assert len(busy.requests) == 3 * len(plain.requests)
    assert busy.duration_seconds == pytest.approx(plain.duration_seconds)  # still an hour, three times the rate
    assert busy.mean_rate == pytest.approx(3 * plain.mean_rate)
    assert [r.id for r in busy.requests] == list(range(len(busy.requests)))
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(busy.requests))
    # Copy 0 is the trace itself; the others are shifted, so the busiest minute is not simply tripled.
    assert busy.peak_rate() < 3 * plain.peak_rate()
    assert busy.source == "Azure LLM 2023 conv (CC-BY-4.0), 3x its rate (3 copies superimposed, shifted)"


def test_a_fractional_rate_scale_thins_one_copy(tmp_path: Path) -> None:
    rows = "".join(f"2023-11-16 18:{minute:02d}:00,10,5\n" for minute in range(50))
    path = write(tmp_path, "fifty.csv", AZURE_HEADER + rows)
    trace = load_trace(str(path), rate_scale=1.5, seed=3)
    assert 60 <= len(trace.requests) <= 90  # 50 + about 25
    again = load_trace(str(path), rate_scale=1.5, seed=3)
    assert [r.arrival for r in trace.requests] == [r.arrival for r in again.requests]  # seeded


def test_rate_scale_can_compress_time(real_data: Path) -> None:
    plain = load_trace("azure-conv")
    fast = load_trace("azure-conv", rate_scale=3, rate_mode="compress")
    assert len(fast.requests) == len(plain.requests)
    assert all(f.arrival == pytest.approx(p.arrival / 3) for f, p in zip(fast.requests, plain.requests, strict=True))
    assert fast.duration_seconds == pytest.approx(plain.duration_seconds / 3)
    assert fast.mean_rate == pytest.approx(3 * plain.mean_rate)
    assert fast.source == "Azure LLM 2023 conv (CC-BY-4.0), time compressed 3x"


def test_duration_cuts_after_scaling(tmp_path: Path) -> None:
    rows = "".join(f"2023-11-16 18:00:{second:02d},10,5\n" for second in range(0, 60, 10))  # 0, 10, ... 50 s
    path = write(tmp_path, "six.csv", AZURE_HEADER + rows)
    trace = load_trace(str(path), duration_seconds=10, rate_scale=2, rate_mode="compress")  # 0, 5, 10, ... 25
    assert [r.arrival for r in trace.requests] == [0.0, 5.0]
    assert trace.duration_seconds == 10
    assert trace.source == "six.csv, time compressed 2x, first 0.166667 min"
    longer = load_trace(str(path), duration_seconds=120)
    assert len(longer.requests) == 6
    assert longer.duration_seconds == 50.0
    assert "not looped" in longer.source


def test_a_path_is_read_by_extension_or_content(tmp_path: Path) -> None:
    mooncake = '{"timestamp": 0, "input_length": 3, "output_length": 2}\n'
    assert len(load_trace(str(write(tmp_path, "a.jsonl", mooncake))).requests) == 1
    assert load_trace(str(write(tmp_path, "b.trace", mooncake))).requests[0].prompt_tokens == 3
    azure = AZURE_HEADER + "2023-11-16 18:00:00,7,2\n"
    assert load_trace(str(write(tmp_path, "c.log", azure))).requests[0].prompt_tokens == 7


def test_synthetic_by_name_scales_its_rate() -> None:
    trace = load_trace("synthetic", duration_seconds=1200, rate_scale=2, seed=5)
    assert trace.duration_seconds == 1200
    assert trace.mean_rate == pytest.approx(2 * 5.53, rel=0.10)
    assert trace.requests[0].arrival == pytest.approx(0.0, abs=5.0)
    assert "synthetic (seed 5)" in trace.source
    assert [r.arrival for r in load_trace("synthetic", duration_seconds=600, seed=5).requests] != [
        r.arrival for r in load_trace("synthetic", duration_seconds=600, seed=6).requests]


def test_a_missing_file_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="trace file not found") as raised:
        load_trace("azure-conv", data_dir=tmp_path)
    assert str(tmp_path / "traces/azure-llm-2023/AzureLLMInferenceTrace_conv_2023.csv") in str(raised.value)
    with pytest.raises(TraceError, match=r"nowhere\.csv"):
        load_trace(str(tmp_path / "nowhere.csv"))


def test_the_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLPILOT_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    (tmp_path / "traces/mooncake").mkdir(parents=True)
    write(tmp_path / "traces/mooncake", "mooncake_conversation_trace.jsonl",
          '{"timestamp": 0, "input_length": 3, "output_length": 2}\n{"timestamp": 2000, "input_length": 4, '
          '"output_length": 1}\n')
    trace = load_trace("mooncake")
    assert trace.name == "mooncake"
    assert trace.duration_seconds == 2.0
    assert trace.source == "Mooncake conversation trace (Apache-2.0)"


def test_bad_scaling_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rate scale"):
        load_trace("synthetic", rate_scale=0)
    with pytest.raises(ValueError, match="duration"):
        load_trace("synthetic", duration_seconds=-5)


# ---------------------------------------------------------------------------------------------------------
# Trace helpers


def test_windows_peak_and_means() -> None:
    requests = tuple(SimRequest(id=index, arrival=arrival, prompt_tokens=prompt, output_tokens=output)
                     for index, (arrival, prompt, output) in enumerate([(0.0, 100, 10), (10.0, 200, 20),
                                                                        (70.0, 300, 30), (125.0, 400, 40)]))
    trace = Trace(name="t", requests=requests, duration_seconds=125.0, source="")
    assert trace.rate_per_window(60) == [2 / 60, 1 / 60, 1 / 60]  # the partial last window over a full 60 s
    assert trace.peak_rate(60) == 2 / 60
    assert trace.mean_rate == 4 / 125
    assert (trace.mean_prompt_tokens, trace.mean_output_tokens) == (250.0, 25.0)


def test_fresh_requests_are_unserved_copies() -> None:
    trace = load_trace("synthetic", duration_seconds=60, seed=1)
    first = trace.fresh_requests()
    first[0].finished_at = 3.0
    second = trace.fresh_requests()
    assert second[0].finished_at is None
    assert trace.requests[0].finished_at is None
    assert [(r.id, r.arrival) for r in second] == [(r.id, r.arrival) for r in trace.requests]
