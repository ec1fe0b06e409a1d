"""The progress bar: what it writes, when, and when it stays quiet."""

from __future__ import annotations

import io

from controller.sim.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_forced_on_it_draws_label_percent_and_simulated_minutes() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(3600.0, label="poolpilot", stream=stream, enabled=True, clock=clock)
    progress.update(900.0)
    assert stream.getvalue().startswith("\rpoolpilot [")
    assert " 25% 15.0/60.0 simulated min" in stream.getvalue()


def test_it_redraws_at_most_ten_times_a_second() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(100.0, label="run", stream=stream, enabled=True, clock=clock)
    for step in range(100):
        clock.now = step * 0.01  # 100 updates over one second of wall time
        progress.update(float(step))
    assert 9 <= stream.getvalue().count("\r") <= 11


def test_close_draws_the_final_state_and_ends_the_line() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with Progress(600.0, label="keda", stream=stream, enabled=True, clock=clock) as progress:
        progress.update(60.0)
        clock.now = 0.01
        progress.update(600.0)  # too soon to redraw
        assert "100%" not in stream.getvalue()
    assert stream.getvalue().endswith("100% 10.0/10.0 simulated min\n")
    progress.update(700.0)  # after close: silent
    assert stream.getvalue().count("\r") == 2


def test_a_shorter_line_wipes_the_longer_one() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(60_000.0, label="p", stream=stream, enabled=True, clock=clock)
    progress.update(60_000.0)  # 1000.0/1000.0 simulated min
    clock.now = 1.0
    progress.update(0.0)  # 0.0/1000.0: three characters shorter
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second) == len(first)
    assert second.endswith("0.0/1000.0 simulated min   ")


def test_not_a_terminal_it_writes_nothing() -> None:
    stream = io.StringIO()  # isatty() is False
    progress = Progress(60.0, label="run", stream=stream)
    progress.update(30.0)
    progress.close()
    silenced = Progress(60.0, label="run", stream=stream, enabled=False)
    silenced.update(30.0)
    silenced.close()
    assert stream.getvalue() == ""


def test_on_a_terminal_it_draws_by_default() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    Progress(60.0, label="run", stream=stream).update(30.0)
    assert "50%" in stream.getvalue()
