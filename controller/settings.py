"""Operator settings, from the environment (``POOLPILOT_*``); one place, typed, with units in the names."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OperatorSettings"]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POOLPILOT_", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty watches the whole cluster. Env: a JSON list.",
    )
    kubeconfig: str | None = Field(
        default=None, description="Path of a kubeconfig; unset uses in-cluster credentials or KUBECONFIG."
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for pools with metrics.source=prometheus and no url of their own."
    )
    liveness_endpoint: str = Field(
        default="http://0.0.0.0:8080/healthz", description="Where Kopf serves its liveness probe."
    )
    reporting_instance: str = Field(
        default="poolpilot", description="Shown as the Event's reporting instance; the pod name in-cluster."
    )
    prometheus_round_seconds: float = Field(
        default=1.0, gt=0, le=60,
        description="One round of Prometheus queries serves every pool asking within this long after it.",
    )
    signals_refresh_seconds: float = Field(
        default=15.0, ge=0, le=3600,
        description="The QUEUE and KV% shown in the status refresh at most this often, unless replicas change.",
    )
    api_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="Every Kubernetes API request gives up after this long (connect and read), so a "
                    "half-open connection fails an evaluation, which is retried with backoff, instead of "
                    "hanging a pool's loop while the liveness probe stays green.",
    )
    watch_timeout_seconds: int = Field(
        # Whole seconds: the API server refuses `timeoutSeconds=300.0` with 400.
        default=300, gt=0, le=3600,
        description="The API server ends each watch after this long and Kopf starts a new one; a watch "
                    "silent for longer than this plus api_timeout_seconds is dropped and restarted.",
    )
    list_chunk_size: int = Field(
        default=500, ge=1, le=10_000,
        description="Initial lists (before each watch) come in pages of this many objects.",
    )
    wake_debounce_seconds: float = Field(
        default=0.2, ge=0, le=5,
        description="After an event wakes a pool, wait this long so a burst of events costs one evaluation.",
    )
    max_concurrent_upgrades: int = Field(
        default=2, ge=1, le=1000,
        description="When a new operator version renders a different pod template for an unchanged spec, at "
                    "most this many pools roll their pods at a time (each surge asks for a GPU). A user's spec "
                    "change still applies at once.",
    )
