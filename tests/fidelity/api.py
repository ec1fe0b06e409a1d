"""A raw HTTP view of an API server for the fidelity scenarios: the same requests on both servers, and
what came back (status, body), with server-chosen values (uids, resourceVersions, times) masked."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

__all__ = ["Api", "Reply", "masked"]

Json = Any
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

# Values only the server picks: compared by shape, not by value.
_SERVER_CHOSEN = {"uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "selfLink", "continue",
                  "clusterIP", "clusterIPs", "time", "lastTransitionTime", "managedFields"}
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Json

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) and self.body.get("kind") == "Status" else None


def masked(value: Json) -> Json:
    """``value`` with every server-chosen value replaced by a placeholder (its presence still counts)."""
    if isinstance(value, dict):
        return {k: (f"<{k}>" if k in _SERVER_CHOSEN and v not in (None, "", [], {}) else masked(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str) and _RFC3339.match(value):
        return "<time>"
    return value


class Api:
    """Requests through the official client's connection pool, as the operator's requests go."""

    def __init__(self, name: str, kubeconfig: str) -> None:
        self.name = name
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self._client = kubernetes.client.ApiClient(configuration)

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, body: Json = None, *, content_type: str = "application/json",
                query: dict[str, str] | None = None, expect: int | None = None) -> Reply:
        try:
            response = self._client.call_api(
                path, method, query_params=list((query or {}).items()), body=body,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
            reply = Reply(response.status, json.loads(response.data or b"null"))
        except ApiException as error:
            try:
                parsed = json.loads(error.body or b"null")
            except ValueError:
                parsed = error.body
            reply = Reply(error.status, parsed)
        if expect is not None and reply.status != expect:
            raise AssertionError(f"{self.name}: {method} {path} answered {reply.status}, not {expect}: {reply.body}")
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Json, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def patch(self, path: str, body: Json, content_type: str = MERGE, **kwargs: Any) -> Reply:
        return self.request("PATCH", path, body, content_type=content_type, **kwargs)

    def put(self, path: str, body: Json, **kwargs: Any) -> Reply:
        return self.request("PUT", path, body, **kwargs)

    def delete(self, path: str, body: Json = None, **kwargs: Any) -> Reply:
        return self.request("DELETE", path, body, **kwargs)

    def namespace(self) -> str:
        name = f"fidelity-{uuid.uuid4().hex[:8]}"
        self.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                  expect=201)
        # A new namespace's ServiceAccount `default` comes from a controller on a real cluster.
        return name

    def watch(self, path: str, query: dict[str, str], seconds: int = 2) -> list[Json]:
        """A watch that the server ends after ``seconds``; the events it sent."""
        response = self._client.call_api(
            path, "GET", query_params=[*query.items(), ("watch", "1"), ("timeoutSeconds", str(seconds))],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True, _request_timeout=seconds + 10)
        events = [json.loads(line) for line in _lines(response)]
        response.release_conn()
        return events

    def eventually(self, probe: Callable[[], Json], accept: Callable[[Json], bool], timeout: float = 30.0) -> Json:
        deadline = time.monotonic() + timeout
        last = probe()
        while not accept(last):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out; last seen: {last!r}")
            time.sleep(0.1)
            last = probe()
        return last


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(4096):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer
