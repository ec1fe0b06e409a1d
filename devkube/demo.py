"""``make demo`` (``python -m devkube.demo``): the operator at work on the example pools, with no cluster.

It starts the embedded API server (``devkube``) with the CRD from
``crds/``, runs the real operator as a process against it, applies the example
pools as an admin would, and prints what ``kubectl get`` and ``kubectl describe``
would show: the pools, the objects they own, their conditions and Events. Then it
changes a spec, and breaks one, to show what the operator does with each.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import pathlib
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.api.crd import generate_crd
from controller.api.spec import API_GROUP, API_VERSION, PLURAL
from controller.sim.profiles import profile_named
from devkube.aws import MotoServer, interruption_queue
from devkube.cluster import DevCluster
from devkube.demo_simulation import simulation_act
from devkube.endpointslices import ready_endpoints
from devkube.fakeprovider import FakeProvider
from devkube.fakevllm import FakeVLLMFleet
from devkube.loadgen import LoadReport, run_load
from devkube.localrun import OperatorProcess, free_port
from devkube.loopthread import in_thread
from devkube.nodes import NodeSpec, instance_id
from devkube.routerpods import RouterPods
from devkube.wiring import PodReplicas

__all__ = ["run_demo"]

Manifest = dict[str, Any]
NAMESPACE = "llm"
EXAMPLES = ("minimal-pool.yaml", "spot-fallback-pool.yaml")
# One fake vLLM replica per pod the demo can reach (llama-8b may grow to 8, qwen-small to 3).
WAIT_SECONDS = 30.0
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"
DEMO_API_KEY = "sk-demo-not-a-real-key"  # the fake provider's; the example's Secret holds it
# The demo's shorter fallback timers (the example's are 30 s and 120 s), and a small vLLM batch so that a
# burst can exceed what the pool takes: the router's budget is --max-num-seqs + queueDepthPerReplica.
DEMO_FOR_SECONDS, DEMO_RECOVER_AFTER_SECONDS = 5, 10
DEMO_MAX_NUM_SEQS = 4
SUSTAINED_RATE, SUSTAINED_REQUESTS = 60, 480  # act 6: 8 s of load
DEMO_PROFILE = "llama-3.1-8b-l4"  # act 6's replicas: the simulator's model of an 8B model on one L4
HOSTED_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"  # what the example's provider calls the model


class DemoFailed(Exception):
    """The operator did not reach the state the demo waited for."""


def _repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent


def _examples(port: int, provider_url: str) -> list[Manifest]:
    """The example pools, pointed at the port the demo's fake vLLM replicas listen on, and llama-8b's
    fallback at the demo's fake hosted API (with the demo's shorter timers)."""
    directory = _repo_root() / "manifests" / "examples"
    pools = [yaml.safe_load((directory / name).read_text()) for name in EXAMPLES]
    for pool in pools:
        spec = pool["spec"]
        spec["model"]["port"] = port
        if spec.get("fallback", {}).get("enabled"):
            spec["fallback"]["provider"]["baseURL"] = provider_url
            spec["fallback"]["saturation"]["forSeconds"] = DEMO_FOR_SECONDS
            spec["fallback"]["recoverAfterSeconds"] = DEMO_RECOVER_AFTER_SECONDS
            spec["model"]["args"] = [*spec["model"].get("args", []), f"--max-num-seqs={DEMO_MAX_NUM_SEQS}"]
    return pools


def _api_key_secret(pools: Sequence[Manifest]) -> Manifest:
    """The Secret the example's apiKeySecretRef names, holding the fake provider's key."""
    ref = next(p["spec"]["fallback"]["provider"]["apiKeySecretRef"] for p in pools
               if p["spec"].get("fallback", {}).get("enabled"))
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ref["name"], "namespace": NAMESPACE},
            "data": {ref.get("key", "api-key"): base64.b64encode(DEMO_API_KEY.encode()).decode()}}


class _Api:
    """Plain HTTP to the embedded API server: what kubectl sends, without needing kubectl."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def _request(self, method: str, path: str, body: Manifest | None = None, accept: str = "application/json",
                 content_type: str = "application/json") -> Manifest:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Accept": accept, "Content-Type": content_type,
                                                  "User-Agent": "poolpilot-demo"})
        with urllib.request.urlopen(request, timeout=10) as response:
            parsed: Manifest = json.loads(response.read())
            return parsed

    def get(self, path: str) -> Manifest:
        return self._request("GET", path)

    def table(self, path: str) -> Manifest:
        return self._request("GET", path, accept=TABLE_ACCEPT)

    def create(self, path: str, body: Manifest) -> Manifest:
        return self._request("POST", path, body)

    def merge_patch(self, path: str, patch: Manifest) -> Manifest:
        return self._request("PATCH", path, patch, content_type="application/merge-patch+json")


