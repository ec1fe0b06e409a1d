"""Pools and schemas on either side of the CRD's rules, shared by the CRD tests (run the way the API
server does, ``tests/api``) and the real API server's own verdict on them (``tests/e2e``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

__all__ = ["BAD_OBJECTS", "BASE_SPEC", "BROKEN_SCHEMAS", "GOOD_OBJECTS", "merged"]

Json = dict[str, Any]


def merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
    """``base`` with ``patch`` merged in, JSON-merge-patch style: maps merge, None removes, rest replaces."""
    result = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# A valid pool that sets every list the rules read, so each case below breaks one rule only.
BASE_SPEC: Json = {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "args": ["--max-model-len=8192"]}}


ARGS_MESSAGE = "args must not set --port, --served-model-name, --shutdown-timeout, --host"
DNS_MESSAGE = "metadata.name must be a DNS-1035 label"
DRAIN_MESSAGE = "interruption.drainSeconds must be at least preStopSeconds + 10"
CUSTOM_MESSAGE = "the custom provider needs capacity.spot.nodeSelector"
# fallback.preferCheaper's prerequisites met (prices from reference/vllm-replica-model.md 4.1 and 4.3): each
# case below takes one away.
CHEAPER: Json = {
    "replicas": {"min": 0, "max": 4},
    "fallback": {"enabled": True, "preferCheaper": True,
                 "provider": {"baseURL": "https://api.example/v1", "model": "m"}},
    "cost": {"spotReplicaHourly": 0.349, "onDemandReplicaHourly": 0.8048,
             "apiInputPerMillionTokens": 0.15, "apiOutputPerMillionTokens": 0.60},
}
API_PRICES_MESSAGE = "fallback.preferCheaper needs cost.apiInputPerMillionTokens and cost.apiOutputPerMillionTokens"
REPLICA_PRICES_MESSAGE = "fallback.preferCheaper needs cost.onDemandReplicaHourly"

# name, spec patch (merged into BASE_SPEC), a part of the message, path of the problem ("" is the root)
BAD_OBJECTS = [
    pytest.param("llama", {"replicas": {"min": 3, "max": 2}},
                 "replicas.min must not exceed replicas.max", "spec.replicas.min", id="min-above-max"),
    pytest.param("llama", {"replicas": {"min": 2}},
                 "replicas.min must not exceed replicas.max", "spec.replicas.min",
                 id="min-above-defaulted-max"),
    pytest.param("llama", {"model": {"args": ["--max-model-len=8192", "--port=9000"]}},
                 ARGS_MESSAGE, "spec.model.args", id="args-port-with-value"),
    pytest.param("llama", {"model": {"args": ["--host", "0.0.0.0"]}}, ARGS_MESSAGE, "spec.model.args",
                 id="args-bare-host"),
    pytest.param("llama", {"model": {"args": ["--served-model-name=x"]}}, ARGS_MESSAGE, "spec.model.args",
                 id="args-served-model-name"),
    pytest.param("llama", {"model": {"args": ["--shutdown-timeout"]}}, ARGS_MESSAGE, "spec.model.args",
                 id="args-shutdown-timeout"),
    pytest.param("llama", {"capacity": {"provider": "custom", "spot": {"nodeSelector": {}}}},
                 CUSTOM_MESSAGE, "spec.capacity.spot.nodeSelector", id="custom-provider-empty-node-selector"),
    pytest.param("llama", {"fallback": {"enabled": True}},
                 "fallback.enabled needs fallback.provider", "spec.fallback.provider",
                 id="fallback-enabled-without-provider"),
    pytest.param("llama", {"fallback": {"route": "httpRoute"}},
                 "fallback.route httpRoute needs fallback.httpRoute", "spec.fallback.httpRoute",
                 id="route-httproute-without-httproute"),
    pytest.param("llama", merged(CHEAPER, {"fallback": {"enabled": False}}),
                 "fallback.preferCheaper needs fallback.enabled", "spec.fallback.preferCheaper",
                 id="prefer-cheaper-without-fallback"),
    pytest.param("llama", merged(CHEAPER, {"fallback": {"route": "httpRoute", "httpRoute": {"name": "llm"}}}),
                 "fallback.preferCheaper needs fallback.route router", "spec.fallback.route",
                 id="prefer-cheaper-with-httproute"),
    pytest.param("llama", merged(CHEAPER, {"replicas": {"min": None}}),
                 "fallback.preferCheaper needs replicas.min 0", "spec.replicas.min",
                 id="prefer-cheaper-with-defaulted-min"),
    pytest.param("llama", merged(CHEAPER, {"cost": {"apiOutputPerMillionTokens": None}}),
                 API_PRICES_MESSAGE, "spec.cost", id="prefer-cheaper-without-api-output-price"),
    pytest.param("llama", merged(CHEAPER, {"cost": {"onDemandReplicaHourly": None}}),
                 REPLICA_PRICES_MESSAGE, "spec.cost", id="prefer-cheaper-without-on-demand-price"),
    pytest.param("llama", merged(CHEAPER, {"cost": {"spotReplicaHourly": None}}),
                 REPLICA_PRICES_MESSAGE, "spec.cost", id="prefer-cheaper-with-spot-share-without-spot-price"),
    pytest.param("llama", {"interruption": {"drainSeconds": 29, "preStopSeconds": 20}},
                 DRAIN_MESSAGE, "spec.interruption.drainSeconds", id="drain-below-prestop-plus-10"),
    pytest.param("llama", {"interruption": {"drainSeconds": 19}},
                 DRAIN_MESSAGE, "spec.interruption.drainSeconds", id="drain-below-defaulted-prestop-plus-10"),
    pytest.param("Llama-8b", {}, DNS_MESSAGE, "", id="name-with-capitals"),
    pytest.param("8b-llama", {}, DNS_MESSAGE, "", id="name-starting-with-digit"),
    pytest.param("llama-", {}, DNS_MESSAGE, "", id="name-ending-with-dash"),
    pytest.param("llama.8b", {}, DNS_MESSAGE, "", id="name-with-dot"),
    pytest.param("a" * 41, {}, "metadata.name must be at most 40 characters", "", id="name-41-characters"),
    pytest.param(
        "llama", {"capacity": {"provider": "custom"}}, CUSTOM_MESSAGE, "spec.capacity.spot.nodeSelector",
        id="custom-provider-without-node-selector",
    ),
    pytest.param("llama", {"capacity": {"spot": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}}},
                 "a toleration with operator Exists takes no value", "spec.capacity.spot.tolerations[0].value",
                 id="toleration-exists-with-value"),
    pytest.param("llama", {"capacity": {"onDemand": {"tolerations": [{"operator": "Equal", "value": "v"}]}}},
                 "a toleration without a key must use operator Exists",
                 "spec.capacity.onDemand.tolerations[0].operator", id="toleration-without-key-not-exists"),
    pytest.param("llama", {"model": {"resources": {"requests": {"cpu": "lots"}}}},
                 "requests: every value must be a Kubernetes quantity", "spec.model.resources.requests",
                 id="request-not-a-quantity"),
    pytest.param("llama", {"model": {"resources": {"limits": {"memory": "1.5GB"}}}},
                 "limits: every value must be a Kubernetes quantity", "spec.model.resources.limits",
                 id="limit-with-a-unit-kubernetes-does-not-know"),
]


GOOD_OBJECTS = [
    pytest.param("llama", {}, id="base"),
    pytest.param("llama", {"replicas": {"min": 4, "max": 4}}, id="min-equals-max"),
    pytest.param("llama", {"replicas": {"min": 0, "max": 3}}, id="scale-to-zero"),
    pytest.param("llama", {"replicas": {"max": 5}}, id="defaulted-min-below-max"),
    pytest.param("llama", {"model": {"args": ["--portal", "--hostname=x", "--port-range=1"]}},
                 id="args-that-only-look-managed"),
    pytest.param("llama", {"model": {"args": []}}, id="empty-args"),
    pytest.param("llama", {"model": {"resources": {
                     "requests": {"cpu": "0.5", "memory": "1024Mi"},
                     "limits": {"cpu": 4, "memory": "1.5Gi", "ephemeral-storage": "2e9"}}}},
                 id="quantities-in-every-form"),
    pytest.param("llama", {"interruption": {"drainSeconds": 30, "preStopSeconds": 20}},
                 id="drain-exactly-enough"),
    pytest.param("llama", {"interruption": {"drainSeconds": 20}}, id="drain-exactly-enough-defaulted"),
    pytest.param("llama", {"capacity": {"provider": "custom", "spot": {"nodeSelector": {"pool": "spot"}}}},
                 id="custom-provider-with-node-selector"),
    pytest.param("llama", {"fallback": {"enabled": True, "provider": {"baseURL": "https://api.example/v1",
                                                                        "model": "m"}}},
                 id="fallback-with-provider"),
    pytest.param("llama", {"fallback": {"route": "httpRoute", "httpRoute": {"name": "llm"}}},
                 id="route-with-httproute"),
    pytest.param("llama", {"capacity": {"spot": {"tolerations": [{"operator": "Exists"},
                                                                  {"key": "k", "operator": "Exists"}]}}},
                 id="tolerations-exists-without-value"),
    pytest.param("llama", CHEAPER, id="prefer-cheaper-with-everything-it-needs"),
    pytest.param("llama", merged(CHEAPER, {"capacity": {"spotPercentage": 0}, "cost": {"spotReplicaHourly": None}}),
                 id="prefer-cheaper-on-demand-only-without-spot-price"),
    pytest.param("llama", {"fallback": {"preferCheaper": False}, "replicas": {"min": 1}}, id="prefer-cheaper-off"),
    pytest.param("a" * 40, {}, id="name-40-characters"),
    pytest.param("a", {}, id="name-one-letter"),
    pytest.param("llama-3-1-8b", {}, id="name-with-dashes-and-digits"),
    pytest.param(
        "llama", {"model": {"args": None}}, id="model-without-args",
    ),
]


# A schema fragment the API server refuses in a CRD, and what devkube/crd_schema.py says of it.
BROKEN_SCHEMAS: list[tuple[Json, str]] = [
    ({"properties": {"x": {"description": "d"}}}, "x: has no type"),
    ({"properties": {"x": {"type": "string"}}}, "x: has no description"),
    ({"properties": {"x": {"$ref": "#/d", "type": "object", "description": "d"}}}, "$ref is not allowed"),
    ({"properties": {"x": {"type": "object", "description": "d",
                           "properties": {"y": {"type": "string", "description": "d"}},
                           "additionalProperties": {"type": "string"}}}}, "mutually exclusive"),
    ({"properties": {"x": {"type": "string", "description": "d",
                           "anyOf": [{"type": "integer"}]}}}, "anyOf must not set type"),
    ({"properties": {"x": {"type": "array", "description": "d"}}}, "an array needs items"),
    ({"properties": {"x": {"type": "integer", "description": "d", "minimum": 1, "default": 0}}},
     "default 0 is invalid"),
    ({"properties": {"x": {"type": "object", "description": "d", "properties": {},
                           "default": {"unknown": 1}}}}, "has fields the schema prunes"),
    ({"x-kubernetes-validations": [{"rule": "self.x <=", "message": "m"}]}, "does not compile"),
    ({"properties": {"x": {"type": "integer", "description": "d"}},
      "x-kubernetes-validations": [{"rule": "self.y > 0", "message": "m"}]}, "self.y: no such field"),
    ({"properties": {"x": {"type": "integer", "description": "d"}},
      "x-kubernetes-validations": [{"rule": "self.x > 0", "message": "m", "fieldPath": ".z"}]},
     "fieldPath '.z'"),
]
