"""
A stand-in disruption controller: keeps every PodDisruptionBudget's status, as
pkg/controller/disruption/disruption.go does, whenever its pods, its own spec or the scale of the
pods' controllers change.

For each PDB, over the pods of its namespace that its selector matches (a missing selector matches
none, an empty one all):

* ``expectedPods`` and ``desiredHealthy`` (``getExpectedPodCount``): an integer ``minAvailable``
  is the desired count and the matching pods are the expected ones; a percentage
  ``minAvailable`` or any ``maxUnavailable`` is scaled (rounding up, ``GetScaledValueFromIntOrPercent``
  with ``roundUp=true``) against the sum of the ``spec.replicas`` of the pods' controllers
  (``getExpectedScale``; pods without a controller are left out, as the real "unmanaged" pods).
* ``currentHealthy``: the matching pods that are Ready, not terminating and not listed in
  ``disruptedPods`` (``countHealthyPods``).
* ``disruptionsAllowed``: ``currentHealthy - desiredHealthy``, never below 0, and 0 without
  expected pods; the ``DisruptionAllowed`` condition (``SufficientPods``/``InsufficientPods``,
  pkg/apis/policy/helper's UpdateDisruptionAllowedCondition); ``observedGeneration``.
* ``disruptedPods`` (written by the Eviction API, :mod:`.eviction`): a pod leaves the map once it is
  terminating or gone, or two minutes (``DeletionTimeout``) after its eviction.

Recomputation is deferred to the next turn of the loop (never inside a store event), once per
namespace however many events came; a write that changes nothing is no write.

Differences: no events (``NoControllers``, ``UnmanagedPods``), no ``SyncFailed`` condition, and only
Deployments, ReplicaSets, StatefulSets and ReplicationControllers count as controllers with a scale.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from devkube import tables
from devkube.resources import Resource
from devkube.store import ObjectStore, WatchEvent, now_utc, timestamp
from devkube.workloads import is_pod_ready, selector_matches

# How long an evicted pod may take to start terminating before the budget counts it again (disruption.go).
DELETION_TIMEOUT = datetime.timedelta(minutes=2)
# The kinds whose spec.replicas the real controller reads through their scale (finders in disruption.go).
_SCALED_KINDS = {
    ("apps/v1", "Deployment"): ("apps", "v1", "deployments"),
    ("apps/v1", "ReplicaSet"): ("apps", "v1", "replicasets"),
    ("apps/v1", "StatefulSet"): ("apps", "v1", "statefulsets"),
    ("v1", "ReplicationController"): ("", "v1", "replicationcontrollers"),
}
_WATCHED = {("", "pods"), ("policy", "poddisruptionbudgets"), *((g, p) for g, _, p in _SCALED_KINDS.values())}


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an integer as it is, ``"N%"`` of ``total``."""
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].isdigit():
        if text.isdigit():
            return int(text)  # the real server refuses a numeric string; be lenient with what is stored
        raise ValueError(f"invalid value for IntOrString: invalid value {text!r}")
    scaled = int(text[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def disruption_allowed_conditions(status: Mapping[str, Any], generation: int) -> list[dict[str, Any]]:
    """The ``DisruptionAllowed`` condition for a status, keeping its transition time while it holds."""
    allowed = int(status.get("disruptionsAllowed") or 0) > 0
    condition = {
        "type": "DisruptionAllowed",
        "status": "True" if allowed else "False",
        "reason": "SufficientPods" if allowed else "InsufficientPods",
        "message": "",
        "observedGeneration": generation,
    }
    previous = next((c for c in status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
    kept = previous.get("lastTransitionTime") if previous and previous.get("status") == condition["status"] else None
    others = [dict(c) for c in status.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
    return [*others, {**condition, "lastTransitionTime": kept or timestamp(now_utc())}]


class FakeDisruptionController:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[tuple[str, str | None]] = set()  # (namespace, budget or all) to recompute next turn
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for budget in self.store.list_stored(self._budgets()):
            self._mark(budget["metadata"]["namespace"])

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for timer in self._expiry_timers.values():
            timer.cancel()
        self._expiry_timers.clear()
        self._loop = None

    def _budgets(self) -> Resource:
        return self.store.resolve("policy", "v1", "poddisruptionbudgets")

    def _on_event(self, event: WatchEvent) -> None:
        kind = (event.resource.group, event.resource.plural)
        if kind not in _WATCHED:
            return
        namespace = event.object["metadata"].get("namespace")
        if namespace is None or not self.store.count(self._budgets(), namespace):
            return
        if kind == ("", "pods"):
            # Only the budgets that select the pod (before or after the change), as the real controller's
            # getPdbForPod: a reclaim storm over a hundred pools must not recompute every budget per pod.
            states = [event.object] if event.old is None else [event.object, event.old]
            for budget in self.store.list_stored(self._budgets(), namespace):
                selector = (budget.get("spec") or {}).get("selector")
                if selector is not None and any(selector_matches(selector, pod) for pod in states):
                    self._mark(namespace, budget["metadata"]["name"])
        elif kind == ("policy", "poddisruptionbudgets"):
            self._mark(namespace, event.object["metadata"]["name"])
        else:
            # A controller's scale: the budgets that select its pods (by its pod template's labels).
            template = {"metadata": ((event.object.get("spec") or {}).get("template") or {}).get("metadata") or {}}
            for budget in self.store.list_stored(self._budgets(), namespace):
                selector = (budget.get("spec") or {}).get("selector")
                if selector is not None and selector_matches(selector, template):
                    self._mark(namespace, budget["metadata"]["name"])

    def _mark(self, namespace: str, budget: str | None = None) -> None:
        """Recompute one budget (or, with None, every budget of the namespace) on the next turn."""
        key = (namespace, budget)
        if self._loop is None or key in self._pending:
            return
        self._pending.add(key)
        self._loop.call_soon(self._sync, key)

    def _sync(self, key: tuple[str, str | None]) -> None:
        self._pending.discard(key)
        namespace, name = key
        budgets = self._budgets()
        found = self.store.find_stored(budgets, namespace, name) if name is not None else None
        for budget in self.store.list_stored(budgets, namespace) if name is None else [found] if found else []:
            status = self.budget_status(budget)
            if status != budget.get("status"):
                self.store.write_status(budgets, namespace, budget["metadata"]["name"], status)
            self._expire_later(namespace, status)

    def _expire_later(self, namespace: str, status: Mapping[str, Any]) -> None:
        """Recompute when the oldest entry of ``disruptedPods`` runs out."""
        stamps = [tables.parse_timestamp(t) for t in (status.get("disruptedPods") or {}).values()]
        moments = [moment + DELETION_TIMEOUT for moment in stamps if moment is not None]
        if not moments or self._loop is None:
            return
        delay = max(0.0, (min(moments) - now_utc()).total_seconds()) + 1.0
        previous = self._expiry_timers.pop(namespace, None)
        if previous is not None:
            previous.cancel()
        self._expiry_timers[namespace] = self._loop.call_later(delay, self._mark, namespace)

    # --- the status ---------------------------------------------------------------------------

    def budget_status(self, budget: Mapping[str, Any]) -> dict[str, Any]:
        namespace = budget["metadata"]["namespace"]
        spec = budget.get("spec") or {}
        previous = budget.get("status") or {}
        selector = spec.get("selector")
        pods = (
            []
            if selector is None
            else [pod for pod in self.store.list_stored(self.store.resolve("", "v1", "pods"), namespace)
                  if selector_matches(selector, pod)]
        )
        expected, desired = self._expected_and_desired(spec, pods)
        now = now_utc()
        disrupted = _still_disrupted(previous.get("disruptedPods") or {}, pods, now)
        healthy = sum(
            1 for pod in pods
            if not pod["metadata"].get("deletionTimestamp") and pod["metadata"]["name"] not in disrupted
            and is_pod_ready(pod)
        )
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        generation = int(budget["metadata"].get("generation") or 0)
        status: dict[str, Any] = {
            **{key: value for key, value in previous.items() if key not in ("disruptedPods",)},
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
        }
        if disrupted:
            status["disruptedPods"] = disrupted
        status["conditions"] = disruption_allowed_conditions(status, generation)
        return status

    def _expected_and_desired(self, spec: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
        """``getExpectedPodCount``."""
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if max_unavailable is not None:
            expected = self._expected_scale(pods)
            return expected, max(0, expected - scaled_value(max_unavailable, expected, round_up=True))
        if isinstance(min_available, int):
            return len(pods), min_available
        if min_available is not None:
            expected = self._expected_scale(pods)
            return expected, scaled_value(min_available, expected, round_up=True)
        return 0, 0

    def _expected_scale(self, pods: Sequence[Mapping[str, Any]]) -> int:
        """``getExpectedScale``: the replicas of each distinct controller of the pods, summed."""
        replicas: dict[str, int] = {}
        for pod in pods:
            ref = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if ref is None or ref.get("uid") in replicas:
                continue  # unmanaged pods are left out; each controller counts once
            kind = _SCALED_KINDS.get((str(ref.get("apiVersion")), str(ref.get("kind"))))
            if kind is None:
                continue
            try:
                resource = self.store.resolve(*kind)
            except Exception:  # e.g. the kind is not served here
                continue
            owner = self.store.find_stored(resource, pod["metadata"]["namespace"], str(ref.get("name")))
            if owner is not None and owner["metadata"].get("uid") == ref.get("uid"):
                replicas[str(ref["uid"])] = int((owner.get("spec") or {}).get("replicas", 1))
        return sum(replicas.values())


def _still_disrupted(
    disrupted: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime.datetime
) -> dict[str, Any]:
    """``buildDisruptedPodMap``: entries of pods that exist, are not terminating yet, and are recent."""
    by_name = {pod["metadata"]["name"]: pod for pod in pods}
    kept: dict[str, Any] = {}
    for name, stamp in disrupted.items():
        pod = by_name.get(name)
        moment = tables.parse_timestamp(stamp)
        if pod is None or pod["metadata"].get("deletionTimestamp") or moment is None:
            continue
        if moment + DELETION_TIMEOUT > now:
            kept[name] = stamp
    return kept
