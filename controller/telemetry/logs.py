"""The operator's logs: text for a terminal, or one JSON object per line for a log store.

Every Event the operator posts is also one log line (logger ``poolpilot.decisions``), with the pool, the
Event's type and reason, its message, and the numbers it was decided on (replicas wanted and ready by capacity type, the
signals, the fallback mode, the hourly cost), as fields in JSON and as ``key=value`` in text, so on-call can
search "every FallbackFull in namespace llm last night" in either form.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.api.status import InferencePoolStatus
from controller.core.events import PoolEvent

__all__ = ["JsonFormatter", "configure_logging", "decision_fields", "log_decisions"]

_IN_MESSAGE = frozenset({"namespace", "pool", "type", "reason", "detail"})  # text: already in the message
decisions_logger = logging.getLogger("poolpilot.decisions")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has: the rest was passed in `extra` and becomes a field of its own.
# Kopf's object loggers add their settings and a skip flag: not fields anyone searches (its k8s_ref is).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "settings", "k8s_skip"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the `extra` fields, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key == "decision" and isinstance(value, Mapping):
                entry.update(value)  # a decision's fields are top-level keys, searchable as such
            elif key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class _TextDecisionFormatter(logging.Formatter):
    """Text lines; a decision's fields follow its message as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "decision", None)
        if isinstance(fields, Mapping):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k not in _IN_MESSAGE)
        return line


def configure_logging(log_format: str, *, verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextDecisionFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def decision_fields(namespace: str, pool: str, event: PoolEvent, status: InferencePoolStatus) -> dict[str, Any]:
    """The fields of one decision's log line: what was decided, and the numbers it was decided on."""
    replicas, signals, cost = status.replicas, status.signals, status.cost
    return {
        "namespace": namespace,
        "pool": pool,
        "type": event.type,
        "reason": event.reason,
        "detail": event.message,
        "desired": replicas.desired if replicas else None,
        "ready": replicas.ready if replicas else None,
        "spot_desired": replicas.spot_desired if replicas else None,
        "on_demand_desired": replicas.on_demand_desired if replicas else None,
        "queue_depth": signals.queue_depth if signals else None,
        "kv_cache_utilization": signals.kv_cache_utilization if signals else None,
        "ttft_seconds": signals.ttft_seconds if signals else None,
        "fallback_mode": status.fallback.mode if status.fallback else None,
        "cost_per_hour": cost.hourly if cost else None,
        "currency": cost.currency if cost else None,
    }


def log_decisions(namespace: str, pool: str, events: Iterable[PoolEvent], status: InferencePoolStatus) -> None:
    for event in events:
        fields = decision_fields(namespace, pool, event, status)
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        decisions_logger.log(level, "pool %s/%s %s: %s", namespace, pool, event.reason, event.message,
                             extra={"decision": fields})
