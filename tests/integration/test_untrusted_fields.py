"""What anyone who may edit pools can make the operator do, end to end: the real operator process on the
embedded API server, stand-in servers on 127.0.0.1.

- A pool naming a Prometheus the operator's admin did not allow gets MetricsAvailable=False
  (PrometheusUrlNotAllowed), and that address gets no request at all.
- What a Prometheus or a replica answers (an error page with a secret in it) never reaches the pool's
  status or Events: only what went wrong, and the HTTP status code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.api.crd import generate_crd
from controller.api.spec import API_GROUP, PLURAL
from devkube.cluster import DevCluster
from devkube.localrun import OperatorProcess
from tests.support.waiting import eventually

__all__: list[str] = []

NAMESPACE = "llm"
POOLS = f"{PLURAL}.{API_GROUP}"
SECRET = "sk-live-7f3a9c0d2e1b4a5f"


class _Server:
    """An HTTP server on 127.0.0.1 answering every request with ``status`` and ``body``, counting them."""

    def __init__(self, status: int, body: str) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def servers() -> Iterator[dict[str, _Server]]:
    made = {
        "unlisted": _Server(200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})),
        "failing-prometheus": _Server(500, f"upstream auth failed: token={SECRET}"),
        "login-page": _Server(200, f"<html>session expired, token={SECRET}</html>\n"),
    }
    try:
        yield made
    finally:
        for server in made.values():
            server.close()


def _pool(name: str, port: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"model": {"name": "m", "port": port, "gpusPerReplica": 0}, "replicas": {"min": 1, "max": 1},
                     "scaling": {"evaluationIntervalSeconds": 1}, "metrics": metrics}}


def _metrics_available(pool: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((pool or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "MetricsAvailable"), {})


def _warnings(cluster: DevCluster, name: str) -> list[dict[str, Any]]:
    return [event for event in cluster.list("v1/events", NAMESPACE)
            if event["involvedObject"]["name"] == name and event["reason"] == "MetricsUnavailable"]


def test_untrusted_urls_are_not_queried_and_answers_never_reach_status_or_events(
        servers: dict[str, _Server]) -> None:
    # The pool "leaky-replica"'s pod sits at 127.0.0.1, where the login page answers on the pool's port.
    with DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                              pod_ip=lambda namespace, pod, deployment: "127.0.0.1") as cluster:
        operator = OperatorProcess(cluster.kubeconfig_path, env={
            "POOLPILOT_ALLOWED_PROMETHEUS_URLS": json.dumps([servers["failing-prometheus"].url])})
        operator.start()
        try:
            cluster.create(POOLS, _pool("unlisted", 8000, {
                "source": "prometheus", "prometheus": {"url": servers["unlisted"].url}}))
            cluster.create(POOLS, _pool("leaky-prometheus", 8000, {
                "source": "prometheus", "prometheus": {"url": servers["failing-prometheus"].url}}))
            cluster.create(POOLS, _pool("leaky-replica", servers["login-page"].port, {"source": "pods"}))
            expected = {"unlisted": ("PrometheusUrlNotAllowed", "POOLPILOT_ALLOWED_PROMETHEUS_URLS"),
                        "leaky-prometheus": ("SourceUnreachable", "Prometheus answered HTTP 500"),
                        "leaky-replica": ("InvalidSamples", "line 1 is not the Prometheus text format")}
            for name, (reason, words) in expected.items():
                pool = eventually(lambda name=name: cluster.get(POOLS, NAMESPACE, name),  # type: ignore[misc]
                                  lambda p: _metrics_available(p).get("status") == "False", timeout=30,
                                  what=f"{name}: MetricsAvailable=False")
                condition = _metrics_available(pool)
                assert condition["reason"] == reason and words in condition["message"], condition
                warning = eventually(lambda name=name: _warnings(cluster, name),  # type: ignore[misc]
                                     lambda found: len(found) == 1, what=f"{name}: the MetricsUnavailable Warning")
                assert condition["message"] in warning[0]["message"]
            assert servers["unlisted"].requests == 0
            assert servers["failing-prometheus"].requests > 0 and servers["login-page"].requests > 0
            everything = json.dumps([cluster.list(POOLS, NAMESPACE), cluster.list("v1/events", NAMESPACE)])
            assert SECRET not in everything
        finally:
            operator.stop()
