"""The router's discovery against the embedded API server: the holder follows the pool's mode and the
EndpointSlices of POOL-replicas, which the tests write by hand (no slice controller runs)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import kubernetes
import pytest

from controller.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from controller.kube.client import build_api_client
from controller.router.discovery import discover, fallback_mode, in_flight_per_replica, replica_urls
from controller.router.view import RouterView, ViewHolder
from devkube import DevCluster

NS = "team-a"
POOL = "llama"
CRD = pathlib.Path(__file__).resolve().parents[2] / "crds" / "inferencepool.yaml"
WAIT_SECONDS = 20.0  # a bound on waiting, not a speed requirement (that is the bench's)


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(crd_paths=[CRD], namespaces=[NS], fake_pods=False, fake_workloads=False,
                              fake_endpointslices=False) as c:
        yield c


class Api:
    """What the tests write, through the real client."""

    def __init__(self, kubeconfig: str) -> None:
        self.client = build_api_client(kubeconfig)
        self.client.user_agent = "discovery-tests"
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.slices = kubernetes.client.DiscoveryV1Api(self.client)

    def create_pool(self) -> None:
        body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND,
                "metadata": {"name": POOL, "namespace": NS}, "spec": {"model": {"name": "m"}}}
        self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, NS, PLURAL, body)

    def set_mode(self, mode: str | None) -> None:
        status = {"fallback": {"mode": mode}} if mode else {"fallback": None}
        self.custom.patch_namespaced_custom_object_status(API_GROUP, API_VERSION, NS, PLURAL, POOL,
                                                          {"status": status})

    def put_slice(self, name: str, endpoints: list[dict[str, Any]], *, address_type: str = "IPv4",
                  service: str = f"{POOL}-replicas", port: int = 8000) -> None:
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": service}},
                "addressType": address_type, "endpoints": endpoints,
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
        try:
            self.slices.create_namespaced_endpoint_slice(NS, body)
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                raise
            self.slices.patch_namespaced_endpoint_slice(name, NS, {"endpoints": endpoints})

    def delete_slice(self, name: str) -> None:
        self.slices.delete_namespaced_endpoint_slice(name, NS)

    def close(self) -> None:
        self.client.close()


def endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


@pytest.fixture
def api(cluster: DevCluster) -> Iterator[Api]:
    client = Api(str(cluster.kubeconfig_path))
    yield client
    client.close()


@contextlib.asynccontextmanager
async def discovering(kubeconfig: str, **kwargs: Any) -> AsyncIterator[ViewHolder]:
    holder = ViewHolder()
    api_client = build_api_client(kubeconfig)
    api_client.user_agent = "router-discovery"
    task = asyncio.create_task(discover(NS, POOL, holder, api_client=api_client, **kwargs))
    try:
        yield holder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api_client.close()


async def until(holder: ViewHolder, wanted: Callable[[RouterView], bool]) -> RouterView:
    async with holder.changed:
        await asyncio.wait_for(holder.changed.wait_for(lambda: wanted(holder.view)), WAIT_SECONDS)
    return holder.view


async def becomes(holder: ViewHolder, view: RouterView) -> None:
    try:
        await until(holder, lambda current: current == view)
    except TimeoutError:
        pytest.fail(f"the holder has {holder.view}, not {view}")


async def test_the_view_is_known_after_both_lists_and_empty_without_slices(cluster: DevCluster, api: Api) -> None:
    api.create_pool()
    async with discovering(str(cluster.kubeconfig_path)) as holder:
        assert holder.view.known is False
        await becomes(holder, RouterView("Off", (), known=True))


async def test_the_holder_follows_the_slices_conditions_and_deletions(cluster: DevCluster, api: Api) -> None:
    api.create_pool()
    async with discovering(str(cluster.kubeconfig_path)) as holder:
        await becomes(holder, RouterView("Off", (), known=True))
        api.put_slice("llama-replicas-a", [
            endpoint("10.0.0.1", ready=True, serving=True, terminating=False),
            endpoint("10.0.0.2", ready=False, serving=False, terminating=False),  # not ready yet
            {"addresses": ["10.0.0.3"]},  # no conditions: ready and serving, per the API's docs
        ])
        await becomes(holder, RouterView("Off", ("http://10.0.0.1:8000", "http://10.0.0.3:8000"), known=True))

        # A second slice of the same Service (IPv6) merges in; another Service's slice does not.
        api.put_slice("llama-replicas-b", [endpoint("fd00::7", ready=True)], address_type="IPv6")
        api.put_slice("other-replicas-a", [endpoint("10.9.9.9", ready=True)], service="other-replicas")
        await becomes(holder, RouterView("Off", ("http://10.0.0.1:8000", "http://10.0.0.3:8000",
                                                 "http://[fd00::7]:8000"), known=True))

        # A draining replica leaves at once: terminating (serving while it finishes) is never used.
        api.put_slice("llama-replicas-a", [
            endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
            {"addresses": ["10.0.0.4"], "conditions": {"serving": True, "terminating": True}},  # ready unknown
            endpoint("10.0.0.2", ready=True, serving=True, terminating=False),
            {"addresses": ["10.0.0.3"], "conditions": {"serving": False}},
        ])
        await becomes(holder, RouterView("Off", ("http://10.0.0.2:8000", "http://[fd00::7]:8000"), known=True))

        api.delete_slice("llama-replicas-b")
        await becomes(holder, RouterView("Off", ("http://10.0.0.2:8000",), known=True))
        api.delete_slice("llama-replicas-a")
        await becomes(holder, RouterView("Off", (), known=True))


async def test_the_holder_follows_the_pools_fallback_mode(cluster: DevCluster, api: Api) -> None:
    api.create_pool()
    api.put_slice("llama-replicas-a", [endpoint("10.0.0.1", ready=True)])
    replicas = ("http://10.0.0.1:8000",)
    async with discovering(str(cluster.kubeconfig_path)) as holder:
        await becomes(holder, RouterView("Off", replicas, known=True))
        for mode in ("Overflow", "Full", "Off", "Full"):
            api.set_mode(mode)
            await becomes(holder, RouterView(mode, replicas, known=True))
        api.set_mode(None)  # no fallback status at all: Off
        await becomes(holder, RouterView("Off", replicas, known=True))


async def test_a_pool_created_later_and_deleted_again(cluster: DevCluster, api: Api) -> None:
    async with discovering(str(cluster.kubeconfig_path)) as holder:
        await becomes(holder, RouterView("Off", (), known=True))  # no pool yet: nothing spills
        api.create_pool()
        api.set_mode("Full")
        await becomes(holder, RouterView("Full", (), known=True))
        api.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, NS, PLURAL, POOL)
        await becomes(holder, RouterView("Off", (), known=True))


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_SECONDS * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    pytest.fail("the condition never held")


def lists_of(cluster: DevCluster, plural: str) -> int:
    return sum(1 for request in cluster.emulator.recent_requests()
               if request.method.upper() == "GET" and request.url.path.endswith(f"/{plural}")
               and request.params.get("watch") not in ("true", "1")
               and request.headers.get("User-Agent") == "router-discovery")


async def test_a_watch_whose_version_is_gone_lists_again_and_misses_nothing() -> None:
    # The server keeps three events of history: a watch resuming from an older version gets 410 Gone.
    with DevCluster.in_thread(crd_paths=[CRD], namespaces=[NS], fake_pods=False, fake_workloads=False,
                              fake_endpointslices=False, history_size=3) as cluster:
        api = Api(str(cluster.kubeconfig_path))
        try:
            api.create_pool()
            async with discovering(str(cluster.kubeconfig_path), watch_seconds=1) as holder:
                await becomes(holder, RouterView("Off", (), known=True))
                slice_lists, pool_lists = lists_of(cluster, "endpointslices"), lists_of(cluster, "inferencepools")
                core = kubernetes.client.CoreV1Api(api.client)
                for index in range(8):  # other objects' events push the watches' version out of history
                    core.create_namespaced_config_map(NS, {"metadata": {"name": f"noise-{index}"}})
                # The watches end after a second; resuming from a forgotten version, they get 410 Gone and
                # list again (a plain timeout resumes without a list).
                await eventually(lambda: lists_of(cluster, "endpointslices") > slice_lists
                                 and lists_of(cluster, "inferencepools") > pool_lists)
                api.put_slice("llama-replicas-a", [endpoint("10.0.0.1", ready=True)])
                await becomes(holder, RouterView("Off", ("http://10.0.0.1:8000",), known=True))
                api.set_mode("Overflow")
                await becomes(holder, RouterView("Overflow", ("http://10.0.0.1:8000",), known=True))
        finally:
            api.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_discovery_outlives_a_server_that_is_not_there_yet_and_stops_when_cancelled(
        tmp_path: pathlib.Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    async with discovering(str(kubeconfig)) as holder:
        await asyncio.sleep(1.5)  # connections refused, retried with backoff
        assert holder.view == RouterView()  # not known, and discovery is still running
        with DevCluster.in_thread(crd_paths=[CRD], namespaces=[NS], fake_pods=False, fake_workloads=False,
                                  fake_endpointslices=False, port=port) as cluster:
            api = Api(str(cluster.kubeconfig_path))
            try:
                api.create_pool()
                api.set_mode("Full")
                await becomes(holder, RouterView("Full", (), known=True))
            finally:
                api.close()
    # Cancelled: its threads end too (a watch blocked in a read is shut down, not waited out).
    for thread in [t for t in threading.enumerate() if t.name.startswith("discovery-")]:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), thread.name


def test_replica_urls_need_the_http_port_and_an_ip_address() -> None:
    base = {"addressType": "IPv4", "endpoints": [endpoint("10.0.0.1")]}
    assert replica_urls({**base, "ports": [{"name": "http", "port": 8000}]}) == ["http://10.0.0.1:8000"]
    assert replica_urls({**base, "ports": [{"name": "metrics", "port": 9000}]}) == []
    assert replica_urls({**base, "ports": None}) == []  # the placeholder slice of a Service without endpoints
    assert replica_urls({"addressType": "FQDN", "endpoints": [endpoint("a.example")],
                         "ports": [{"name": "http", "port": 80}]}) == []
    assert replica_urls({"addressType": "IPv4", "endpoints": [endpoint("not-an-ip"), endpoint("10.0.0.2")],
                         "ports": [{"name": "http", "port": 80}]}) == ["http://10.0.0.2:80"]


def test_fallback_mode_reads_the_status_and_defaults_to_off() -> None:
    assert fallback_mode({"status": {"fallback": {"mode": "Overflow"}}}) == "Overflow"
    assert fallback_mode({"status": {"fallback": {"mode": "Sideways"}}}) == "Off"
    assert fallback_mode({"status": {}}) == "Off"
    assert fallback_mode(None) == "Off"


@pytest.mark.parametrize(("fallback", "expected"), [
    ({"mode": "Overflow", "inFlightPerReplica": 18}, 18),
    ({"mode": "Overflow"}, None),  # not measured yet: the router keeps its configured budget
    ({"inFlightPerReplica": 0}, None),
    ({"inFlightPerReplica": -3}, None),
    ({"inFlightPerReplica": "18"}, None),
    ({"inFlightPerReplica": True}, None),
    ({"inFlightPerReplica": 2.5}, None),
])
def test_a_budget_in_the_status_counts_only_as_a_positive_integer(fallback: dict[str, Any],
                                                                   expected: int | None) -> None:
    assert in_flight_per_replica({"status": {"fallback": fallback}}) == expected
    assert in_flight_per_replica(None) is None and in_flight_per_replica({"status": "garbage"}) is None