def _pools_path(name: str = "") -> str:
    suffix = f"/{name}" if name else ""
    return f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NAMESPACE}/{PLURAL}{suffix}"


def _format_table(table: Mapping[str, Any]) -> str:
    """Columns as kubectl prints them: upper-case headers, priority-0 columns only, 3 spaces apart."""
    columns = table.get("columnDefinitions", [])
    shown = [i for i, column in enumerate(columns) if column.get("priority", 0) == 0]
    header = [str(columns[i]["name"]).upper() for i in shown]
    rows = [["<none>" if row["cells"][i] in (None, "") else str(row["cells"][i]) for i in shown]
            for row in table.get("rows", [])]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    return "\n".join(lines)


def _wait(what: str, probe: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.1)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def _condition(pool: Mapping[str, Any], condition_type: str) -> Manifest | None:
    conditions = pool.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c.get("type") == condition_type), None)


def _settled(api: _Api, name: str) -> Manifest | None:
    """The pool once the operator has acted on its latest generation and all its replicas are ready."""
    pool = api.get(_pools_path(name))
    ready = _condition(pool, "Ready")
    current = pool.get("status", {}).get("observedGeneration") == pool["metadata"].get("generation")
    return pool if current and ready and ready["status"] == "True" else None


def _events(api: _Api, name: str) -> list[Manifest]:
    selector = f"involvedObject.name={name},involvedObject.kind=InferencePool"
    items: list[Manifest] = api.get(f"/api/v1/namespaces/{NAMESPACE}/events?fieldSelector={selector}")["items"]
    return sorted(items, key=lambda e: str(e.get("eventTime") or e.get("lastTimestamp") or ""))


def _describe(api: _Api, name: str, since: int = 0, reason_prefix: str = "") -> str:
    pool = api.get(_pools_path(name))
    lines = [f"Name: {name}    Namespace: {NAMESPACE}    Generation: {pool['metadata'].get('generation')}",
             "Conditions:"]
    for condition in pool.get("status", {}).get("conditions", []):
        lines.append(f"  {condition['type']:<17} {condition['status']:<6} {condition['reason']:<17} "
                     f"{condition['message']}")
    lines.append("Events:")
    for event in _events(api, name)[since:]:
        if not event["reason"].startswith(reason_prefix):
            continue
        lines.append(f"  {event['type']:<8} {event['reason']:<13} {event['message']}")
    return "\n".join(lines)


def _owned_summary(api: _Api) -> str:
    deployments = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
    lines = []
    for deployment in sorted(deployments, key=lambda d: d["metadata"]["name"]):
        pod = deployment["spec"]["template"]["spec"]
        vllm = pod["containers"][0]
        placement = pod.get("nodeSelector") or {}
        count = deployment["spec"]["replicas"]
        lines.append(f"  {deployment['metadata']['name']}: {count} replica{'' if count == 1 else 's'} on "
                     f"{', '.join(f'{k}={v}' for k, v in placement.items()) or 'any node'}; "
                     f"grace {pod['terminationGracePeriodSeconds']} s")
        lines.append(f"      {' '.join(vllm['command'] + vllm['args'])}")
    return "\n".join(lines)


def _section(title: str) -> None:
    print(f"\n== {title}\n")


def _show(command: str, output: str) -> None:
    print(f"$ {command}")
    print(output)
    print()


def _resource_versions(api: _Api) -> dict[str, str]:
    deployments = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
    return {d["metadata"]["name"]: d["metadata"]["resourceVersion"] for d in deployments}


def _walkthrough(api: _Api, pools: Sequence[Manifest]) -> None:
    _section("1. An admin applies the example pools (manifests/examples/)")
    for pool in pools:
        api.create(_pools_path(), pool)
        print(f"inferencepool.poolpilot.io/{pool['metadata']['name']} created")
    for name in (pool["metadata"]["name"] for pool in pools):
        _wait(f"pool {name} to be ready", functools.partial(_settled, api, name))
    print()
    _show(f"kubectl get ipool -n {NAMESPACE}", _format_table(api.table(_pools_path())))
    _show(f"kubectl get deployments,services,pdb -n {NAMESPACE}", "\n\n".join(
        _format_table(api.table(f"/apis/{path}/namespaces/{NAMESPACE}/{kind}"))
        for path, kind in (("apps/v1", "deployments"), ("../api/v1", "services"),
                           ("policy/v1", "poddisruptionbudgets"))))
    print("What runs in each Deployment:")
    print(_owned_summary(api))
    print()
    _show(f"kubectl describe ipool llama-8b -n {NAMESPACE}", _describe(api, "llama-8b"))

    _section("2. The admin raises qwen-small's minimum from 1 to 3 replicas")
    seen = len(_events(api, "qwen-small"))
    api.merge_patch(_pools_path("qwen-small"), {"spec": {"replicas": {"min": 3, "max": 3}}})
    _wait("qwen-small to roll out", lambda: _settled(api, "qwen-small"))
    _show(f"kubectl describe ipool qwen-small -n {NAMESPACE}   (new Events only)",
          _describe(api, "qwen-small", since=seen))

    _section("3. A bad spec gets past the API server (an old CRD, or CEL off): min 9 > max 8")
    before = _resource_versions(api)
    seen = len(_events(api, "llama-8b"))
    api.merge_patch(_pools_path("llama-8b"), {"spec": {"replicas": {"min": 9}}})
    _wait("the SpecValid=False condition", lambda: (_condition(api.get(_pools_path("llama-8b")), "SpecValid")
                                                   or {}).get("status") == "False")
    time.sleep(2.0)  # a few more evaluations: still one Warning, still no writes
    _show(f"kubectl describe ipool llama-8b -n {NAMESPACE}   (new Events only)",
          _describe(api, "llama-8b", since=seen))
    untouched = _resource_versions(api) == before
    print(f"Running Deployments untouched (resourceVersions unchanged): {'yes' if untouched else 'NO'}")
    if not untouched:
        raise DemoFailed("the operator wrote to Deployments while the spec was invalid")
    api.merge_patch(_pools_path("llama-8b"), {"spec": {"replicas": {"min": 2}}})
    _wait("llama-8b to be valid again", lambda: _settled(api, "llama-8b"))
    print("After the fix: " + _describe(api, "llama-8b").splitlines()[-1].strip())


def _scale_on_load(api: _Api, fleet: FakeVLLMFleet) -> None:
    _section("4. Load arrives: each llama-8b replica reports 12 waiting requests (target 4) and 93% KV cache")
    seen = len(_events(api, "llama-8b"))
    fleet.set_all(waiting=12, running=40, kv=0.93)
    started = time.monotonic()
    _wait("llama-8b to scale up", lambda: _desired(api, "llama-8b") >= 6)
    _wait("llama-8b to be ready", lambda: _settled(api, "llama-8b"))
    print(f"Scaled within {time.monotonic() - started:.1f} s of the spike (pods source, evaluated every 5 s).\n")
    _show(f"kubectl get ipool -n {NAMESPACE}", _format_table(api.table(_pools_path())))
    _show(f"kubectl describe ipool llama-8b -n {NAMESPACE}   (new Events only)",
          _describe(api, "llama-8b", since=seen))
    print("Scaling down waits for spec.scaling.scaleDown.stabilizationSeconds (300 s by default): not shown here.")


