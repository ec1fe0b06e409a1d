"""fallback.route httpRoute: steer the pool's traffic with the weights of a Gateway API HTTPRoute.

The user's HTTPRoute (gateway.networking.k8s.io/v1) names the pool's Service ``NAME`` as a backendRef
of a rule; every other backendRef of that same rule is the fallback (typically a Service of type
ExternalName, or a Backend of the Gateway implementation, pointing at the hosted API). Only the
``weight`` of those backendRefs is ever written; rules without the pool's Service, and every other
field, stay as the user wrote them.

A write is a JSON patch (RFC 6902) that first tests the route's resourceVersion and each backendRef's
name at its index, so a concurrent edit makes it fail (and the next evaluation reads anew) instead of
being overwritten or landing on the wrong list item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.api.spec import InferencePoolSpec
from controller.api.status import FallbackMode
from controller.core.plan import AppliedChange
from controller.kube.apply import REFUSED_STATUSES, server_message
from controller.kube.client import KubeApi
from controller.kube.render import PoolRef

__all__ = ["GATEWAY_GROUP", "GATEWAY_VERSION", "SHARES", "route_weights", "set_route_weights", "weight_patch"]

Manifest = dict[str, Any]

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTPROUTES = "httproutes"
KIND = "HTTPRoute"
# Gateway API: "If unspecified, weight defaults to 1".
DEFAULT_WEIGHT = 1

# The percentage of a rule's traffic the pool keeps, and the fallback gets, per mode.
# Overflow means "only what the pool cannot take"; a weighted split cannot say that, it sends a share
# of every request. The pool is declared saturated only at its most replicas with a queue above the
# threshold for a while, i.e. demand exceeds what it serves: half to the API drains that queue unless
# demand is more than twice the pool's capacity, and hysteresis brings the traffic back (Off) once
# the pool is healthy again. The bundled router spills exactly the excess, per request.
SHARES: Mapping[FallbackMode, tuple[int, int]] = {"Off": (100, 0), "Overflow": (50, 50), "Full": (0, 100)}
# At most this many attempts when the route changes between our read and our write.
ATTEMPTS = 2


def _is_pool_backend(ref: Mapping[str, Any], pool: PoolRef, route_namespace: str) -> bool:
    """A backendRef to the core Service ``pool.name`` in the pool's namespace (group "" and kind Service
    are the defaults; a ref's namespace defaults to the route's)."""
    return (ref.get("group") in (None, "") and ref.get("kind") in (None, "Service")
            and ref.get("name") == pool.name and (ref.get("namespace") or route_namespace) == pool.namespace)


def route_weights(route: Mapping[str, Any], pool: PoolRef, mode: FallbackMode
                  ) -> tuple[dict[tuple[int, int], int], list[str]]:
    """The weights the mode asks for, by (rule, backendRef) index, and the problems found.

    Within a rule holding the pool's Service and ``n`` fallbacks, the pool gets ``share * n`` and each
    fallback ``100 - share``: the pool keeps exactly its share of the rule's traffic, and the fallbacks
    split the rest evenly.
    """
    route_namespace = str((route.get("metadata") or {}).get("namespace") or pool.namespace)
    pool_share, fallback_share = SHARES[mode]
    wanted: dict[tuple[int, int], int] = {}
    problems = []
    for rule_index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        pool_refs = [i for i, ref in enumerate(refs) if _is_pool_backend(ref, pool, route_namespace)]
        if not pool_refs:
            continue
        fallbacks = [i for i in range(len(refs)) if i not in pool_refs]
        if not fallbacks:
            problems.append(f"rule {rule_index} sends to Service {pool.name} but names no fallback backendRef")
            continue
        for i in pool_refs:
            wanted[(rule_index, i)] = pool_share * len(fallbacks)
        for i in fallbacks:
            wanted[(rule_index, i)] = fallback_share
    if not wanted and not problems:
        problems.append(f"no rule has a backendRef to Service {pool.name}")
    return wanted, problems


def weight_patch(route: Mapping[str, Any], wanted: Mapping[tuple[int, int], int]) -> tuple[list[Manifest], list[str]]:
    """The JSON patch for the weights that differ, and their field paths; empty when all are right."""
    rules = route["spec"]["rules"]
    operations: list[Manifest] = []
    fields = []
    for (rule_index, ref_index), weight in sorted(wanted.items()):
        ref = rules[rule_index]["backendRefs"][ref_index]
        if ref.get("weight", DEFAULT_WEIGHT) == weight:
            continue
        path = f"/spec/rules/{rule_index}/backendRefs/{ref_index}"
        # The item must still be the one we read; "add" sets the member whether or not it exists.
        operations += [{"op": "test", "path": f"{path}/name", "value": ref.get("name")},
                       {"op": "add", "path": f"{path}/weight", "value": weight}]
        fields.append(f"spec.rules[{rule_index}].backendRefs[{ref_index}].weight")
    if operations:
        version = (route.get("metadata") or {}).get("resourceVersion")
        operations.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return operations, fields


async def set_route_weights(api: KubeApi, pool: PoolRef, spec: InferencePoolSpec,
                            mode: FallbackMode) -> AppliedChange | None:
    """Bring the HTTPRoute's weights to the mode: None when they are right already (nothing written),
    else what was written or why it could not be ("failed", with a message for the pool's status)."""
    ref = spec.fallback.http_route
    if ref is None:
        return AppliedChange(KIND, "", "failed", message="fallback.route is httpRoute but fallback.httpRoute is unset")
    namespace = ref.namespace or pool.namespace
    for _ in range(ATTEMPTS):
        try:
            route = await api.read_custom(GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES, namespace, ref.name)
        except ApiException as error:
            if error.status not in REFUSED_STATUSES:
                raise  # a server in trouble: the evaluation fails and is retried with backoff
            return AppliedChange(KIND, ref.name, "failed", message=server_message(error))
        if route is None:
            return AppliedChange(KIND, ref.name, "failed",
                                 message=f"HTTPRoute {namespace}/{ref.name} not found (is the Gateway API installed?)")
        wanted, problems = route_weights(route, pool, mode)
        if problems:
            return AppliedChange(KIND, ref.name, "failed", message=f"HTTPRoute {namespace}/{ref.name}: "
                                 + "; ".join(problems))
        operations, fields = weight_patch(route, wanted)
        if not operations:
            return None
        try:
            await api.json_patch_custom(GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES, namespace, ref.name, operations)
        except ApiException as error:
            if error.status in (409, 422):
                continue  # edited between our read and our write (a test failed): read it again
            if error.status not in REFUSED_STATUSES:
                raise
            return AppliedChange(KIND, ref.name, "failed", message=server_message(error))
        pool_share, fallback_share = SHARES[mode]
        return AppliedChange(KIND, ref.name, "updated", tuple(fields),
                             detail=f"{mode}: pool {pool_share}%, fallback {fallback_share}%")
    return AppliedChange(KIND, ref.name, "failed",
                         message=f"HTTPRoute {namespace}/{ref.name} kept changing while its weights were written")
