"""The real kubectl against the emulator, with no extra flags."""

import datetime
import pathlib
import re
import subprocess
import threading
from collections.abc import Iterator

import pytest
import yaml

from devkube import DevCluster, KubectlError

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", "team-a"]) as c:
        yield c


@pytest.fixture
def with_crd(cluster: DevCluster) -> DevCluster:
    cluster.kubectl("apply", "-f", str(DATA / "crds" / "workerpools.yaml"))
    return cluster


def table(output: str) -> list[list[str]]:
    """Rows of kubectl's table output, cells split on runs of 2+ spaces (the header included)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def ago(**delta: float) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) - datetime.timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_apply_crd_then_cr(cluster: DevCluster) -> None:
    crd = cluster.kubectl("apply", "-f", str(DATA / "crds" / "workerpools.yaml"))
    assert (
        crd.stdout.strip() == "customresourcedefinition.apiextensions.k8s.io/workerpools.example.dev created"
    )
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=5s", "crd/workerpools.example.dev")

    cr = cluster.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    assert cr.stdout.strip() == "workerpool.example.dev/pool-a created"
    assert cr.stderr == ""
    again = cluster.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    assert again.stdout.strip() == "workerpool.example.dev/pool-a unchanged"
    stored = cluster.get("workerpools", "team-a", "pool-a")
    assert stored is not None and stored["spec"] == {"replicas": 3}
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]


def test_get_by_short_name_shows_printer_columns(with_crd: DevCluster) -> None:
    with_crd.put_object(
        "workerpools",
        {
            "metadata": {"name": "ready-pool", "namespace": "team-a", "creationTimestamp": ago(hours=5)},
            "spec": {"replicas": 2},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}],
            },
        },
    )
    with_crd.put_object(
        "workerpools",
        {
            "metadata": {"name": "young-pool", "namespace": "team-a", "creationTimestamp": ago(days=4)},
            "spec": {"replicas": 1},
        },
    )
    result = with_crd.kubectl("get", "wp", "-n", "team-a")
    assert result.stderr == ""  # e.g. no warnings about ambiguous short names
    assert table(result.stdout) == [
        ["NAME", "REPLICAS", "READY", "PHASE", "AGE"],
        ["ready-pool", "2", "True", "Running", "5h"],
        ["young-pool", "1", "4d"],  # the missing READY and PHASE cells are blank
    ]
    wide = with_crd.kubectl("get", "wp", "-A")
    assert table(wide.stdout)[0] == ["NAMESPACE", "NAME", "REPLICAS", "READY", "PHASE", "AGE"]
    by_category = with_crd.kubectl("get", "pools", "-n", "team-a", "-o", "name")
    assert by_category.stdout.split() == [
        "workerpool.example.dev/ready-pool",
        "workerpool.example.dev/young-pool",
    ]


def test_get_yaml_and_json(with_crd: DevCluster) -> None:
    with_crd.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    obj = yaml.safe_load(with_crd.kubectl("get", "wp", "pool-a", "-n", "team-a", "-o", "yaml").stdout)
    assert obj["apiVersion"] == "example.dev/v1" and obj["kind"] == "WorkerPool"
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["labels"] == {"tier": "batch"}
    assert obj["spec"] == {"replicas": 3}
    listing = yaml.safe_load(
        with_crd.kubectl("get", "wp", "-n", "team-a", "-l", "tier=batch", "-o", "json").stdout
    )
    assert [item["metadata"]["name"] for item in listing["items"]] == ["pool-a"]
    assert with_crd.kubectl("get", "wp", "-n", "team-a", "-l", "tier=web", "-o", "name").stdout == ""


def test_describe_shows_the_objects_events(with_crd: DevCluster) -> None:
    with_crd.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    pool = with_crd.get("workerpools", "team-a", "pool-a")
    assert pool is not None
    involved = {
        "apiVersion": "example.dev/v1",
        "kind": "WorkerPool",
        "namespace": "team-a",
        "name": "pool-a",
        "uid": pool["metadata"]["uid"],
    }
    for name, reason, target in [
        ("e1", "Scaled", involved),
        ("e2", "Elsewhere", {**involved, "name": "other"}),
    ]:
        with_crd.create(
            "events",
            {
                "metadata": {"name": name, "namespace": "team-a"},
                "involvedObject": target,
                "reason": reason,
                "message": f"{reason} it",
                "type": "Normal",
                "source": {"component": "poolpilot"},
                "firstTimestamp": ago(seconds=30),
                "lastTimestamp": ago(seconds=30),
                "count": 1,
            },
        )
    described = with_crd.kubectl("describe", "wp", "pool-a", "-n", "team-a").stdout
    assert re.search(r"^Events:\n.*Type\s+Reason\s+Age\s+From\s+Message", described, re.M)
    assert re.search(r"Normal\s+Scaled\s+\d+s\s+poolpilot\s+Scaled it", described)
    assert "Elsewhere" not in described


def test_apply_and_get_deployments(cluster: DevCluster) -> None:
    created = cluster.kubectl("apply", "-f", str(DATA / "deployment.yaml"))
    assert created.stdout.strip() == "deployment.apps/web created"

    def rolled_out() -> str | None:
        output = cluster.kubectl("get", "deployments", "-n", "team-a").stdout
        return output if "2/2" in output else None

    rows = table(cluster.wait_until(rolled_out))
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "2/2", "2", "2"]

    mark = cluster.mark()
    assert (
        cluster.kubectl("apply", "-f", str(DATA / "deployment.yaml")).stdout.strip()
        == "deployment.apps/web unchanged"
    )
    assert cluster.writes(since=mark) == []

    changed = (
        (DATA / "deployment.yaml")
        .read_text()
        .replace("nginx:1.27", "nginx:1.28")
        .replace("replicas: 2", "replicas: 3")
    )
    assert (
        cluster.kubectl("apply", "-f", "-", input=changed).stdout.strip() == "deployment.apps/web configured"
    )
    [patch] = cluster.writes(since=mark)
    assert patch.method == "PATCH" and patch.content_type == "application/strategic-merge-patch+json"
    stored = cluster.get("deployments", "team-a", "web")
    assert stored is not None and stored["metadata"]["generation"] == 2
    containers = stored["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("app", "nginx:1.28"),
        ("sidecar", "busybox:1.36"),
    ]
    assert containers[0]["env"] == [{"name": "MODE", "value": "fast"}]


def test_get_several_builtin_kinds(cluster: DevCluster) -> None:
    cluster.kubectl("apply", "-f", str(DATA / "deployment.yaml"))
    cluster.create(
        "services",
        {
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    cluster.create(
        "poddisruptionbudgets",
        {
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )
    # The stand-in disruption controller counts the ready pods: 2 healthy, 1 needed, 1 to spare.
    cluster.wait_until(
        lambda: ((cluster.get("poddisruptionbudgets", "team-a", "web") or {}).get("status") or {}).get(
            "disruptionsAllowed"
        )
        == 1
    )
    output = cluster.kubectl("get", "deployments,services,pdb", "-n", "team-a").stdout
    blocks = [table(block) for block in output.strip().split("\n\n")]
    assert blocks[0][0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert blocks[0][1][0] == "deployment.apps/web"
    assert blocks[1][0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert blocks[1][1][:2] == ["service/web", "ClusterIP"] and blocks[1][1][3:5] == ["<none>", "80/TCP"]
    assert blocks[2][0] == ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"]
    assert blocks[2][1][:4] == ["poddisruptionbudget.policy/web", "1", "N/A", "1"]


def test_apply_and_delete_a_namespace(cluster: DevCluster) -> None:
    assert (
        cluster.kubectl("apply", "-f", str(DATA / "namespace.yaml")).stdout.strip()
        == "namespace/team-b created"
    )
    rows = table(cluster.kubectl("get", "ns").stdout)
    assert ["team-b", "Active"] in [row[:2] for row in rows]
    assert (
        cluster.kubectl("delete", "-f", str(DATA / "namespace.yaml")).stdout.strip()
        == 'namespace "team-b" deleted'
    )
    assert cluster.get("namespaces", None, "team-b") is None


def test_delete_and_not_found(with_crd: DevCluster) -> None:
    with_crd.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    deleted = with_crd.kubectl("delete", "-f", str(DATA / "workerpool.yaml"))
    assert deleted.stdout.strip() == 'workerpool.example.dev "pool-a" deleted'
    with pytest.raises(KubectlError) as info:
        with_crd.kubectl("get", "wp", "pool-a", "-n", "team-a")
    assert (
        'Error from server (NotFound): workerpools.example.dev "pool-a" not found' in info.value.result.stderr
    )


def test_status_subresource_patch_and_no_flags_needed(with_crd: DevCluster) -> None:
    with_crd.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    with_crd.kubectl(
        "patch",
        "wp",
        "pool-a",
        "-n",
        "team-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running"}, "spec": {"replicas": 99}}',
    )
    stored = with_crd.get("workerpools", "team-a", "pool-a")
    assert (
        stored is not None and stored["status"] == {"phase": "Running"} and stored["spec"] == {"replicas": 3}
    )
    labelled = with_crd.kubectl("label", "wp", "pool-a", "-n", "team-a", "owner=me")
    assert labelled.stdout.strip() == "workerpool.example.dev/pool-a labeled"


def test_get_watch_prints_rows_as_they_change(with_crd: DevCluster) -> None:
    with_crd.kubectl("apply", "-f", str(DATA / "workerpool.yaml"))
    command = ["kubectl", "get", "wp", "-n", "team-a", "--watch", "--request-timeout=20s"]
    with subprocess.Popen(command, env=with_crd.kubectl_env(), stdout=subprocess.PIPE, text=True) as watcher:
        killer = threading.Timer(15, watcher.kill)  # a bound on the blocking reads below
        killer.start()
        try:
            assert watcher.stdout is not None
            lines = [watcher.stdout.readline() for _ in range(2)]  # the header and the listed row
            # Even if kubectl starts watching only after this write, it resumes from its list's version.
            with_crd.kubectl(
                "patch", "wp", "pool-a", "-n", "team-a", "--subresource=status", "--type=merge",
                "-p", '{"status": {"phase": "Running"}}',
            )  # fmt: skip
            lines.append(watcher.stdout.readline())
        finally:
            killer.cancel()
            watcher.kill()
    rows = table("".join(lines))
    assert rows[0] == ["NAME", "REPLICAS", "READY", "PHASE", "AGE"]
    assert [row[:2] for row in rows[1:]] == [["pool-a", "3"], ["pool-a", "3"]]
    assert "Running" not in rows[1] and rows[2][2] == "Running"


def test_rollout_status_and_wait_for_deployments(cluster: DevCluster) -> None:
    cluster.kubectl("apply", "-f", str(DATA / "deployment.yaml"))
    rollout = cluster.kubectl("rollout", "status", "deployment/web", "-n", "team-a", "--timeout=10s")
    assert rollout.stdout.strip() == 'deployment "web" successfully rolled out'
    waited = cluster.kubectl(
        "wait", "--for=condition=Available", "deployment/web", "-n", "team-a", "--timeout=10s"
    )
    assert waited.stdout.strip() == "deployment.apps/web condition met"


def test_unsupported_requests_fail_clearly(cluster: DevCluster) -> None:
    # kubectl's imperative generators send protobuf; server-side apply needs managedFields.
    for args in [("create", "configmap", "c1", "--from-literal=a=b"), ("apply", "--server-side", "-f", "-")]:
        result = cluster.kubectl(*args, input=(DATA / "namespace.yaml").read_text(), check=False)
        assert result.returncode == 1
        assert "the body of the request was in an unknown format" in result.stderr
    assert (
        cluster.get("configmaps", "default", "c1") is None
        and cluster.get("namespaces", None, "team-b") is None
    )
