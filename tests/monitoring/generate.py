"""Write the monitoring Component's generated files: ``python -m tests.monitoring.generate``.

- ``manifests/monitoring/prometheusrule.yaml``: the PrometheusRule, whose ``spec`` is the plain rules file
  ``manifests/monitoring/prometheus-rules.yaml`` from its ``groups:`` on, copied as text (its comments, the
  why of each threshold, stay with the rules). The plain file is the one to edit.
- ``manifests/monitoring/grafana-dashboard.json``: the Grafana dashboard, built from the panels below (the
  layout is computed, so a panel added here never overlaps another).

The tests (tests/monitoring/) fail when a committed file differs from what this writes.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DASHBOARD", "MONITORING", "PLAIN_RULES", "PROMETHEUS_RULE", "dashboard", "dashboard_text",
           "prometheus_rule_text"]

REPO = pathlib.Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
PLAIN_RULES = MONITORING / "prometheus-rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

Json = dict[str, Any]

# --- the PrometheusRule ------------------------------------------------------------------------------

_RULE_HEADER = """\
# GENERATED from prometheus-rules.yaml by `python -m tests.monitoring.generate`: edit that file, not this one.
# The Prometheus Operator loads it when its Prometheus' ruleSelector selects these labels (kube-prometheus-stack
# selects its release label by default: add it in an overlay, or set ruleSelectorNilUsesHelmValues=false).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: poolpilot
  namespace: poolpilot-system
  labels:
    app.kubernetes.io/name: poolpilot
    app.kubernetes.io/part-of: poolpilot