def _spot_reclaim(api: _Api, cluster: DevCluster, moto: MotoServer) -> None:
    _section("5. AWS reclaims a spot node: an EC2 Spot Instance Interruption Warning arrives through SQS")
    doomed_node = max(("gpu-spot-a", "gpu-spot-b"), key=lambda node: len(_llama_pods_on(cluster, node)))
    doomed = _llama_pods_on(cluster, doomed_node)
    cluster.add_node(NodeSpec("gpu-spot-c", capacity_type="spot", zone="us-east-1c"))  # where replacements go
    print(f"Node {doomed_node} (instance {instance_id(doomed_node)}) runs {len(doomed)} llama-8b replicas: "
          f"{', '.join(doomed)}.")
    print("While clients stream completions through the pool's front door (the Service llama-8b: its routers, "
          "which pick\nreplicas from the EndpointSlices of llama-8b-replicas), EventBridge delivers the 2-minute "
          "warning for that\ninstance to PoolPilot's SQS queue (moto's server, reached with boto3).")
    seen = len(_events(api, "llama-8b"))
    report: list[LoadReport] = []
    loader = threading.Thread(target=lambda: report.append(asyncio.run(run_load(
        functools.partial(_endpoints, cluster), requests=120, rate=6, max_tokens=40, model=_served_name(api)))),
        daemon=True)
    loader.start()
    time.sleep(2.0)  # requests in flight everywhere, the doomed replicas too
    warned = time.monotonic()
    moto.client("events").put_events(Entries=[{
        "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
        "Detail": json.dumps({"instance-id": instance_id(doomed_node), "instance-action": "terminate"}),
        "Resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id(doomed_node)}"]}])
    _wait("the doomed replicas released", lambda: all(
        (p["metadata"].get("labels") or {}).get("poolpilot.io/drain") for p in _llama_pods(cluster)
        if p["metadata"]["name"] in doomed) or None)
    replaced_after = time.monotonic() - warned
    _wait("the doomed replicas drained", lambda: not _llama_pods_on(cluster, doomed_node), timeout=60)
    drained_after = time.monotonic() - warned
    cluster.remove_node(doomed_node)  # the instance terminates
    loader.join(timeout=60)
    if not report:
        raise DemoFailed("the load generator did not finish")
    load = report[0]
    print(f"\nReplacements ordered and the doomed replicas out of routing {replaced_after:.1f} s after the warning;"
          f"\ndrained (the preStop sleep, then vLLM finished what it held) {drained_after:.1f} s after it; then "
          "the node went.")
    lost = len(load.records) - load.completed
    print(f"Requests sent: {len(load.records)}, completed: {load.completed}, lost: {lost}"
          + (f" ({dict(load.failed)})" if lost else ""))
    _show(f"kubectl get pods -n {NAMESPACE} -l poolpilot.io/pool=llama-8b -o wide   (NAME, NODE)",
          "\n".join(f"{p['metadata']['name']:<40} {p['spec'].get('nodeName')}" for p in _llama_pods(cluster)))
    _show(f"kubectl describe ipool llama-8b -n {NAMESPACE}   (new Events only)",
          _describe(api, "llama-8b", since=seen))
    if lost:
        raise DemoFailed(f"{lost} requests were lost in the reclaim")


