"""The operator's HTTP endpoint: ``/healthz`` for the kubelet's probes and ``/metrics`` for Prometheus.

One port for both (8080 in the pod), served by the operator itself rather than by Kopf's liveness
endpoint: a standby replica runs no Kopf, and must still answer its probes and show ``poolpilot_leader 0``.
The probe answers from the same event loop the evaluations run on, so a loop that hangs fails it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["HealthReport", "OperatorHttpServer", "listen_address"]


@dataclass(frozen=True)
class HealthReport:
    role: str  # "leader", "standby" or "single" (leader election off)
    pools: int
    healthy: bool = True
    detail: str = ""


def listen_address(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a liveness URL such as ``http://0.0.0.0:8080/healthz`` or ``http://[::]:8080/healthz``."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"a liveness URL needs a host and a port: {url!r}")
    return parts.hostname, parts.port, parts.path or "/healthz"


class OperatorHttpServer:
    def __init__(self, url: str, health: Callable[[], HealthReport]) -> None:
        self.host, self.port, self.health_path = listen_address(url)
        self._health = health
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(self.health_path, self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        report = self._health()
        body = {"role": report.role, "pools": report.pools, **({"detail": report.detail} if report.detail else {})}
        return web.Response(status=200 if report.healthy else 500, text=json.dumps(body),
                            content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
