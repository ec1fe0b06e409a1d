"""The drain plan, written: release the doomed pods, evict them, delete what an older version owned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.api.spec import InferencePoolSpec
from controller.core.drain import DrainPlan, EvictionResult
from controller.core.plan import AppliedChange
from controller.kube.apply import REFUSED_STATUSES, CachedLookup, owned_by, server_message
from controller.kube.client import EvictionBlocked, KubeApi, NotFound
from controller.kube.render import PoolRef, release_patch, retired_objects

__all__ = ["delete_retired", "evict_pods", "release_pods"]


async def release_pods(api: KubeApi, pool: PoolRef, drain: DrainPlan) -> list[AppliedChange]:
    """One merge patch per doomed pod; a pod already gone is skipped (its record sees it go)."""
    refused = []
    for release in drain.releases:
        try:
            await api.patch("Pod", pool.namespace, release.pod, release_patch(pool, release.mark,
                                                                              serving=release.serving), urgent=True)
        except NotFound:
            continue
        except ApiException as error:
            if error.status not in REFUSED_STATUSES:
                raise  # a server in trouble: the evaluation is retried, and the pod is released then
            refused.append(AppliedChange("Pod", release.pod, "failed", message=server_message(error)))
    return refused


async def evict_pods(api: KubeApi, namespace: str, drain: DrainPlan) -> list[EvictionResult]:
    """Every eviction the plan asks for, each answer kept: the plan retries a refusal with backoff."""
    results = []
    for eviction in drain.evictions:
        try:
            await api.evict(namespace, eviction.pod, grace_seconds=eviction.grace_seconds, uid=eviction.uid)
        except EvictionBlocked as blocked:
            results.append(EvictionResult(eviction.pod, "blocked", str(blocked)))
        except NotFound:
            results.append(EvictionResult(eviction.pod, "gone"))
        except ApiException as error:
            results.append(EvictionResult(eviction.pod, "failed", f"{error.status} {server_message(error)}"))
        else:
            results.append(EvictionResult(eviction.pod, "evicted"))
    return results


async def delete_retired(api: KubeApi, pool: PoolRef, cached: CachedLookup,
                         spec: InferencePoolSpec | None = None) -> None:
    """What the pool no longer has (an older operator version's objects; the router's, once the spec
    routes without it), when it is ours."""
    for kind, name in retired_objects(pool, spec):
        live: Mapping[str, Any] | None = cached(kind, name)
        if live is not None and owned_by(live, pool.uid):
            await api.delete(kind, pool.namespace, name)
