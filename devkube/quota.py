"""ResourceQuota admission for object counts, as kube-apiserver's ResourceQuota admission plugin does it.

On create, every ResourceQuota of the namespace whose ``spec.hard`` names the new object's resource
as ``count/<plural>.<group>`` (``count/<plural>`` for the core group) is checked: when the objects
already there plus this one exceed the hard limit, the create is refused with 403 Forbidden and the
plugin's message (plugin/pkg/admission/resourcequota/controller.go, CheckRequest; the object-count
evaluator is pkg/quota/v1/generic/evaluator.go). Usage is counted from the store at once, where the
real server reads the quota's status, which its controller keeps current.

Not reproduced: compute resources (``requests.cpu``, ...), scopes, the legacy names (``pods``,
``services``, ...), and the "status unknown" refusal before the controller first counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from devkube import errors
from devkube.resources import Resource

__all__ = ["check_object_count"]


def _count_name(resource: Resource) -> str:
    return f"count/{resource.plural}" if not resource.group else f"count/{resource.plural}.{resource.group}"


def check_object_count(resource: Resource, quotas: Iterable[dict[str, Any]],
                       count: Callable[[], int]) -> None:
    """Raise 403 when creating one more ``resource`` object would exceed a quota of its namespace."""
    name = _count_name(resource)
    limited = [(q["metadata"]["name"], q.get("spec", {}).get("hard", {}).get(name)) for q in quotas]
    limited = [(quota, hard) for quota, hard in limited if hard is not None]
    if not limited:
        return
    used = count()
    for quota, hard in limited:
        if used + 1 > int(str(hard)):
            raise errors.forbidden(f"exceeded quota: {quota}, requested: {name}=1, used: {name}={used}, "
                                   f"limited: {name}={hard}")


def initial_status(quota: dict[str, Any], count: Callable[[str], int | None]) -> dict[str, Any]:
    """The status the quota controller would write first: ``hard`` as asked, ``used`` counted now.

    ``count`` takes the resource part of a ``count/...`` name (``deployments.apps``). Later usage
    is not written back (admission counts the store itself), so ``used`` shows the creation time.
    """
    hard = dict(quota.get("spec", {}).get("hard", {}))
    used = {}
    for name in hard:
        if name.startswith("count/") and (found := count(name.removeprefix("count/"))) is not None:
            used[name] = str(found)
    return {"hard": hard, "used": used}