def _overflow_and_back(api: _Api, cluster: DevCluster, fleet: FakeVLLMFleet, provider: FakeProvider) -> None:
    _section("6. More load than llama-8b takes at its maximum: the excess goes to the hosted API, then comes back")
    print(f"The routers spill to the hosted API (a fake one here, {provider.base_url}) only what the pool cannot "
          "take,\nwith the key from the Secret mounted into them alone. The demo shortens the example's timers "
          f"(saturation.forSeconds {DEMO_FOR_SECONDS} s, recoverAfterSeconds {DEMO_RECOVER_AFTER_SECONDS} s).")
    # The load of act 4 never went: 12 waiting per replica, above the saturation threshold of 8, at max.
    _wait("llama-8b at its maximum", lambda: _desired(api, "llama-8b") == 8)
    _wait("the Overflow mode", lambda: _mode(api, "llama-8b") == "Overflow", timeout=60)
    print("Since act 4 each replica reports 12 waiting (saturation.queueDepthPerReplica 8) at replicas.max 8: "
          "the pool is\nsaturated, so FALLBACK is Overflow (after saturation.forSeconds, or at once to bridge a "
          "cold start).")
    before = _router_counts(cluster)
    # From here the fake replicas run the simulator's replica model (controller/sim/replica.py): an 8B model on
    # an L4, continuous batching, its KV cache; a request's time is the batch's, not a fixed pace. Their pods
    # say --max-num-seqs=4, as vLLM would honour it.
    fleet.set_all(profile=dataclasses.replace(profile_named(DEMO_PROFILE), max_num_seqs=DEMO_MAX_NUM_SEQS))
    reports: list[LoadReport] = []
    loader = threading.Thread(target=lambda: reports.append(asyncio.run(run_load(
        functools.partial(_endpoints, cluster), requests=SUSTAINED_REQUESTS, rate=SUSTAINED_RATE, max_tokens=20,
        model=_served_name(api)))), daemon=True)
    loader.start()
    time.sleep(SUSTAINED_REQUESTS / SUSTAINED_RATE - 2)  # the load's last seconds: the cost at this load
    pool = api.get(_pools_path("llama-8b"))
    loader.join(timeout=60)
    if not reports:
        raise DemoFailed("the load generator did not finish")
    burst = reports[0]
    served = {backend: count - before.get(backend, 0) for backend, count in _router_counts(cluster).items()}
    # What one replica takes before the router spills: --max-num-seqs + saturation.queueDepthPerReplica, or
    # less if the operator measured less (status.fallback.inFlightPerReplica: the KV cache and the SLO).
    measured = pool.get("status", {}).get("fallback", {}).get("inFlightPerReplica")
    budget = min(DEMO_MAX_NUM_SEQS + 8, measured or DEMO_MAX_NUM_SEQS + 8)
    print(f"{SUSTAINED_RATE} streaming requests/s for {SUSTAINED_REQUESTS // SUSTAINED_RATE} s through the front "
          f"door: {served.get('pool', 0):.0f} served by the pool (at most {budget} in flight per ready replica), "
          f"{served.get('api', 0):.0f} by the API; completed "
          f"{burst.completed}, lost {len(burst.records) - burst.completed}.")
    fleet.set_all(waiting=1, running=2, kv=0.4)
    calmed = time.monotonic()
    _wait("traffic back on the pool", lambda: _mode(api, "llama-8b") == "Off", timeout=60)
    print(f"Load back under the thresholds: Off again {time.monotonic() - calmed:.0f} s later (the hysteresis).\n")
    _show(f"kubectl get ipool -n {NAMESPACE}", _format_table(api.table(_pools_path())))
    _show(f"kubectl describe ipool llama-8b -n {NAMESPACE}   (the Fallback Events since act 1)",
          _describe(api, "llama-8b", reason_prefix="Fallback"))
    _show(f"kubectl get ipool llama-8b -n {NAMESPACE} -o jsonpath='{{.status.cost}}'   (in words, under that load)",
          _cost_words(pool["spec"].get("cost", {}), pool["status"].get("cost", {})))
    if burst.completed != len(burst.records):
        raise DemoFailed(f"{len(burst.records) - burst.completed} requests were lost in the overflow")
    if not served.get("api"):
        raise DemoFailed("no request went to the API while the pool was saturated")


