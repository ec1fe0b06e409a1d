"""--plot: the timelines become a PNG; without matplotlib, a clear error."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from controller.sim.plot import MISSING_MATPLOTLIB, plot_timelines
from controller.sim.timeline import Sample, Timeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def timeline(policy: str, spot: int, on_demand: int) -> Timeline:
    samples = [
        Sample(t=30.0 * step, arrivals_per_second=5.0 + (step % 7), spot_replicas=spot + step % 3,
               on_demand_replicas=on_demand, ready_replicas=spot + on_demand, queue_depth=float(step % 5),
               api_share=0.1 * (step % 4), cost_per_hour=3.0 * spot + 9.0 * on_demand)
        for step in range(40)
    ]
    return Timeline(policy=policy, interval_seconds=30.0, samples=samples, reclaims=[300.0, 310.0, 900.0])


def test_two_timelines_make_a_png(tmp_path: Path) -> None:
    path = tmp_path / "run.png"
    plot_timelines([timeline("keda", 0, 4), timeline("poolpilot", 3, 1)], path, title="azure-conv, 3x")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 20_000 < len(data) < 5_000_000  # five panels of lines, not an empty canvas
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1200, 1300)


def test_no_timelines_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no timelines"):
        plot_timelines([], tmp_path / "run.png", title="t")


def test_without_matplotlib_the_error_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now raises ImportError
    path = tmp_path / "run.png"
    with pytest.raises(RuntimeError) as raised:
        plot_timelines([timeline("poolpilot", 1, 1)], path, title="t")
    assert str(raised.value) == MISSING_MATPLOTLIB == "--plot needs matplotlib: pip install 'poolpilot[sim]'"
    assert isinstance(raised.value.__cause__, ImportError)
    assert not path.exists()
