"""Cost of one evaluation round over every pool, at 1, 100 and 1,000 pools.

A round is what the operator does when each pool's loop runs once: read the pool's
signals (here from the real Prometheus, one shared round of queries), decide, compare
the owned objects with the watch cache, and write only what changed. The "world" (the
embedded API server, one fake vLLM replica, Prometheus scraping it once per pool with
that pool's labels) runs in a separate process, so the CPU time measured here is the
operator's alone. The first round creates everything and is reported apart; the steady
rounds that follow are the ones that repeat every few seconds in production.

    python -m bench.round_cost [--pools 1,100,1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controller.api.spec import API_GROUP, API_VERSION, PLURAL
from controller.core.scaling import ScalingState
from controller.kube.apply import VerifiedObjects
from controller.kube.client import KubeApi, build_api_client
from controller.kube.render import POOL_LABEL, PoolRef
from controller.reconcile import PoolSnapshot, reconcile_pool
from controller.settings import OperatorSettings
from controller.signal_reader import SignalReader

NAMESPACE = "bench"
CONCURRENCY = 32  # pools evaluated at once, as Kopf's daemons interleave on one loop


class CountingKubeApi(KubeApi):
    """The operator's API client, counting every call it makes."""

    calls = 0

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        type(self).calls += 1
        return await super()._call(method, *args, **kwargs)


@contextmanager
def world(pools: int, scrape_interval_seconds: float) -> Iterator[dict[str, Any]]:
    process = subprocess.Popen([sys.executable, "-m", "bench.world", "--pools", str(pools),
                                "--scrape-interval", str(scrape_interval_seconds)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the world process did not start")
        yield json.loads(line)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)


def _prometheus_queries(url: str) -> float:
    """Instant queries Prometheus has answered, from its own /metrics (reading it is not a query)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "prometheus_http_requests_total" and sample.labels.get("handler") == "/api/v1/query")


def _list(api_client: Any, path: str) -> list[dict[str, Any]]:
    # The embedded server needs no credentials: plain HTTP to the kubeconfig's server.
    with urllib.request.urlopen(api_client.configuration.host + path, timeout=60) as response:
        items: list[dict[str, Any]] = json.loads(response.read())["items"]
    return items


async def _round(api: KubeApi, reader: SignalReader, pools: Sequence[dict[str, Any]],
                 cache: dict[tuple[str, str], dict[str, Any]], states: dict[str, ScalingState],
                 verified: dict[str, VerifiedObjects]) -> None:
    now = datetime.now(UTC)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    deployments_of: dict[str, list[dict[str, Any]]] = {}  # by pool, as Kopf's index holds them
    for (kind, _), obj in cache.items():
        if kind == "Deployment":
            deployments_of.setdefault(obj["metadata"].get("labels", {}).get(POOL_LABEL, ""), []).append(obj)

    async def one(pool: dict[str, Any]) -> None:
        name = pool["metadata"]["name"]
        snapshot = PoolSnapshot(
            ref=PoolRef(name=name, namespace=NAMESPACE, uid=pool["metadata"]["uid"]),
            generation=pool["metadata"]["generation"], raw_spec=pool["spec"], raw_status=pool.get("status"),
            deployments=deployments_of.get(name, []),
            cached=lambda kind, object_name: cache.get((kind, object_name)),
            scaling_state=states.get(name, ScalingState()), verified=verified.setdefault(name, VerifiedObjects()))
        async with semaphore:
            result = await reconcile_pool(api, reader, snapshot, now=now)
        states[name] = result.scaling_state

    await asyncio.gather(*(one(pool) for pool in pools))


def _snapshot_cluster(api_client: Any) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """What Kopf's watch cache would hold: the pools and every owned object (3 LIST calls, not per pool)."""
    pools = _list(api_client, f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NAMESPACE}/{PLURAL}")
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, path in (("Deployment", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
                       ("Service", f"/api/v1/namespaces/{NAMESPACE}/services"),
                       ("PodDisruptionBudget", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets")):
        for obj in _list(api_client, path):
            cache[(kind, obj["metadata"]["name"])] = obj
    return pools, cache


def measure(pool_count: int, rounds: int, scrape_interval_seconds: float) -> dict[str, float]:
    with world(pool_count, scrape_interval_seconds) as info:
        os.environ["KUBECONFIG"] = info["kubeconfig"]
        api_client = build_api_client(info["kubeconfig"])
        api = CountingKubeApi(api_client)
        reader = SignalReader(OperatorSettings(prometheus_url=info["prometheus"], prometheus_round_seconds=30.0))
        states: dict[str, ScalingState] = {}
        verified: dict[str, VerifiedObjects] = {}
        loop = asyncio.new_event_loop()
        try:
            pools, cache = _snapshot_cluster(api_client)
            loop.run_until_complete(_round(api, reader, pools, cache, states, verified))  # creates everything
            pools, cache = _snapshot_cluster(api_client)
            loop.run_until_complete(_round(api, reader, pools, cache, states, verified))  # writes the first statuses
            pools, cache = _snapshot_cluster(api_client)
            reading = sum(1 for pool in pools if any(
                c["type"] == "MetricsAvailable" and c["status"] == "True"
                for c in pool.get("status", {}).get("conditions", [])))
            walls, cpus, calls, queries = [], [], [], []
            for _ in range(rounds):
                pools, cache = _snapshot_cluster(api_client)
                reader.expire_rounds()
                CountingKubeApi.calls = 0
                queries_before = _prometheus_queries(info["prometheus"])
                wall, cpu = time.perf_counter(), time.process_time()
                loop.run_until_complete(_round(api, reader, pools, cache, states, verified))
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                calls.append(CountingKubeApi.calls)
                queries.append(_prometheus_queries(info["prometheus"]) - queries_before)
        finally:
            loop.run_until_complete(reader.close())
            loop.close()
            api.close()
    return {"pools": pool_count, "reading": reading, "wall": statistics.median(walls),
            "cpu": statistics.median(cpus), "api_calls": statistics.median(calls),
            "queries": statistics.median(queries)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="1,100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrape-interval", type=float, default=15.0,
                        help="Prometheus scrape interval in the world (one target per pool: keep it slow at scale)")
    args = parser.parse_args(argv)
    rows = []
    for count in (int(n) for n in args.pools.split(",")):
        rows.append(measure(count, args.rounds, args.scrape_interval))
        print(f"  {count} pools: done", flush=True)
    print(f"\nOne steady evaluation round over all pools (median of {args.rounds}; Prometheus source)")
    print(f"{'pools':>6}{'signals read':>14}{'wall ms':>10}{'cpu ms':>9}{'cpu ms/pool':>13}{'API calls':>11}"
          f"{'PromQL queries':>16}")
    for row in rows:
        print(f"{row['pools']:>6.0f}{row['reading']:>14.0f}{row['wall'] * 1000:>10.0f}{row['cpu'] * 1000:>9.0f}"
              f"{row['cpu'] * 1000 / row['pools']:>13.2f}{row['api_calls']:>11.0f}{row['queries']:>16.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
