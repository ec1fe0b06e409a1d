"""``poolpilot simulate --plot FILE.png``: the runs' timelines, one panel per quantity, on one time axis.

Panels (minutes on the shared axis): the load (arrivals per second), replicas by capacity type (poolpilot
stacked, spot under on-demand; every other policy's total as a line), the queue depth, the share of
arrivals sent to the hosted API, and the cost per hour. Spot reclaim notices are vertical lines on every
panel. poolpilot (the timeline of that name, else the first) is drawn bold; the others are thin.

matplotlib is an optional dependency (``pip install 'poolpilot[sim]'``), imported only here, only when a
plot is asked for, with the non-interactive Agg canvas (no display, no pyplot global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from controller.sim.timeline import Timeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MISSING_MATPLOTLIB", "plot_timelines"]

MISSING_MATPLOTLIB = "--plot needs matplotlib: pip install 'poolpilot[sim]'"
PROMINENT_POLICY = "poolpilot"
_SPOT_COLOUR, _ON_DEMAND_COLOUR, _PROMINENT_COLOUR = "#4c9be8", "#f28e2b", "#1f3b73"
_RECLAIM_COLOUR = "#d62728"
# Thin lines for the other policies: a colour-blind-friendly qualitative set (Tableau 10 without the above).
_OTHER_COLOURS = ("#59a14f", "#b07aa1", "#9c755f", "#76b7b2", "#edc948", "#ff9da7", "#bab0ac", "#e15759")


def plot_timelines(timelines: Sequence[Timeline], path: Path, *, title: str) -> None:
    """Write a PNG of the runs to ``path``. Raises :class:`RuntimeError` when matplotlib is missing."""
    if not timelines:
        raise ValueError("nothing to plot: no timelines")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise RuntimeError(MISSING_MATPLOTLIB) from error

    prominent = next((timeline for timeline in timelines if timeline.policy == PROMINENT_POLICY), timelines[0])
    others = [timeline for timeline in timelines if timeline is not prominent]
    colours = {timeline.policy: _OTHER_COLOURS[index % len(_OTHER_COLOURS)] for index, timeline in enumerate(others)}
    colours[prominent.policy] = _PROMINENT_COLOUR

    figure = Figure(figsize=(12, 13), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    load, replicas, queue, api, cost = figure.subplots(5, 1, sharex=True)
    figure.suptitle(title, fontsize=14, fontweight="bold")

    def minutes(timeline: Timeline) -> list[float]:
        return [sample.t / 60 for sample in timeline.samples]

    load.plot(minutes(prominent), [sample.arrivals_per_second for sample in prominent.samples],
              color="#333333", linewidth=1.2)
    load.set_ylabel("arrivals / s")
    load.set_title("Load", loc="left", fontsize=10)

    spot = [float(sample.spot_replicas) for sample in prominent.samples]
    on_demand = [float(sample.on_demand_replicas) for sample in prominent.samples]
    replicas.stackplot(minutes(prominent), spot, on_demand, step="post", colors=(_SPOT_COLOUR, _ON_DEMAND_COLOUR),
                       alpha=0.85, labels=(f"{prominent.policy}: spot", f"{prominent.policy}: on-demand"))
    for timeline in others:
        replicas.step(minutes(timeline), [sample.spot_replicas + sample.on_demand_replicas
                                          for sample in timeline.samples],
                      where="post", color=colours[timeline.policy], linewidth=1.0, label=f"{timeline.policy}: total")
    replicas.set_ylabel("replicas")
    replicas.set_title("Replicas by capacity type", loc="left", fontsize=10)
    replicas.legend(loc="upper left", fontsize=8, ncol=3, framealpha=0.8)

    def per_policy(axes: Axes, values: str, scale: float = 1.0) -> None:
        for timeline in [*others, prominent]:  # poolpilot last: on top
            bold = timeline is prominent
            axes.plot(minutes(timeline), [getattr(sample, values) * scale for sample in timeline.samples],
                      color=colours[timeline.policy], linewidth=2.2 if bold else 1.0, alpha=1.0 if bold else 0.8,
                      label=timeline.policy, zorder=3 if bold else 2)

    per_policy(queue, "queue_depth")
    queue.set_ylabel("requests waiting")
    queue.set_title("Queue depth", loc="left", fontsize=10)
    queue.legend(loc="upper left", fontsize=8, ncol=4, framealpha=0.8)
    per_policy(api, "api_share", 100.0)
    api.set_ylabel("% of arrivals")
    api.set_ylim(-2, 102)
    api.set_title("Share sent to the hosted API", loc="left", fontsize=10)
    per_policy(cost, "cost_per_hour")
    cost.set_ylabel("$ / hour")
    cost.set_title("Cost per hour", loc="left", fontsize=10)
    cost.set_xlabel("minutes")

    reclaims = sorted(set(prominent.reclaims))
    for axes in (load, replicas, queue, cost):
        axes.set_ylim(bottom=0)
    for axes in (load, replicas, queue, api, cost):
        axes.grid(True, alpha=0.3)
        for index, moment in enumerate(reclaims):
            axes.axvline(moment / 60, color=_RECLAIM_COLOUR, linewidth=0.8, linestyle="--", alpha=0.7,
                         label="spot reclaim notice" if axes is load and index == 0 else None)
    if reclaims:
        load.legend(loc="upper left", fontsize=8, framealpha=0.8)
    figure.savefig(path, format="png")
