"""
Server-side defaulting of the built-in kinds an operator typically manages.

A real server fills in many defaults on every write; an operator that compares
its desired state with the stored one naively would patch forever on a real
cluster. The emulator applies the most visible defaults of Deployments, Pods, Services
and Namespaces (probes included, and an env var's empty value dropped as its
``omitempty`` tag does) so that such bugs show up here too; the fidelity suite
(``tests/fidelity``) compares them with a real server's. Not covered: defaults of
other kinds, of volumes, of ``env.valueFrom``.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from controller.api import quantity
from devkube import errors

Defaulter = Callable[[dict[str, Any], dict[str, Any] | None], None]


def apply_defaults(group: str, plural: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Fill in the defaults in place, on writes to the main resource (not on status writes)."""
    defaulter = _DEFAULTERS.get((group, plural))
    if defaulter is None:
        return
    try:
        defaulter(obj, previous)
    except quantity.InvalidQuantity as error:
        # Decoding fails before validation on a real server: 400, not 422.
        kind, version = obj.get("kind", plural), str(obj.get("apiVersion", "v1")).rsplit("/", 1)[-1]
        raise errors.bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: {error}') from None


def _deployment(obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    _pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def _pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _container(container)


def _container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", _pull_policy(str(container.get("image", ""))))
    resources = container.setdefault("resources", {})
    for list_name in ("requests", "limits"):
        for name, value in (resources.get(list_name) or {}).items():
            if isinstance(value, int | float):
                value = str(value)
            if not isinstance(value, str):
                raise quantity.InvalidQuantity(f"quantities must match the regular expression "
                                               f"'{quantity.QUANTITY_PATTERN}'")
            resources[list_name][name] = quantity.canonical(value, round_to_milli=True)
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        if isinstance(container.get(probe_name), dict):
            _probe(container[probe_name])
    for env in container.get("env") or []:
        # EnvVar.Value is `json:"value,omitempty"`: the stored object has no empty value.
        if env.get("value") == "":
            del env["value"]


def _probe(probe: dict[str, Any]) -> None:
    # pkg/apis/core/v1/defaults.go: SetDefaults_Probe, SetDefaults_HTTPGetAction.
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _pull_policy(image: str) -> str:
    # As the real defaulting: ":latest" or no tag (and no digest) means "Always".
    if "@" in image:
        return "IfNotPresent"
    last_segment = image.rsplit("/", 1)[-1]
    tag = last_segment.split(":", 1)[1] if ":" in last_segment else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


# Cluster IPs from the usual default service range; unique per process, never reused.
_cluster_ips: Iterator[str] = (
    str(ipaddress.IPv4Address("10.96.0.10") + offset) for offset in itertools.count()
)


def _service(obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
    spec = obj.setdefault("spec", {})
    previous_spec = (previous or {}).get("spec") or {}
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec["type"] != "ExternalName":
        # The cluster IP is allocated once and kept when an update omits it.
        spec.setdefault("clusterIP", previous_spec.get("clusterIP") or next(_cluster_ips))
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")


def _namespace(obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
    labels = obj.setdefault("metadata", {}).setdefault("labels", {})
    labels.setdefault("kubernetes.io/metadata.name", obj["metadata"].get("name"))
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _pod(obj: dict[str, Any], previous: dict[str, Any] | None) -> None:
    _pod_spec(obj.setdefault("spec", {}))


_DEFAULTERS: dict[tuple[str, str], Defaulter] = {
    ("apps", "deployments"): _deployment,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "namespaces"): _namespace,
}
