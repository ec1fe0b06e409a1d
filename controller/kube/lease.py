"""One ``coordination.k8s.io/v1`` Lease: read, create and replace it, for the leader election (controller/leader.py).

Through the official client's CoordinationV1Api, bodies as plain dicts (as controller/kube/client.py), in
threads of its own: a renewal never waits behind the evaluations' API calls. Every call has a deadline
the caller chooses (the renewal's must end before the renew deadline does), enforced twice: by the HTTP
client, and by not waiting for the thread any longer.

The MicroTime fields (``acquireTime``, ``renewTime``) are written as kube-apiserver wants them, with exactly
six fractional digits (``micro_time``): it refuses ``2026-12-03T12:00:00Z``, which is what the client's own
serialisation of a datetime with no microseconds would send.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

__all__ = ["LeaseApi", "LeaseConflict", "LeaseError", "LeaseRecord", "micro_time"]

Manifest = dict[str, Any]


class LeaseError(Exception):
    """The API server could not be asked (``status`` None), or refused with ``status``."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LeaseConflict(LeaseError):
    """409: created by someone else first, or changed since it was read (a stale resourceVersion)."""


def micro_time(moment: datetime.datetime) -> str:
    """metav1.MicroTime's one layout: RFC 3339 in UTC with six fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The election's record: client-go's LeaderElectionRecord as a Lease's spec holds it."""

    holder: str  # "" when nobody holds it (released)
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Manifest) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> Manifest:
        spec: Manifest = {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease_duration_seconds,
                          "leaseTransitions": self.transitions}
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


class LeaseApi:
    """Read, create and replace the Lease ``namespace/name``."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._api_client = api_client
        # Two: a call that timed out may hold one until the HTTP client gives up too.
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="lease")

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def get(self, *, timeout_seconds: float) -> Manifest | None:
        """The Lease, or None when there is none."""
        try:
            return await self._call(self._api.read_namespaced_lease, self.name, self.namespace,
                                    timeout_seconds=timeout_seconds)
        except LeaseError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, record: LeaseRecord, *, timeout_seconds: float) -> Manifest:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.spec()}
        return await self._call(self._api.create_namespaced_lease, self.namespace, body,
                                timeout_seconds=timeout_seconds)

    async def replace(self, lease: Manifest, record: LeaseRecord, *, timeout_seconds: float) -> Manifest:
        """PUT the record into ``lease`` as it was read: conditional on its resourceVersion (409 if stale)."""
        # The metadata as read (a PUT replaces it: labels, annotations or finalizers someone added stay).
        metadata = {k: v for k, v in (lease.get("metadata") or {}).items() if k != "managedFields"}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": record.spec()}
        return await self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body,
                                timeout_seconds=timeout_seconds)

    async def _call(self, method: Any, *args: Any, timeout_seconds: float) -> Manifest:
        def blocking() -> Manifest:
            try:
                response = method(*args, _preload_content=False, _request_timeout=(timeout_seconds, timeout_seconds))
            except ApiException as error:
                if error.status == 409:
                    raise LeaseConflict(_message(error), 409) from error
                raise LeaseError(f"HTTP {error.status}: {_message(error)}", error.status) from error
            except Exception as error:  # connection refused, timed out, TLS: urllib3's many kinds
                raise LeaseError(f"{type(error).__name__}: {error}") from error
            parsed: Manifest = json.loads(response.data)
            return parsed

        future = asyncio.get_running_loop().run_in_executor(self._threads, blocking)
        try:
            return await asyncio.wait_for(future, timeout_seconds + 0.5)
        except TimeoutError:
            raise LeaseError(f"no answer within {timeout_seconds:g} s") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False)
        self._api_client.close()


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)
