"""
The Eviction API: ``POST /api/v1/namespaces/{ns}/pods/{name}/eviction``, as
pkg/registry/core/pod/storage/eviction.go serves it (``EvictionREST.Create``).

* A pod that is terminal (``Succeeded``/``Failed``), ``Pending`` (not running yet) or already
  terminating is deleted without looking at any PodDisruptionBudget (``canIgnorePDB``).
* Otherwise the namespace's PDBs whose selector matches the pod decide: more than one is a 500
  (a ``Status`` with code 500 and no reason, as the real handler returns); a PDB whose status lags
  its generation is a 429 "still being processed"; one that allows no disruption is a 429 with the
  ``DisruptionBudget`` cause "The disruption budget NAME needs N healthy pods and has M currently".
  A pod that is not Ready is let go without spending a disruption when the budget is healthy anyway
  (``IfHealthyBudget``, the default) or the PDB says ``unhealthyPodEvictionPolicy: AlwaysAllow``.
* On success the PDB's ``disruptionsAllowed`` is decremented and the pod is recorded in
  ``status.disruptedPods`` (the disruption controller forgets it once the pod is terminating or
  after two minutes), the pod gets the ``DisruptionTarget`` condition (``EvictionByEvictionAPI``),
  and it is deleted gracefully with the eviction's ``deleteOptions``; the answer is a ``Status``
  ``Success`` with code 201 (a create).

Differences: no retries on conflicts (writes here are atomic); the resourceVersion precondition
the real handler adds against a pod turning Ready meanwhile is not needed for the same reason;
``MaxDisruptedPodSize`` is not enforced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from devkube import errors
from devkube.disruption import disruption_allowed_conditions
from devkube.store import ObjectStore, now_utc, timestamp
from devkube.workloads import is_pod_ready, selector_matches

EVICTION_KINDS = ("Eviction",)
_EVICTION_API_VERSIONS = ("policy/v1", "policy/v1beta1")
_VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
_TOO_MANY_BUDGETS = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."


def evict(store: ObjectStore, namespace: str, name: str, body: Any, *, dry_run: bool = False) -> dict[str, Any]:
    """Serve one eviction; returns the ``Status`` to send (its ``code`` is the HTTP status) or raises."""
    options = _delete_options(name, body)
    pods = store.resolve("", "v1", "pods")
    pod = store.find_stored(pods, namespace, name)
    if pod is None:
        raise errors.not_found(pods, name)
    if _can_ignore_budgets(pod):
        return _delete(store, namespace, name, options, dry_run=dry_run)
    budgets = [
        budget
        for budget in store.list_stored(store.resolve("policy", "v1", "poddisruptionbudgets"), namespace)
        if (selector := (budget.get("spec") or {}).get("selector")) is not None
        if selector_matches(selector, pod)  # a nil selector matches no pod (LabelSelectorAsSelector)
    ]
    if len(budgets) > 1:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": _TOO_MANY_BUDGETS, "code": 500}
    if budgets and not _unhealthy_pod_may_go(budgets[0], pod):
        _check_and_decrement(store, budgets[0], name, dry_run=dry_run)
    return _delete(store, namespace, name, options, dry_run=dry_run)


def _delete_options(name: str, body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise errors.bad_request("the body must be an Eviction object")
    # Without kind and apiVersion (the python client sends none) the body decodes as the endpoint's type.
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if (kind is not None and kind not in EVICTION_KINDS) or (
        api_version is not None and api_version not in _EVICTION_API_VERSIONS
    ):
        raise errors.bad_request(
            f"the body must be a policy/v1 Eviction, not {body.get('apiVersion')}/{body.get('kind')}"
        )
    body_name = (body.get("metadata") or {}).get("name")
    if body_name and body_name != name:
        raise errors.bad_request("name in URL does not match name in Eviction object")
    options = body.get("deleteOptions") or {}
    if not isinstance(options, Mapping):
        raise errors.bad_request("deleteOptions must be an object")
    return options


def _can_ignore_budgets(pod: Mapping[str, Any]) -> bool:
    """``canIgnorePDB``: the pod is not running (any more), or is going already."""
    phase = (pod.get("status") or {}).get("phase") or "Pending"  # a pod without status is Pending
    return phase in ("Succeeded", "Failed", "Pending") or bool(pod["metadata"].get("deletionTimestamp"))


def _unhealthy_pod_may_go(budget: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """A not-Ready pod may be evicted without spending a disruption (``unhealthyPodEvictionPolicy``)."""
    if is_pod_ready(pod):
        return False
    if (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return True
    status = budget.get("status") or {}
    desired = int(status.get("desiredHealthy") or 0)
    return int(status.get("currentHealthy") or 0) >= desired > 0  # IfHealthyBudget, the default


def _check_and_decrement(store: ObjectStore, budget: Mapping[str, Any], pod_name: str, *, dry_run: bool) -> None:
    """``checkAndDecrement``: 429 unless the budget's status is current and allows a disruption."""
    name = budget["metadata"]["name"]
    status = copy.deepcopy(dict(budget.get("status") or {}))
    if int(status.get("observedGeneration") or 0) < int(budget["metadata"].get("generation") or 0):
        raise _too_many_requests(f"The disruption budget {name} is still being processed by the server.", 10)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        message = f'poddisruptionbudgets.policy "{name}" is forbidden: pdb disruptions allowed is negative'
        raise errors.forbidden(message)
    if allowed == 0:
        raise _too_many_requests(
            f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)} healthy pods "
            f"and has {int(status.get('currentHealthy') or 0)} currently",
            0,
        )
    if dry_run:
        return
    status["disruptionsAllowed"] = allowed - 1
    if allowed - 1 == 0:
        status["conditions"] = disruption_allowed_conditions(status, budget["metadata"].get("generation", 0))
    # Tells the disruption controller not to count the pod as healthy while its deletion is on its way.
    status["disruptedPods"] = {**(status.get("disruptedPods") or {}), pod_name: timestamp(now_utc())}
    pdbs = store.resolve("policy", "v1", "poddisruptionbudgets")
    store.write_status(pdbs, budget["metadata"]["namespace"], name, status)


def _too_many_requests(cause: str, retry_after: int) -> errors.ApiError:
    details: dict[str, Any] = {"causes": [{"reason": "DisruptionBudget", "message": cause}]}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
    return errors.ApiError(429, "TooManyRequests", _VIOLATION, details)


def _delete(
    store: ObjectStore, namespace: str, name: str, options: Mapping[str, Any], *, dry_run: bool
) -> dict[str, Any]:
    """``addConditionAndDeletePod``: the DisruptionTarget condition first, then a (graceful) delete."""
    pods = store.resolve("", "v1", "pods")
    preconditions = options.get("preconditions") or {}
    dry_run = dry_run or "All" in (options.get("dryRun") or [])
    current = store.get(pods, namespace, name)
    if not dry_run:
        store.check_preconditions(pods, current, preconditions)
        status = copy.deepcopy(current.get("status") or {})
        status["conditions"] = [
            *(c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"),
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
             "message": "Eviction API: evicting", "lastProbeTime": None,
             "lastTransitionTime": timestamp(now_utc())},
        ]
        store.write_status(pods, namespace, name, status)
        preconditions = {key: value for key, value in preconditions.items() if key != "resourceVersion"}
    grace = options.get("gracePeriodSeconds")
    store.delete(
        pods,
        namespace,
        name,
        preconditions=preconditions,
        grace_period_seconds=None if grace is None else int(grace),
        dry_run=dry_run,
    )
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
