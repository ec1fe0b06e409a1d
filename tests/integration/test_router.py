"""The pool's front door, end to end: the operator renders the router, its pods run the real `poolpilot
router`, and the real `openai` client calls the Service. Traffic moves to the API and back as the
operator's mode says, the router's demand scales the pool up from zero, and the key shows nowhere.

Embedded server only: the router picks replicas from the EndpointSlices of ``NAME-replicas``, and the
real control plane's EndpointSlice controller refuses the loopback pod IPs its KWOK nodes hand out
(tests/fidelity covers the slices on both).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from devkube.cluster import DevCluster
from devkube.endpointslices import ready_endpoints
from devkube.fakeprovider import FakeProvider
from devkube.fakevllm import DEFAULT_MODEL, FakeVLLMFleet
from devkube.localrun import OperatorProcess
from devkube.loopthread import in_thread
from devkube.routerpods import RouterPods
from tests.integration.test_fallback import mode_becomes
from tests.integration.test_scaling import events_eventually, wait_for_replicas
from tests.support.backends import Backend
from tests.support.waiting import eventually

Manifest = dict[str, Any]
API_KEY = "sk-poolpilot-test-9f3b2c7d1e"
PROVIDER_MODEL = "llama-3.1-8b-hosted"
SERVED = DEFAULT_MODEL  # what the fake replicas serve, and so the name clients send
pytestmark = pytest.mark.embedded_only


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with in_thread(FakeProvider(api_key=API_KEY, model_name=PROVIDER_MODEL), name="fake-provider") as running:
        yield running


@pytest.fixture
def routers(backend: Backend, cluster: DevCluster) -> Iterator[RouterPods]:
    with RouterPods(lambda: cluster.pods(backend.namespace), lambda ns, name: cluster.get("secrets", ns, name),
                    cluster.kubeconfig_path) as running:
        yield running
        print(f"--- router logs ---\n{running.logs()[-6000:]}")  # shown when the test failed


def routed_pool(fleet: FakeVLLMFleet, provider: FakeProvider) -> Manifest:
    return {
        "model": {"name": SERVED, "port": fleet.port, "gpusPerReplica": 0},
        "replicas": {"min": 0, "max": 2},
        "scaling": {"evaluationIntervalSeconds": 1, "targetQueueDepthPerReplica": 4,
                    "scaleDown": {"stabilizationSeconds": 3, "maxStepReplicas": 5}},
        "capacity": {"onDemandBase": 1, "spotPercentage": 100},
        "metrics": {"source": "pods"},
        "fallback": {"enabled": True, "route": "router", "recoverAfterSeconds": 3,
                     "provider": {"baseURL": provider.base_url, "model": PROVIDER_MODEL,
                                  "apiKeySecretRef": {"name": "hosted-api", "key": "api-key"}}},
    }


def front_door(cluster: DevCluster, namespace: str) -> str:
    """The Service `front`'s ready endpoint, as a client's kube-proxy would pick it (a router pod)."""
    found = eventually(lambda: ready_endpoints(cluster, namespace, "front"), lambda e: bool(e),
                       timeout=30, what="a router pod behind the Service front")
    return f"http://{found[0].ip}:{found[0].port}/v1"


def complete(base_url: str) -> tuple[str, str]:
    """One completion through the front door: (text, which backend served it)."""
    with openai.OpenAI(base_url=base_url, api_key="client-key", max_retries=0, timeout=30) as client:
        try:
            raw = client.completions.with_raw_response.create(model=SERVED, prompt="Hello", max_tokens=8)
        except openai.APIConnectionError:
            return "", "unreachable"  # the router pod is starting
        except openai.InternalServerError as error:  # 503: the router has not read its pool yet
            return "", f"{error.status_code}"
        return raw.parse().choices[0].text, raw.headers["X-PoolPilot-Backend"]


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def test_traffic_follows_the_mode_and_demand_at_the_router_scales_the_pool_from_zero(
        fleet: FakeVLLMFleet, provider: FakeProvider, backend: Backend, cluster: DevCluster,
        routers: RouterPods, operator: OperatorProcess) -> None:
    ns = backend.namespace
    cluster.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "hosted-api", "namespace": ns},
                               "data": {"api-key": base64.b64encode(API_KEY.encode()).decode()}})
    fleet.set_all(waiting=0, running=0, kv=0.0, tokens_per_second=200)
    backend.kube.create_pool(ns, "front", routed_pool(fleet, provider))

    # min 0 and nothing served yet: the pool is at zero, everything goes to the API.
    mode_becomes(backend, "front", "Full")
    url = front_door(cluster, ns)
    text, _ = eventually(lambda: complete(url), lambda answer: answer[1] == "api", timeout=30,
                         what="the router in Full mode")
    assert text
    arrived = provider.received[-1]
    assert arrived.model == PROVIDER_MODEL and arrived.headers["Authorization"] == f"Bearer {API_KEY}"

    # Demand through the router (streams in flight) scales the pool up from zero.
    stop = threading.Event()

    def keep_streaming() -> None:
        with openai.OpenAI(base_url=url, api_key="client-key", max_retries=0, timeout=30) as client:
            while not stop.is_set():
                with client.completions.create(model=SERVED, prompt="Hi", max_tokens=400, stream=True) as stream:
                    for _ in stream:
                        if stop.is_set():
                            break

    streams = [threading.Thread(target=keep_streaming, daemon=True) for _ in range(3)]
    for stream in streams:
        stream.start()
    try:
        wait_for_replicas(backend, "front", 1, timeout=40)
        scaled = events_eventually(backend, "front", "ScaledUp")
        assert any("router" in e["message"] and "0 -> " in e["message"] for e in scaled), scaled
        mode_becomes(backend, "front", "Overflow", timeout=40)  # a replica is ready: it takes what it can
    finally:
        stop.set()
        for stream in streams:
            stream.join(timeout=30)
    mode_becomes(backend, "front", "Off", timeout=40)
    assert eventually(lambda: complete(url), lambda answer: answer[1] == "pool", timeout=20,
                      what="the pool serving again")[0]

    # The key is in the router only: not in the operator's log, the pool, its Events, or any answer.
    pool = backend.kube.get_pool(ns, "front")
    events = backend.kube.events_for(ns, "front")
    leaks = {"operator log": operator.log(), "router logs": routers.logs(), "pool": json.dumps(pool),
             "events": json.dumps(events), "models": fetch(f"{url}/models"),
             "metrics": fetch(url.removesuffix("/v1") + "/metrics")}
    assert routers.logs(), "the routers logged nothing at all: the scan would prove nothing"
    assert [where for where, text in leaks.items() if API_KEY in text] == []
