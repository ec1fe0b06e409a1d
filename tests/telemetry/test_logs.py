"""The operator's log lines: JSON objects with a decision's fields as keys, or text with them as key=value."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from controller.api.status import InferencePoolStatus
from controller.core.events import PoolEvent
from controller.telemetry.logs import JsonFormatter, configure_logging, log_decisions

STATUS = InferencePoolStatus.model_validate({
    "replicas": {"desired": 4, "ready": 3, "spotDesired": 3, "spotReady": 2, "onDemandDesired": 1,
                 "onDemandReady": 1},
    "signals": {"queueDepth": 18, "kvCacheUtilization": 0.62},
    "fallback": {"mode": "Overflow"},
    "cost": {"currency": "USD", "hourly": 7.25}})
EVENT = PoolEvent("Warning", "FallbackOverflow", "fallback Off -> Overflow: 18 waiting")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]


def _capture(log_format: str, stream: io.StringIO) -> None:
    configure_logging(log_format, verbose=False)
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]


def test_a_decision_is_one_json_line_with_its_numbers(captured: io.StringIO) -> None:
    _capture("json", captured)
    log_decisions("llm", "qwen", [EVENT], STATUS)
    logging.getLogger("other").info("plain %s", "line", extra={"attempt": 2})
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["logger"] == "poolpilot.decisions" and first["level"] == "WARNING"
    assert (first["namespace"], first["pool"], first["reason"], first["type"]) == (
        "llm", "qwen", "FallbackOverflow", "Warning")
    assert (first["desired"], first["ready"], first["spot_desired"], first["queue_depth"]) == (4, 3, 3, 18)
    assert first["fallback_mode"] == "Overflow" and first["cost_per_hour"] == 7.25
    assert first["message"] == "pool llm/qwen FallbackOverflow: fallback Off -> Overflow: 18 waiting"
    assert "decision" not in first
    assert second["message"] == "plain line" and second["attempt"] == 2


def test_a_decision_in_text_carries_its_numbers_as_key_value(captured: io.StringIO) -> None:
    _capture("text", captured)
    log_decisions("llm", "qwen", [EVENT], STATUS)
    line = captured.getvalue().strip()
    assert "WARNING poolpilot.decisions: pool llm/qwen FallbackOverflow: fallback Off -> Overflow" in line
    assert " desired=4 ready=3 " in line and "queue_depth=18" in line and "fallback_mode=Overflow" in line
    assert "ttft_seconds" not in line  # unknown numbers are left out, not printed as None


def test_an_exception_is_a_field_of_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed" and "ValueError: boom" in entry["exception"]
