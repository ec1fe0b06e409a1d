"""The alerts: the real ``promtool`` checks and unit-tests them, and a real Prometheus evaluates them.

``promtool check rules`` runs on the plain file and on the PrometheusRule's groups; ``promtool test rules``
runs tests/monitoring/alerts-test.yaml against both, and that file must show every alert firing and every
alert silent. Without promtool these tests fail (the Debian prometheus package has it: ``make prometheus``).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devkube.prometheus import BINARY_ENV
from tests.monitoring.generate import PLAIN_RULES, PROMETHEUS_RULE, REPO, prometheus_rule_text
from tests.monitoring.operator_metrics import OPERATOR_METRICS
from tests.monitoring.world import MonitoringWorld

__all__: list[str] = []

ALERTS_TEST = pathlib.Path(__file__).with_name("alerts-test.yaml")
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/poolpilot/poolpilot/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning"}
METRIC_NAME = re.compile(r"\b(poolpilot_[a-z_]+|up)\b")
LABEL_NAMES = {"poolpilot_io_pool", "poolpilot_io_router"}


def promtool() -> str:
    """promtool from PATH, else beside the configured prometheus binary; a clear failure without it."""
    found = shutil.which("promtool")
    configured = os.environ.get(BINARY_ENV)
    if found is None and configured:
        beside = pathlib.Path(configured).with_name("promtool")
        found = str(beside) if os.access(beside, os.X_OK) else None
    if found is None:
        pytest.fail("promtool is not installed: it comes with the Debian prometheus package "
                    "(`sudo apt-get install prometheus`; `make prometheus` does it when run as root)")
    return found


def run_promtool(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def plain_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(PLAIN_RULES.read_text())["groups"]
    return groups


def alerts() -> Iterator[dict[str, Any]]:
    for group in plain_groups():
        yield from (rule for rule in group["rules"] if "alert" in rule)


@pytest.fixture
def prometheus_rule_groups(tmp_path: pathlib.Path) -> pathlib.Path:
    """The PrometheusRule's spec.groups, as a plain rules file."""
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    path = tmp_path / "from-prometheusrule.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_accepts_the_plain_rules() -> None:
    checked = run_promtool("check", "rules", str(PLAIN_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(list(alerts()))} rules found" in checked.stdout


def test_promtool_accepts_the_prometheusrule_groups(prometheus_rule_groups: pathlib.Path) -> None:
    checked = run_promtool("check", "rules", str(prometheus_rule_groups))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_prometheusrule_is_the_plain_file_under_spec() -> None:
    assert PROMETHEUS_RULE.read_text() == prometheus_rule_text(PLAIN_RULES.read_text()), (
        "prometheusrule.yaml is stale: run `python -m tests.monitoring.generate`")
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == plain_groups()


def test_promtool_unit_tests_pass_on_the_plain_rules() -> None:
    tested = run_promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_unit_tests_pass_on_the_prometheusrule(prometheus_rule_groups: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
    unit = yaml.safe_load(ALERTS_TEST.read_text())
    unit["rule_files"] = [str(prometheus_rule_groups)]
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = run_promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_alert_fails_the_unit_tests(tmp_path: pathlib.Path) -> None:
    """The unit tests can fail: a threshold moved makes promtool say so."""
    broken = PLAIN_RULES.read_text().replace("), 120)", "), 1200)")  # PoolNotEvaluated's floor
    assert broken != PLAIN_RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    unit = yaml.safe_load(ALERTS_TEST.read_text())
    unit["rule_files"] = ["rules.yaml"]
    (tmp_path / "alerts-test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = run_promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "PoolPilotPoolNotEvaluated" in tested.stdout + tested.stderr


def test_every_alert_is_shown_firing_and_silent() -> None:
    names = {rule["alert"] for rule in alerts()}
    firing: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            assert case["alertname"] in names, f"alerts-test.yaml tests an unknown alert {case['alertname']}"
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert names - firing == set(), "alerts never shown firing in alerts-test.yaml"
    assert names - silent == set(), "alerts never shown silent on healthy series in alerts-test.yaml"


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/runbook.md's headings: lowercased, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_each_alert_says_what_where_and_how_bad(alert: str) -> None:
    (rule,) = [rule for rule in alerts() if rule["alert"] == alert]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK_URL), url
    anchor = url.removeprefix(RUNBOOK_URL)
    assert anchor == alert.lower(), "each alert has its own runbook section, named as the alert"
    assert anchor in _runbook_anchors(), f"docs/runbook.md has no section {alert}"
    per_pool = "pool" in rule["expr"] and "by (namespace, pool)" in rule["expr"]
    if per_pool:
        assert "{{ $labels.namespace }}/{{ $labels.pool }}" in annotations["description"]


def test_the_rules_name_only_the_operators_metrics() -> None:
    for rule in alerts():
        names = set(METRIC_NAME.findall(rule["expr"])) - LABEL_NAMES
        assert names <= OPERATOR_METRICS | {"up"}, f"{rule['alert']}: unknown metrics {names - OPERATOR_METRICS}"


def test_a_real_prometheus_evaluates_every_rule_on_scraped_series(monitoring_world: MonitoringWorld) -> None:
    """No rule errors on real series (as scraped and relabelled), and only the one true alert is active."""
    prom = monitoring_world.prom
    deadline = time.monotonic() + 10
    while True:
        groups = prom.get_api("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = all(not rule["lastEvaluation"].startswith("0001") for rule in rules)
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alerts()}
    assert [(rule["name"], rule["lastError"]) for rule in rules if rule["health"] != "ok"] == []
    active = {(alert["labels"]["alertname"], alert["labels"].get("namespace"), alert["labels"].get("pool"))
              for alert in prom.get_api("/api/v1/alerts")["data"]["alerts"]}
    # The leader reports tenant-b/idle without signals (pending for its 10 minutes); at zero replicas, its Full
    # mode is the design; a leader and a standby are up.
    assert active == {("PoolPilotMetricsBlind", "tenant-b", "idle")}


def test_a_missing_promtool_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv(BINARY_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="promtool is not installed"):
        promtool()
