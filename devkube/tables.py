"""
Server-side printing: ``meta.k8s.io`` ``Table`` responses for ``kubectl get``.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`` and prints
the columns the server chose. Custom resources use their CRD's ``additionalPrinterColumns``
(or NAME, AGE without them), evaluated as a real server does: a missing value is a ``null``
cell (kubectl shows ``<none>``), ``date`` columns become ages like ``5s``, ``3m10s``, ``4d``.
Built-in kinds get the real server's columns for a few common kinds (Namespaces, Nodes, Pods, Deployments,
Services, EndpointSlices, PodDisruptionBudgets, ConfigMaps, Secrets, Events, CRDs) and NAME, AGE for the rest —
a real server has specific columns for every built-in kind. The Pods' STATUS and RESTARTS cells
are simplified: the phase, a container's waiting/terminated reason or ``Terminating``, and the
sum of the restart counts without the time of the last restart.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from devkube import jsonpath

CellFn = Callable[[Mapping[str, Any], datetime.datetime], Any]

_TABLE_VERSIONS = ("v1", "v1beta1")
_NAME_DESCRIPTION = "Name must be unique within a namespace."


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    cell: CellFn
    format: str = ""
    description: str = ""
    priority: int = 0

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def wanted_table_version(accept: str | None) -> str | None:
    """The Table apiVersion if the client accepts Tables first, e.g. ``meta.k8s.io/v1``."""
    for media_range in (accept or "").split(","):
        params = dict(_media_params(media_range))
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in _TABLE_VERSIONS
        ):
            return f"meta.k8s.io/{params['v']}"
    return None


def _media_params(media_range: str) -> Iterable[tuple[str, str]]:
    for param in media_range.split(";")[1:]:
        key, _, value = param.partition("=")
        yield key.strip(), value.strip()


def human_duration(seconds: float) -> str:
    """The age format of kubectl & the API server (k8s.io/apimachinery's HumanDuration)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if minutes < 10:
        return _compound(minutes, "m", whole % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _compound(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _compound(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _compound(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _compound(major: int, major_unit: str, minor: int, minor_unit: str) -> str:
    return f"{major}{major_unit}" if minor == 0 else f"{major}{major_unit}{minor}{minor_unit}"


def parse_timestamp(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age_of(value: Any, now: datetime.datetime) -> str | None:
    moment = parse_timestamp(value)
    return None if moment is None else human_duration((now - moment).total_seconds())


def render_table(
    objects: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    api_version: str,
    resource_version: str,
    include_object: str | None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    moment = now or datetime.datetime.now(tz=datetime.UTC)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [column.definition() for column in columns],
        "rows": [_row(obj, columns, moment, include_object) for obj in objects],
    }


def _row(
    obj: Mapping[str, Any], columns: Sequence[Column], now: datetime.datetime, include: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": [column.cell(obj, now) for column in columns]}
    if include == "Object":
        row["object"] = obj
    elif include != "None":  # the default is the metadata only
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return row


# --- Columns of custom resources, from the CRD ---------------------------------------------


def crd_columns(printer_columns: Sequence[Mapping[str, Any]] | None) -> list[Column]:
    """Columns from a CRD version's ``additionalPrinterColumns``; NAME, AGE without them."""
    if not printer_columns:
        return [NAME_COLUMN, AGE_COLUMN]
    return [NAME_COLUMN, *(_crd_column(spec) for spec in printer_columns)]


def _crd_column(spec: Mapping[str, Any]) -> Column:
    column_type = str(spec.get("type", "string"))
    steps = jsonpath.compile_path(str(spec.get("jsonPath", "")))

    def cell(obj: Mapping[str, Any], now: datetime.datetime) -> Any:
        values: list[Any] = [obj]
        for step in steps:
            values = [found for value in values for found in step(value)]
        return _typed_cell(column_type, values[0], now) if values else None

    return Column(
        name=str(spec.get("name", "")),
        type=column_type,
        cell=cell,
        format=str(spec.get("format", "")),
        description=str(spec.get("description", "")),
        priority=int(spec.get("priority", 0)),
    )


def _typed_cell(column_type: str, value: Any, now: datetime.datetime) -> Any:
    """Convert as the real server does: a value of a wrong type is a ``null`` cell."""
    if value is None:
        return None
    if column_type == "date":
        return age_of(value, now)
    if column_type == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if column_type == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    return _as_text(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


# --- Columns of built-in kinds ---------------------------------------------------------------


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for step in path:
        value = value.get(step) if isinstance(value, Mapping) else None
    return value


def _text_cell(*path: str, default: str = "<none>") -> CellFn:
    return lambda obj, now: _as_text(value) if (value := _get(obj, *path)) not in (None, "") else default


NAME_COLUMN = Column(
    "Name", "string", lambda obj, now: _get(obj, "metadata", "name"), "name", _NAME_DESCRIPTION
)
AGE_COLUMN = Column(
    "Age",
    "date",
    lambda obj, now: age_of(_get(obj, "metadata", "creationTimestamp"), now),
    description="CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _deployment_ready(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    desired = _get(obj, "spec", "replicas")
    ready = _get(obj, "status", "readyReplicas") or 0
    return f"{ready}/{1 if desired is None else desired}"


def _containers_cell(field: str) -> CellFn:
    def cell(obj: Mapping[str, Any], now: datetime.datetime) -> str:
        containers = _get(obj, "spec", "template", "spec", "containers") or []
        return ",".join(str(container.get(field, "")) for container in containers) or "<none>"

    return cell


def _selector_cell(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    labels = _get(obj, "spec", "selector", "matchLabels") or _get(obj, "spec", "selector") or {}
    return ",".join(f"{key}={value}" for key, value in labels.items() if isinstance(value, str)) or "<none>"


def _service_ports(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    rendered = [_service_port(port) for port in _get(obj, "spec", "ports") or []]
    return ",".join(rendered) or "<none>"


def _service_port(port: Mapping[str, Any]) -> str:
    node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
    return f"{port.get('port')}{node_port}/{port.get('protocol', 'TCP')}"


def _data_count(obj: Mapping[str, Any], now: datetime.datetime) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _event_object(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    kind = str(_get(obj, "involvedObject", "kind") or "").lower()
    return f"{kind}/{_get(obj, 'involvedObject', 'name') or ''}"


def _event_last_seen(obj: Mapping[str, Any], now: datetime.datetime) -> str | None:
    moment = obj.get("lastTimestamp") or obj.get("eventTime") or _get(obj, "metadata", "creationTimestamp")
    return age_of(moment, now)


def _pod_ready(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    total = len(_get(obj, "spec", "containers") or [])
    ready = sum(1 for status in _get(obj, "status", "containerStatuses") or [] if status.get("ready"))
    return f"{ready}/{total}"


def _pod_status(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    reason = str(_get(obj, "status", "reason") or _get(obj, "status", "phase") or "Pending")
    for container in _get(obj, "status", "containerStatuses") or []:
        state = container.get("state") or {}
        found = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if found:
            reason = str(found)
    if _get(obj, "metadata", "deletionTimestamp") and reason not in ("Succeeded", "Failed"):
        return "Terminating"
    return reason


def _pod_restarts(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    statuses = _get(obj, "status", "containerStatuses") or []
    return str(sum(int(status.get("restartCount") or 0) for status in statuses))


def _readiness_gates(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    gates = [gate.get("conditionType") for gate in _get(obj, "spec", "readinessGates") or []]
    if not gates:
        return "<none>"
    conditions = _get(obj, "status", "conditions") or []
    passed = sum(1 for c in conditions if c.get("type") in gates and c.get("status") == "True")
    return f"{passed}/{len(gates)}"


def _list_with_more(items: Sequence[str], limit: int = 3) -> str:
    """The first three items and ``+ N more...`` (the server's listWithMoreString); ``<unset>`` for none."""
    text = ",".join(items[:limit])
    if len(items) > limit:
        return f"{text} + {len(items) - limit} more..."
    return text or "<unset>"


def _slice_ports(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    ports = obj.get("ports") or []
    return _list_with_more([str(p["port"]) if p.get("port") is not None else p.get("name") or "*" for p in ports])


def _slice_endpoints(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    return _list_with_more([address for e in obj.get("endpoints") or [] for address in e.get("addresses") or []])


def _node_status(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    """As pkg/printers/internalversion/printers.go's printNode: the Ready condition, then SchedulingDisabled."""
    ready = next((c for c in _get(obj, "status", "conditions") or [] if c.get("type") == "Ready"), None)
    states = ["Unknown" if ready is None else {"True": "Ready"}.get(ready.get("status"), "NotReady")]
    if _get(obj, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    return ",".join(states)


def _node_roles(obj: Mapping[str, Any], now: datetime.datetime) -> str:
    labels = _get(obj, "metadata", "labels") or {}
    roles = sorted(
        {key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/") and "/" in key}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    return ",".join(role for role in roles if role) or "<none>"


def _node_address(kind: str) -> CellFn:
    def cell(obj: Mapping[str, Any], now: datetime.datetime) -> str:
        found = [a.get("address", "") for a in _get(obj, "status", "addresses") or [] if a.get("type") == kind]
        return ",".join(found) or "<none>"

    return cell


def _int_cell(*path: str) -> CellFn:
    return lambda obj, now: _get(obj, *path) or 0


BUILTIN_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "namespaces"): [
        NAME_COLUMN,
        Column("Status", "string", _text_cell("status", "phase", default="")),
        AGE_COLUMN,
    ],
    ("", "pods"): [
        NAME_COLUMN,
        Column("Ready", "string", _pod_ready, description="The aggregate readiness state of this pod."),
        Column("Status", "string", _pod_status, description="The aggregate status of the containers."),
        Column("Restarts", "string", _pod_restarts, description="The number of container restarts."),
        AGE_COLUMN,
        Column("IP", "string", _text_cell("status", "podIP"), priority=1),
        Column("Node", "string", _text_cell("spec", "nodeName"), priority=1),
        Column("Nominated Node", "string", _text_cell("status", "nominatedNodeName"), priority=1),
        Column("Readiness Gates", "string", _readiness_gates, priority=1),
    ],
    ("", "nodes"): [
        NAME_COLUMN,
        Column("Status", "string", _node_status, description="The status of the node"),
        Column("Roles", "string", _node_roles, description="The roles of the node"),
        AGE_COLUMN,
        Column("Version", "string", _text_cell("status", "nodeInfo", "kubeletVersion", default=""),
               description="Kubelet Version reported by the node."),
        Column("Internal-IP", "string", _node_address("InternalIP"), priority=1),
        Column("External-IP", "string", _node_address("ExternalIP"), priority=1),
        Column("OS-Image", "string", _text_cell("status", "nodeInfo", "osImage"), priority=1),
        Column("Kernel-Version", "string", _text_cell("status", "nodeInfo", "kernelVersion"), priority=1),
        Column("Container-Runtime", "string", _text_cell("status", "nodeInfo", "containerRuntimeVersion"),
               priority=1),
    ],
    ("apps", "deployments"): [
        NAME_COLUMN,
        Column("Ready", "string", _deployment_ready),
        Column("Up-to-date", "integer", _int_cell("status", "updatedReplicas")),
        Column("Available", "integer", _int_cell("status", "availableReplicas")),
        AGE_COLUMN,
        Column("Containers", "string", _containers_cell("name"), priority=1),
        Column("Images", "string", _containers_cell("image"), priority=1),
        Column("Selector", "string", _selector_cell, priority=1),
    ],
    ("", "services"): [
        NAME_COLUMN,
        Column("Type", "string", _text_cell("spec", "type", default="ClusterIP")),
        Column("Cluster-IP", "string", _text_cell("spec", "clusterIP")),
        Column("External-IP", "string", _text_cell("spec", "externalIPs")),
        Column("Port(s)", "string", _service_ports),
        AGE_COLUMN,
        Column("Selector", "string", _selector_cell, priority=1),
    ],
    ("discovery.k8s.io", "endpointslices"): [
        NAME_COLUMN,
        Column("AddressType", "string", _text_cell("addressType"), description="Type of address carried by this "
               "EndpointSlice."),
        Column("Ports", "string", _slice_ports, description="Ports that are exposed by this EndpointSlice."),
        Column("Endpoints", "string", _slice_endpoints, description="List of endpoints in this EndpointSlice."),
        AGE_COLUMN,
    ],
    ("policy", "poddisruptionbudgets"): [
        NAME_COLUMN,
        Column("Min available", "string", _text_cell("spec", "minAvailable", default="N/A")),
        Column("Max unavailable", "string", _text_cell("spec", "maxUnavailable", default="N/A")),
        Column("Allowed disruptions", "integer", _int_cell("status", "disruptionsAllowed")),
        AGE_COLUMN,
    ],
    ("", "configmaps"): [NAME_COLUMN, Column("Data", "integer", _data_count), AGE_COLUMN],
    ("", "secrets"): [
        NAME_COLUMN,
        Column("Type", "string", _text_cell("type")),
        Column("Data", "integer", _data_count),
        AGE_COLUMN,
    ],
    ("", "events"): [
        Column("Last Seen", "string", _event_last_seen),
        Column("Type", "string", _text_cell("type")),
        Column("Reason", "string", _text_cell("reason")),
        Column("Object", "string", _event_object),
        Column("Message", "string", _text_cell("message")),
        dataclasses.replace(NAME_COLUMN, priority=1),
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME_COLUMN,
        Column("Created At", "date", lambda obj, now: _get(obj, "metadata", "creationTimestamp")),
    ],
}


def builtin_columns(group: str, plural: str) -> list[Column]:
    return BUILTIN_COLUMNS.get((group, plural), [NAME_COLUMN, AGE_COLUMN])
