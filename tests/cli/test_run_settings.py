"""`poolpilot run` with settings it cannot use: one clear line naming the variable, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

__all__: list[str] = []


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("POOLPILOT_ALLOWED_PROMETHEUS_URLS", '["http://prom:9090", "prom"]', "'prom' is not an http(s) URL"),
    ("POOLPILOT_ALLOWED_PROMETHEUS_URLS", "http://prom:9090", "a JSON list"),
    ("POOLPILOT_POD_IP", "pod-1", "'pod-1' is not an IP address"),
    ("POOLPILOT_LEASE_RENEW_DEADLINE_SECONDS", "9", "must be greater than POOLPILOT_LEASE_RENEW_DEADLINE_SECONDS"),
    ("POOLPILOT_LEASE_RETRY_PERIOD_SECONDS", "5.5", "greater than 1.2 x POOLPILOT_LEASE_RETRY_PERIOD_SECONDS"),
])
def test_a_bad_setting_is_one_line_naming_it(variable: str, value: str, words: str) -> None:
    result = subprocess.run([sys.executable, "-m", "controller.cli", "run"], capture_output=True, text=True,
                            env={**os.environ, variable: value}, timeout=60, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and words in lines[0], result.stderr
