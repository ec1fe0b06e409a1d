"""The Grafana dashboard: its shape, and every query run against a real Prometheus holding the series.

The Prometheus is the one of tests/monitoring/world.py: the operator's whole metric contract (a leader
and a standby), a pool's fake vLLM replicas and router, all scraped and relabelled by the jobs of
manifests/monitoring/. Each panel's PromQL, with Grafana's variables substituted, must run without error
and return series; a few stat panels must show the numbers the world was built with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from controller.core.signals import VLLM_METRICS
from controller.sources.metrics.names import ROUTER_METRICS, VLLM_COUNTERS, VLLM_TTFT
from tests.monitoring.generate import DASHBOARD, dashboard_text
from tests.monitoring.operator_metrics import OPERATOR_METRICS
from tests.monitoring.world import PLAIN_NAMESPACE, REPLICA_VALUES, MonitoringWorld

__all__: list[str] = []

Json = dict[str, Any]
GRID_WIDTH = 24
# What Grafana substitutes for its built-in variables (durations it would choose for a 15 s scrape interval;
# this Prometheus has a few seconds of samples at 1 s, so a minute's window holds them all).
BUILT_INS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
SELECTIONS = {  # (namespace, pool) as Grafana formats them: one value, or "All" (allValue .*)
    "one pool": (PLAIN_NAMESPACE, "llama-8b"),
    "all": (".*", ".*"),
}
METRIC_NAME = re.compile(r"\b(poolpilot_[a-z_]+|vllm:[a-z_:]+|up)\b")
LABEL_NAMES = {"poolpilot_io_pool", "poolpilot_io_router"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
VLLM_NAMES = {VLLM_METRICS.WAITING, VLLM_METRICS.RUNNING, VLLM_METRICS.KV_CACHE, VLLM_METRICS.KV_CACHE_LEGACY,
              VLLM_COUNTERS.PROMPT_TOKENS, VLLM_COUNTERS.GENERATION_TOKENS, VLLM_TTFT.BUCKET}
ROUTER_NAMES = {ROUTER_METRICS.REQUESTS, ROUTER_METRICS.IN_FLIGHT, ROUTER_METRICS.SPILLS}


def dashboard() -> Json:
    loaded: Json = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> Iterator[Json]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel.get("targets", [])]


def substitute(expr: str, namespace: str, pool: str) -> str:
    for name, value in BUILT_INS.items():
        expr = expr.replace(name, value)
    expr = expr.replace("${namespace}", namespace).replace("$namespace", namespace)
    expr = expr.replace("${pool}", pool).replace("$pool", pool)
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", expr)
    assert not leftover, f"variables the test does not substitute: {leftover} in {expr}"
    return expr


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == dashboard_text(), (
        "grafana-dashboard.json is stale: run `python -m tests.monitoring.generate`")


def test_the_dashboard_reads_one_datasource_variable_and_the_pool_variables() -> None:
    board = dashboard()
    assert 38 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "pool"}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["namespace"]["definition"] == "label_values(poolpilot_pool_replicas, namespace)"
    assert variables["pool"]["definition"] == 'label_values(poolpilot_pool_replicas{namespace=~"$namespace"}, pool)'
    for name in ("namespace", "pool"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_the_panels_have_unique_ids_and_never_overlap() -> None:
    all_panels = list(panels())
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_rows_are_the_fleet_and_the_pool() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows[0] == "Fleet overview"
    assert [row for row in rows if row.startswith("Pool detail")], rows


def test_the_queries_name_only_what_the_operator_and_the_pools_export() -> None:
    known = OPERATOR_METRICS | VLLM_NAMES | ROUTER_NAMES | {"up"}
    for title, expr in queries():
        for name in set(METRIC_NAME.findall(expr)) - LABEL_NAMES:
            base = next((name.removesuffix(suffix) for suffix in HISTOGRAM_SUFFIXES
                         if name.endswith(suffix) and name.removesuffix(suffix) in known), name)
            assert name in known or base in known, f"{title}: {name} is not exported by the operator or a pool"


def _query(world: MonitoringWorld, expr: str) -> list[Json]:
    try:
        return world.prom.query(expr)
    except RuntimeError as error:  # Prometheus' own message: a parse or execution error
        raise AssertionError(f"{expr}: {error}") from None


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_every_query_runs_and_returns_series(monitoring_world: MonitoringWorld, selection: str) -> None:
    namespace, pool = SELECTIONS[selection]
    assert len(queries()) >= 40, "the dashboard lost its panels"
    empty = []
    for title, expr in queries():
        if not _query(monitoring_world, substitute(expr, namespace, pool)):
            empty.append(f"{title}: {expr}")
    assert empty == []


def test_the_variables_list_the_pools(monitoring_world: MonitoringWorld) -> None:
    """Grafana's label_values(METRIC, LABEL) is the label-values API filtered by the metric's selector."""
    def label_values(label: str, match: str) -> set[str]:
        path = f"/api/v1/label/{label}/values?match[]={match}"
        return set(monitoring_world.prom.get_api(path)["data"])

    assert label_values("namespace", "poolpilot_pool_replicas") == {PLAIN_NAMESPACE, "tenant-b"}
    assert label_values("pool", f'poolpilot_pool_replicas{{namespace=~"{PLAIN_NAMESPACE}"}}') == {"llama-8b", "batch"}


@pytest.mark.parametrize(("title", "selection", "expected"), [
    ("Pools evaluated", "all", 3),  # the leader's three; the standby's 0
    ("Leader", "all", 1),
    ("Operator replicas up", "all", 2),  # the leader and the standby
    ("Pools in Full fallback", "all", 1),  # tenant-b/idle
    ("Pools in Full fallback", "one pool", 0),  # none in llm
    ("Pools without signals", "all", 1),  # tenant-b/idle
    ("Requests waiting", "one pool", sum(waiting for waiting, _, _ in REPLICA_VALUES.values())),
    ("Requests running", "one pool", sum(running for _, running, _ in REPLICA_VALUES.values())),
])
def test_panels_show_the_worlds_numbers(monitoring_world: MonitoringWorld, title: str, selection: str,
                                        expected: float) -> None:
    namespace, pool = SELECTIONS[selection]
    (expr,) = [expr for panel_title, expr in queries() if panel_title == title]
    rows = _query(monitoring_world, substitute(expr, namespace, pool))
    assert [float(row["value"][1]) for row in rows] == [expected]