# The series an on-call engineer's dashboard starts from (manifests/monitoring/), for the demo's pools.
ON_CALL_SERIES = ("poolpilot_leader", "poolpilot_pools", "poolpilot_pool_replicas{", "poolpilot_pool_fallback_mode{",
                  "poolpilot_pool_cost_per_hour{", "poolpilot_notices_total{", "poolpilot_drain_duration_seconds_count",
                  "poolpilot_drain_deadline_missed_total", "poolpilot_interruption_messages_total{")


def _operator_metrics(operator: OperatorProcess) -> None:
    _section("7. What on-call sees: the operator's own /metrics (Prometheus scrapes them; the alerts read them)")
    url = f"http://127.0.0.1:{operator.liveness_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    shown = [line for line in text.splitlines() if (line.startswith(ON_CALL_SERIES)
             and not line.endswith((" 0.0", " 0"))) or line.startswith(("poolpilot_leader", "poolpilot_pools"))]
    notices = sum(float(line.rsplit(" ", 1)[1]) for line in shown if line.startswith("poolpilot_notices_total"))
    drains = sum(float(line.rsplit(" ", 1)[1]) for line in shown
                 if line.startswith("poolpilot_drain_duration_seconds_count"))
    if not notices or drains != notices:  # every replica noticed in act 5 has drained, each once
        raise DemoFailed(f"the operator's /metrics shows {notices:g} notices and {drains:g} drains:\n{text[-3000:]}")
    _show(f"curl -s {url} | grep ...", "\n".join(shown))


def _simulate() -> None:
    _section("8. What it would cost on real traffic: `poolpilot simulate`, against the baselines")
    print("The same decisions without a cluster: the operator's own plan on simulated replicas (continuous "
          "batching, KV cache, cold starts), spot reclaims and the hosted API, against static on-demand, KEDA, "
          "SkyServe, the API alone and a hindsight oracle, on the same requests and the same reclaims.")
    root = _repo_root()
    if not simulation_act(root / "manifests" / "examples" / "spot-fallback-pool.yaml",
                          root / "build" / "poolpilot-simulation.png"):
        raise DemoFailed("the simulation did not run")


def _served_name(api: _Api) -> str:
    """The model name llama-8b's clients send (what vLLM's --served-model-name and the router answer to)."""
    model = api.get(_pools_path("llama-8b"))["spec"]["model"]
    name: str = model.get("servedModelName") or model["name"]
    return name


def _mode(api: _Api, name: str) -> str | None:
    mode: str | None = api.get(_pools_path(name)).get("status", {}).get("fallback", {}).get("mode")
    return mode


def _router_counts(cluster: DevCluster) -> dict[str, float]:
    """Requests answered per backend, summed over the routers' own /metrics."""
    counts: dict[str, float] = {}
    for pod in cluster.pods(NAMESPACE):
        if (pod["metadata"].get("labels") or {}).get("poolpilot.io/component") != "router":
            continue
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "poolpilot_router_requests_total":
                    backend = sample.labels["backend"]
                    counts[backend] = counts.get(backend, 0) + sample.value
    return counts


def _cost_words(prices: Mapping[str, Any], cost: Mapping[str, Any]) -> str:
    if not cost:
        return "(no cost figures yet)"

    def money(value: Any) -> str:
        return "?" if value is None else f"{cost.get('currency', '')} {value:,.2f}"

    lines = [f"the pool now: {money(cost.get('hourly'))}/hour ({cost.get('spotReplicas')} spot x "
             f"{money(prices.get('spotReplicaHourly'))} + {cost.get('onDemandReplicas')} on-demand x "
             f"{money(prices.get('onDemandReplicaHourly'))})"]
    if cost.get("tokensPerSecond"):
        lines.append(f"at {cost['tokensPerSecond']:,.0f} tokens/s that is {money(cost.get('perMillionTokens'))} per "
                     f"million tokens; the API would charge {money(cost.get('apiHourly'))}/hour for the same "
                     f"tokens ({money(cost.get('apiPerMillionTokens'))} per million)")
    if cost.get("breakEvenTokensPerSecond") is not None:
        lines.append(f"break-even at {cost['breakEvenTokensPerSecond']:,.0f} tokens/s: below it the API is cheaper"
                     + (f"; cheaper at this load: the {cost['cheaper']}" if cost.get("cheaper") else ""))
    return "\n".join(lines)


