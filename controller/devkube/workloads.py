"""
A fake Deployment controller: reports Deployments as rolled out, without Pods.

For every Deployment whose status does not reflect its spec, after ``delay`` seconds it
writes ``status.observedGeneration``, ``replicas``, ``updatedReplicas``, ``readyReplicas``,
``availableReplicas``, ``unavailableReplicas`` and the ``Available``/``Progressing``
conditions — in-process, so the writes never appear in the write log, but they bump the
resourceVersion and emit MODIFIED events like a real controller's writes. Zero counts are
omitted, as the real controller's ``omitempty`` fields are.

A test can hold readiness back (``set_ready(ns, name, ready=1)``) to simulate replicas that
are slow to become ready, and release it with ``ready=None``.

Differences from a real cluster: no ReplicaSets and no Pods exist; rollouts are
instantaneous (no surge, no gradual replacement); ``paused`` and
``progressDeadlineSeconds`` are ignored.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Mapping
from typing import Any

from controller.devkube.store import ObjectStore, WatchEvent, now_utc, timestamp

DeploymentKey = tuple[str, str]  # namespace, name


class FakeDeploymentController:
    def __init__(self, store: ObjectStore, *, delay: float = 0.0) -> None:
        self.store = store
        self.delay = delay
        self.ready_overrides: dict[DeploymentKey, int] = {}
        self._timers: dict[DeploymentKey, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for obj in self.store.list_objects(self._resource()):
            self._schedule((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def set_ready(self, namespace: str, name: str, ready: int | None) -> None:
        """Cap the ready replicas of one Deployment; ``None`` makes all of them ready again."""
        if ready is None:
            self.ready_overrides.pop((namespace, name), None)
        else:
            self.ready_overrides[(namespace, name)] = ready
        self._schedule((namespace, name))

    def _resource(self) -> Any:
        return self.store.resolve("apps", "v1", "deployments")

    def _on_event(self, event: WatchEvent) -> None:
        if (event.resource.group, event.resource.plural) != ("apps", "deployments"):
            return
        key = (event.object["metadata"]["namespace"], event.object["metadata"]["name"])
        if event.type == "DELETED":
            self._cancel(key)
            self.ready_overrides.pop(key, None)
        else:
            self._schedule(key)

    def _schedule(self, key: DeploymentKey) -> None:
        # Never write from inside a store event: the write would nest into the current commit.
        if self._loop is None:
            return
        self._cancel(key)
        self._timers[key] = self._loop.call_later(self.delay, self._reconcile, key)

    def _cancel(self, key: DeploymentKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _reconcile(self, key: DeploymentKey) -> None:
        self._timers.pop(key, None)
        resource = self._resource()
        obj = self.store.find(resource, *key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        status = deployment_status(obj, self.ready_overrides.get(key))
        self.store.write_status(resource, key[0], key[1], status)  # a no-op if nothing changes


def deployment_status(obj: Mapping[str, Any], ready_cap: int | None) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    ready = desired if ready_cap is None else max(0, min(ready_cap, desired))
    counts = {
        "replicas": desired,
        "updatedReplicas": desired,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": desired - ready,
    }
    status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
    status.update({field: count for field, count in counts.items() if count})
    previous = (obj.get("status") or {}).get("conditions") or []
    available = ready >= desired - _max_unavailable(spec, desired)
    status["conditions"] = [
        _condition(
            previous,
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        ),
        _condition(
            previous,
            "Progressing",
            True,
            "NewReplicaSetAvailable" if ready == desired else "ReplicaSetUpdated",
            f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.'
            if ready == desired
            else f'ReplicaSet "{obj["metadata"]["name"]}" is progressing.',
        ),
    ]
    return status


def _max_unavailable(spec: Mapping[str, Any], desired: int) -> int:
    value = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return math.floor(desired * int(value[:-1]) / 100)
    return int(value)


def _condition(
    previous: list[Mapping[str, Any]], kind: str, ok: bool, reason: str, message: str
) -> dict[str, Any]:
    # Keep the old timestamps while nothing changes, or every reconciliation would be a write.
    old = next((dict(c) for c in previous if c.get("type") == kind), None)
    new = {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}
    if old is not None and all(old.get(field) == value for field, value in new.items()):
        return copy.deepcopy(old)
    stamp = timestamp(now_utc())
    transitioned = old is None or old.get("status") != new["status"]
    return {
        **new,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp if transitioned else old.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
    }