spec:
"""


def prometheus_rule_text(plain_rules: str) -> str:
    """The PrometheusRule: the plain file from its ``groups:`` line on, indented under ``spec:``."""
    lines = plain_rules.splitlines()
    start = next((index for index, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise ValueError("the plain rules file has no top-level 'groups:' line")
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return _RULE_HEADER + body


# --- the dashboard -----------------------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
NS = 'namespace=~"$namespace"'
POOL = f'{NS}, pool=~"$pool"'
REPLICA = f'{NS}, poolpilot_io_pool=~"$pool"'  # the pool's vLLM replicas, labelled by the scrape
ROUTER = f'{NS}, poolpilot_io_router=~"$pool"'  # the pool's router pods, likewise


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[Query]
    description: str = ""
    kind: str = "timeseries"  # or stat, state-timeline
    unit: str = "short"
    width: int = 8
    height: int = 8
    mappings: Sequence[Json] = ()
    stack: bool = False
    bars: bool = False
    decimals: int | None = None
    options: Json = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: Sequence[Panel]


def _value_map(values: dict[str, tuple[str, str]]) -> Json:
    return {"type": "value", "options": {value: {"text": text, "color": color, "index": index}
                                         for index, (value, (text, color)) in enumerate(values.items())}}


LEADER_MAP = _value_map({"0": ("none", "red"), "1": ("held", "green")})
FALLBACK_MAP = _value_map({"0": ("Off", "green"), "1": ("Overflow", "orange"), "2": ("Full", "red")})
AVAILABLE_MAP = _value_map({"0": ("blind", "red"), "1": ("read", "green")})


def _quantiles(histogram: str, by: str, selector: str = "", quantiles: Sequence[float] = (0.5, 0.99)) -> list[Query]:
    by_le = ", ".join(["le", *filter(None, [by])])
    prefix = f"{{{{{by.split(', ')[-1]}}}}} " if by else ""
    return [Query(f"histogram_quantile({q}, sum by ({by_le}) "
                  f"(rate({histogram}_bucket{{{selector}}}[$__rate_interval])))", f"{prefix}p{round(q * 100)}")
            for q in quantiles]


FLEET = Row("Fleet overview", [
    Panel("Pools evaluated", [Query("sum(poolpilot_pools)")], kind="stat", width=4, height=4,
          description="InferencePools the leader evaluates (a standby evaluates none)."),
    Panel("Leader", [Query("max(poolpilot_leader)")], kind="stat", width=4, height=4, mappings=[LEADER_MAP],
          description="Whether an operator replica holds the Lease (PoolPilotNoLeader when none does)."),
    Panel("Operator replicas up", [Query('sum(up{job="poolpilot-metrics"})')], kind="stat", width=4, height=4,
          description="Scrape targets of the poolpilot-metrics job that answer (PoolPilotOperatorDown at 0)."),
    Panel("Version", [Query("max by (version) (poolpilot_build_info)", "{{version}}")], kind="stat", width=4,
          height=4, options={"textMode": "name"}),
    Panel("Pools in Full fallback",
          [Query(f'count(max by (namespace, pool) (poolpilot_pool_fallback_mode{{mode="Full", {NS}}}) == 1) '
                 "or vector(0)")], kind="stat", width=4, height=4,
          description="Pools sending every request to the hosted API (by design at zero replicas)."),
    Panel("Pools without signals",
          [Query(f"count(max by (namespace, pool) (poolpilot_pool_metrics_available{{{NS}}}) == 0) or vector(0)")],
          kind="stat", width=4, height=4, description="MetricsAvailable=False: these pools hold their size."),
    Panel("Evaluation duration", _quantiles("poolpilot_evaluation_duration_seconds", ""), unit="s",
          description="One evaluation of one pool: observe, plan, apply, report."),
    Panel("Evaluations", [Query(f"sum by (result) (rate(poolpilot_pool_evaluations_total{{{NS}}}[$__rate_interval]))",
                                "{{result}}")], unit="ops"),
    Panel("Kubernetes API errors",
          [Query("sum by (verb, code) (rate(poolpilot_kube_api_errors_total[$__rate_interval]))", "{{verb}} {{code}}")],
          unit="reqps", description="Failed calls of the operator's own client (404, 409 and 429 are often normal)."),
    Panel("Interruption queue messages",
          [Query("sum by (result) (rate(poolpilot_interruption_messages_total[$__rate_interval]))", "{{result}}")],
          unit="ops", description="SQS messages by what they were; rejected ones are not EC2 events."),
    Panel("Reclaim notices acted on",
          [Query("sum by (kind, source) (increase(poolpilot_notices_total[$__rate_interval]))",
                 "{{kind}} ({{source}})")], bars=True),
    Panel("Drain duration (notice to pod gone)",
          _quantiles("poolpilot_drain_duration_seconds", "capacity_type"), unit="s"),
    Panel("Pools by fallback mode",
          [Query(f"sum by (mode) (max by (namespace, pool, mode) (poolpilot_pool_fallback_mode{{{NS}}}))",
                 "{{mode}}")], stack=True),
    Panel("Cost per hour: pools and the hosted API",
          [Query("sum by (component, currency) (max by (namespace, pool, component, currency) "
                 f"(poolpilot_pool_cost_per_hour{{{NS}}}))", "{{component}} ({{currency}})")], width=16,
          description="component=pool: the replicas now; component=api: the hosted API's share."),
])

POOL_DETAIL = Row("Pool detail: the operator's view", [
    Panel("Replicas desired and ready",
          [Query(f"max by (namespace, pool, capacity_type, state) (poolpilot_pool_replicas{{{POOL}}})",
                 "{{pool}} {{capacity_type}} {{state}}")]),
    Panel("Fallback mode",
          [Query(f'max by (namespace, pool) (poolpilot_pool_fallback_mode{{mode="Overflow", {POOL}}}) '
                 f'+ 2 * max by (namespace, pool) (poolpilot_pool_fallback_mode{{mode="Full", {POOL}}})',
                 "{{namespace}}/{{pool}}")], kind="state-timeline", mappings=[FALLBACK_MAP]),
    Panel("Signals read",
          [Query(f"max by (namespace, pool) (poolpilot_pool_metrics_available{{{POOL}}})", "{{pool}}")],
          kind="state-timeline", mappings=[AVAILABLE_MAP], description="The MetricsAvailable condition."),
    Panel("Queue and running requests (signals)",
          [Query(f'max by (namespace, pool, signal) (poolpilot_pool_signal{{signal=~"queue_depth|running_requests", '
                 f"{POOL}}})", "{{pool}} {{signal}}")]),
    Panel("KV cache utilization (signal)",
          [Query(f'max by (namespace, pool) (poolpilot_pool_signal{{signal="kv_cache_utilization", {POOL}}})',
                 "{{pool}}")], unit="percentunit"),
    Panel("Time to first token (signal)",
          [Query(f'max by (namespace, pool) (poolpilot_pool_signal{{signal="ttft_seconds", {POOL}}})', "{{pool}}")],
          unit="s", description="The percentile of spec.slo the scaler read."),
    Panel("Token rates (signals)",
          [Query(f'max by (namespace, pool, signal) (poolpilot_pool_signal{{signal=~".*_tokens_per_second", '
                 f"{POOL}}})", "{{pool}} {{signal}}")], unit="short"),
    Panel("Age of the signals and of the last evaluation",
          [Query(f"max by (namespace, pool) (poolpilot_pool_signals_age_seconds{{{POOL}}})", "{{pool}} signals"),
           Query(f"time() - max by (namespace, pool) (poolpilot_pool_last_evaluation_timestamp_seconds{{{POOL}}})",
                 "{{pool}} last evaluation")], unit="s"),
    Panel("Scaling decisions",
          [Query(f"sum by (namespace, pool, reason) (increase(poolpilot_pool_decisions_total{{{POOL}}}"
                 "[$__rate_interval]))", "{{pool}} {{reason}}")], bars=True),
    Panel("Events posted",
          [Query(f"sum by (namespace, pool, type, reason) (increase(poolpilot_pool_events_total{{{POOL}}}"
                 "[$__rate_interval]))", "{{pool}} {{reason}}")], bars=True),
    Panel("Drains and missed deadlines",
          [Query(f'sum by (namespace, pool) (increase(poolpilot_pool_events_total{{reason="SpotInterruptionNotice", '
                 f"{POOL}}}[$__rate_interval]))", "{{pool}} notices"),
           Query(f'sum by (namespace, pool) (increase(poolpilot_pool_events_total{{reason="ReplicaDrained", '
                 f"{POOL}}}[$__rate_interval]))", "{{pool}} drained"),
           Query(f"sum by (namespace, pool) (increase(poolpilot_drain_deadline_missed_total{{{POOL}}}"
                 "[$__rate_interval]))", "{{pool}} deadline missed")], bars=True),
    Panel("Spot replicas on on-demand",
          [Query(f"max by (namespace, pool) (poolpilot_pool_spot_moved_replicas{{{POOL}}})", "{{pool}}")],
          description="status.spot.movedReplicas: spot capacity is missing."),
    Panel("Cost per hour",
          [Query(f"max by (namespace, pool, component, currency) (poolpilot_pool_cost_per_hour{{{POOL}}})",
                 "{{pool}} {{component}} ({{currency}})")], width=24,
          description="Per hour, in the currency of spec.cost (the legend names it)."),
])

REPLICAS = Row("Pool detail: the replicas (vLLM) and the router", [
    Panel("Requests waiting",
          [Query(f"sum by (namespace, poolpilot_io_pool) (vllm:num_requests_waiting{{{REPLICA}}})",
                 "{{poolpilot_io_pool}}")], description="vllm:num_requests_waiting, summed over the replicas."),
    Panel("Requests running",
          [Query(f"sum by (namespace, poolpilot_io_pool) (vllm:num_requests_running{{{REPLICA}}})",
                 "{{poolpilot_io_pool}}")]),
    Panel("KV cache use",
          [Query("avg by (namespace, poolpilot_io_pool) (avg by (namespace, poolpilot_io_pool, pod) "
                 f"(vllm:kv_cache_usage_perc{{{REPLICA}}} or vllm:gpu_cache_usage_perc{{{REPLICA}}}))",
                 "{{poolpilot_io_pool}}")], unit="percentunit",
          description="Per replica, then over replicas; vllm:gpu_cache_usage_perc before vLLM 0.9.2."),
    Panel("Waiting per replica",
          [Query(f"sum by (namespace, poolpilot_io_pool, pod) (vllm:num_requests_waiting{{{REPLICA}}})",
                 "{{pod}}")]),
    Panel("Tokens per second",
          [Query(f"sum by (namespace, poolpilot_io_pool) (rate(vllm:prompt_tokens_total{{{REPLICA}}}"
                 "[$__rate_interval]))", "{{poolpilot_io_pool}} prompt"),
           Query(f"sum by (namespace, poolpilot_io_pool) (rate(vllm:generation_tokens_total{{{REPLICA}}}"
                 "[$__rate_interval]))", "{{poolpilot_io_pool}} generation")]),
    Panel("Time to first token",
          _quantiles("vllm:time_to_first_token_seconds", "namespace, poolpilot_io_pool", REPLICA, (0.5, 0.9, 0.99)),
          unit="s"),
    Panel("Replica scrape targets up",
          [Query(f"sum by (namespace, poolpilot_io_pool) (up{{{REPLICA}}})", "{{poolpilot_io_pool}} up"),
           Query(f"count by (namespace, poolpilot_io_pool) (up{{{REPLICA}}})", "{{poolpilot_io_pool}} targets")]),
    Panel("Router requests by backend",
          [Query(f"sum by (namespace, poolpilot_io_router, backend, outcome) "
                 f"(rate(poolpilot_router_requests_total{{{ROUTER}}}[$__rate_interval]))",
                 "{{poolpilot_io_router}} {{backend}} {{outcome}}")], unit="reqps"),
    Panel("Router in flight and spills",
          [Query(f"sum by (namespace, poolpilot_io_router, backend) (poolpilot_router_in_flight{{{ROUTER}}})",
                 "{{poolpilot_io_router}} in flight ({{backend}})"),
           Query(f"sum by (namespace, poolpilot_io_router, reason) "
                 f"(rate(poolpilot_router_spills_total{{{ROUTER}}}[$__rate_interval]))",
                 "{{poolpilot_io_router}} spills/s ({{reason}})")]),
])

ROWS = (FLEET, POOL_DETAIL, REPLICAS)


def _field_config(panel: Panel) -> Json:
    defaults: Json = {"unit": panel.unit, "mappings": list(panel.mappings)}
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line",
            "fillOpacity": 80 if panel.bars else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack or panel.bars else "none", "group": "A"},
        }
    if panel.kind == "stat" or panel.mappings:
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> Json:
    if panel.kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value", "graphMode": "none", "textMode": "auto", **panel.options}
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True}
    if panel.kind == "state-timeline":
        return {"legend": legend, "mergeValues": True, "showValue": "auto", "rowHeight": 0.9, **panel.options}
    return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}, **panel.options}


def _variables() -> list[Json]:
    def query_variable(name: str, label: str, query: str) -> Json:
        return {
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": query, "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0, "regex": "", "options": [],
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "hide": 0,
         "refresh": 1, "regex": "", "current": {}, "options": []},
        query_variable("namespace", "Namespace", "label_values(poolpilot_pool_replicas, namespace)"),
        query_variable("pool", "Pool", 'label_values(poolpilot_pool_replicas{namespace=~"$namespace"}, pool)'),
    ]


def dashboard() -> Json:
    panels: list[Json] = []
    next_id = 1
    y = 0
    for row in ROWS:
        panels.append({"type": "row", "id": next_id, "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:  # the next line of the row
                x, y, line_height = 0, y + line_height, 0
            targets = [{"refId": chr(ord("A") + index), "datasource": DATASOURCE, "expr": query.expr,
                        "legendFormat": query.legend or "__auto", "range": True, "instant": False}
                       for index, query in enumerate(panel.queries)]
            panels.append({
                "type": panel.kind, "id": next_id, "title": panel.title, "description": panel.description,
                "datasource": DATASOURCE, "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
                "targets": targets, "fieldConfig": _field_config(panel), "options": _options(panel),
            })
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": "poolpilot",
        "title": "PoolPilot",
        "description": "The PoolPilot operator and its InferencePools: manifests/monitoring/ in the repository.",
        "tags": ["poolpilot", "vllm"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "templating": {"list": _variables()},
        "panels": panels,
    }


def dashboard_text() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    PROMETHEUS_RULE.write_text(prometheus_rule_text(PLAIN_RULES.read_text(encoding="utf-8")), encoding="utf-8")
    DASHBOARD.write_text(dashboard_text(), encoding="utf-8")
    print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)} and {DASHBOARD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