def _llama_pods(cluster: DevCluster) -> list[Manifest]:
    return [p for p in cluster.pods(NAMESPACE) if (p["metadata"].get("labels") or {}).get("poolpilot.io/pool")
            == "llama-8b"]


def _llama_pods_on(cluster: DevCluster, node: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in _llama_pods(cluster) if p["spec"].get("nodeName") == node)


async def _endpoints(cluster: DevCluster) -> list[tuple[str, int]]:
    return [(e.ip, e.port) for e in await asyncio.to_thread(ready_endpoints, cluster, NAMESPACE, "llama-8b")]


def _desired(api: _Api, name: str) -> int:
    replicas = api.get(_pools_path(name)).get("status", {}).get("replicas", {})
    desired: int = replicas.get("desired", 0)
    return desired



def run_demo() -> int:
    print("PoolPilot demo: the operator against an embedded Kubernetes API server on 127.0.0.1 (no cluster).")
    print("No GPUs or images: a stand-in Deployment controller creates pods and marks them ready at once.")
    with FakeVLLMFleet.in_thread(0, port=free_port()) as fleet, MotoServer() as moto, \
            in_thread(FakeProvider(api_key=DEMO_API_KEY, model_name=HOSTED_MODEL), name="provider") as provider, \
            DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                                 # Act 3 shows what the operator does with a spec the CRD's rules would refuse.
                                 validate_custom_resources=False, pod_ready_delay=0.5) as cluster, \
            PodReplicas(fleet, lambda: cluster.pods(NAMESPACE), attach=cluster.attach_container), \
            RouterPods(lambda: cluster.pods(NAMESPACE), lambda ns, name: cluster.get("secrets", ns, name),
                       cluster.kubeconfig_path):
        return _run_against(cluster, fleet, moto, provider)


def _run_against(cluster: DevCluster, fleet: FakeVLLMFleet, moto: MotoServer, provider: FakeProvider) -> int:
    fleet.set_all(waiting=0, running=3, kv=0.35, tokens_per_second=20)  # a light, steady load to start with
    api = _Api(cluster.url)
    queue = interruption_queue(moto, name="poolpilot-interruptions")
    operator = OperatorProcess(cluster.kubeconfig_path, env={
        **moto.environment(), "POOLPILOT_SQS_QUEUE_URL": queue.url, "POOLPILOT_SQS_WAIT_SECONDS": "1",
        "POOLPILOT_SIGNALS_REFRESH_SECONDS": "2"})  # the status's signals and cost follow the demo's seconds
    print(f"Started `poolpilot run` against {cluster.url} (log: {operator.log_path.parent})")
    print("Each pod gets a fake vLLM replica at its own IP (127.244.x.y) that serves vLLM's /metrics.")
    operator.start()
    assert fleet.port is not None
    pools = _examples(fleet.port, provider.base_url)
    api.create(f"/api/v1/namespaces/{NAMESPACE}/secrets", _api_key_secret(pools))
    try:
        _walkthrough(api, pools)
        _scale_on_load(api, fleet)
        _spot_reclaim(api, cluster, moto)
        _overflow_and_back(api, cluster, fleet, provider)
        _operator_metrics(operator)
        _simulate()
    except DemoFailed as failure:
        print(f"\nDEMO FAILED: {failure}\n--- operator log ---\n{operator.log()[-5000:]}", file=sys.stderr)
        return 1
    finally:
        operator.stop()
    print("\nDone. `make test` runs the same flows as tests, and with the real kubectl.")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
