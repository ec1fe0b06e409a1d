"""A real Kopf operator (in a subprocess) against the emulator."""

import contextlib
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkube import DevCluster

DATA = pathlib.Path(__file__).parent / "data"
OPERATOR = DATA / "kopf_operator.py"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(crd_paths=[DATA / "crds"], namespaces=["default", "team-a"]) as c:
        yield c


@contextlib.contextmanager
def kopf_running(cluster: DevCluster) -> Iterator[subprocess.Popen[str]]:
    command = [
        sys.executable,
        "-m",
        "kopf",
        "run",
        "--standalone",
        "--all-namespaces",
        "--verbose",
        str(OPERATOR),
    ]
    process = subprocess.Popen(
        command, env=cluster.kubectl_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        assert "Traceback" not in output, output


def pool(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team-a"}, "spec": {"replicas": 2}}


def ready(cluster: DevCluster, name: str) -> Callable[[], bool]:
    def check() -> bool:
        obj = cluster.get("workerpools", "team-a", name)
        return obj is not None and obj.get("status", {}).get("phase") == "Ready"

    return check


def test_kopf_reacts_to_creation_and_restarts_without_writes(cluster: DevCluster) -> None:
    cluster.create("workerpools", pool("pool-1"))
    with kopf_running(cluster):
        cluster.wait_until(ready(cluster, "pool-1"), timeout=30)
        events = cluster.wait_until(
            lambda: [e for e in cluster.list("events", "team-a") if e["involvedObject"]["name"] == "pool-1"],
            timeout=10,
        )
    obj = cluster.get("workerpools", "team-a", "pool-1")
    assert obj is not None
    assert obj["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert obj["metadata"]["generation"] == 1  # Kopf's writes touched only metadata and status
    assert [(e["reason"], e["message"]) for e in events] == [("Provisioned", "2 replicas")]
    assert events[0]["involvedObject"]["uid"] == obj["metadata"]["uid"]
    kopf_writes = cluster.writes(user_agent="kopf", resource="workerpools")
    assert {w.subresource for w in kopf_writes} == {None, "status"}  # the status went via the subresource
    assert all(w.succeeded for w in cluster.writes(user_agent="kopf"))

    mark = cluster.mark()
    with kopf_running(cluster):
        # A canary handled after the restart proves that Kopf has listed and seen pool-1 by then.
        cluster.create("workerpools", pool("canary"))
        cluster.wait_until(ready(cluster, "canary"), timeout=30)
        time.sleep(0.5)
    assert cluster.writes(since=mark, name="pool-1") == []
    assert {w.name for w in cluster.writes(since=mark, resource="workerpools")} == {"canary"}
