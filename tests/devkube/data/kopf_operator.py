"""A tiny Kopf operator for the devkube tests: marks WorkerPools as Ready and posts an Event."""

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 30
    settings.networking.request_timeout = 10


@kopf.on.create("example.dev", "v1", "workerpools")
def provision(spec: kopf.Spec, patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
    patch.status["phase"] = "Ready"
    patch.status["conditions"] = [{"type": "Ready", "status": "True"}]
    kopf.info(body, reason="Provisioned", message=f"{spec.get('replicas', 0)} replicas")
