"""Keep the router's view current: the pool's fallback mode and the replicas it may send to.

Two list-then-watch loops against the API server, one for the pool (``status.fallback.mode``) and
one for the EndpointSlices of the headless Service ``POOL-replicas`` (label
``kubernetes.io/service-name``). The ``kubernetes`` client blocks, so each loop runs in a daemon
thread of its own and hands every new summary to the event loop, which swaps the holder's view.
A watch resumes from the last resourceVersion it saw; ``410 Gone`` (the server forgot that
version) starts over with a fresh list; any other failure retries with backoff. Nothing here ends
the router: discovery runs until it is cancelled.

A replica is used when its endpoint's conditions are ready and serving and not terminating. The
EndpointSlice API (discovery.k8s.io/v1 ``EndpointConditions``) says a missing ``ready`` or
``serving`` is to be read as true and a missing ``terminating`` as false; older releases said a
missing ``serving`` defers to ``ready``, which gives the same answer here. The address is the
endpoint's first (the API defines no meaning for more), the port the slice's port named ``http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.api.spec import API_GROUP, API_VERSION, PLURAL
from controller.api.status import FallbackMode
from controller.router.view import RouterView, ViewHolder
from controller.sources.metrics.urls import replica_metrics_base_url

__all__ = ["SERVICE_NAME_LABEL", "discover", "fallback_mode", "in_flight_per_replica", "replica_urls",
           "replicas_service_name"]

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
Summary = TypeVar("Summary")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PORT_NAME = "http"
MODES: tuple[FallbackMode, ...] = get_args(FallbackMode)

WATCH_SECONDS = 300  # the server ends each watch after this long; the next resumes where it ended
CONNECT_SECONDS = 10.0
# A watch silent for this much longer than its timeout is a dead connection: dropped and reopened.
READ_SLACK_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 30.0


def replicas_service_name(pool: str) -> str:
    return f"{pool}-replicas"


def fallback_mode(pool: Mapping[str, Any] | None) -> FallbackMode:
    """The pool's ``status.fallback.mode``; no pool, no status or a value we do not know: Off."""
    status = (pool or {}).get("status") or {}
    fallback = status.get("fallback") if isinstance(status, Mapping) else None
    mode = fallback.get("mode") if isinstance(fallback, Mapping) else None
    for known in MODES:
        if mode == known:
            return known
    if mode is not None:
        logger.warning("pool status has an unknown fallback mode %r: treated as Off", mode)
    return "Off"


def _usable(endpoint: Mapping[str, Any]) -> bool:
    conditions = endpoint.get("conditions") or {}
    return (conditions.get("ready") is not False and conditions.get("serving") is not False
            and conditions.get("terminating") is not True)


def replica_urls(endpoint_slice: Mapping[str, Any]) -> list[str]:
    """``http://ADDR:PORT`` of the slice's usable endpoints (IPv6 bracketed); none without an http port."""
    if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
        return []  # FQDN slices name no pod of ours
    ports = [p.get("port") for p in endpoint_slice.get("ports") or [] if p.get("name") == PORT_NAME]
    if not ports or not isinstance(ports[0], int):
        return []  # the placeholder slice of a Service without endpoints has no ports
    urls = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        if not addresses or not _usable(endpoint):
            continue
        try:
            urls.append(replica_metrics_base_url(str(addresses[0]), ports[0]))
        except ValueError as error:
            logger.warning("skipping an endpoint of EndpointSlice %s: %s",
                           (endpoint_slice.get("metadata") or {}).get("name"), error)
    return urls


def in_flight_per_replica(pool: Mapping[str, Any] | None) -> int | None:
    """The pool's ``status.fallback.inFlightPerReplica``; None when absent or not a positive integer."""
    status = (pool or {}).get("status") or {}
    fallback = status.get("fallback") if isinstance(status, Mapping) else None
    value = fallback.get("inFlightPerReplica") if isinstance(fallback, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _pool_summary(objects: Mapping[str, Manifest]) -> tuple[FallbackMode, int | None]:
    pool = next(iter(objects.values()), None)
    return fallback_mode(pool), in_flight_per_replica(pool)


def _replicas_summary(objects: Mapping[str, Manifest]) -> tuple[str, ...]:
    """Every slice of the Service together, each replica once, in a stable order."""
    return tuple(sorted({url for endpoint_slice in objects.values() for url in replica_urls(endpoint_slice)}))


class _Expired(Exception):
    """410 Gone: the server no longer has the resourceVersion the watch would resume from."""


def _lines(response: Any) -> Iterator[bytes]:
    """The watch stream's events, one JSON document a line, as the chunks arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


class _ListWatch(Generic[Summary]):
    """One kind's list-then-watch in a daemon thread; each new summary of what it holds goes to ``deliver``."""

    def __init__(self, what: str, call: Callable[..., Any], summarize: Callable[[Mapping[str, Manifest]], Summary],
                 deliver: Callable[[Summary], None], *, watch_seconds: int) -> None:
        self._what = what
        self._call = call
        self._summarize = summarize
        self._deliver = deliver
        self._watch_seconds = watch_seconds
        self._objects: dict[str, Manifest] = {}
        self._delivered: tuple[Summary] | None = None
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"discovery-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the loop; an open watch is shut down at once rather than when its next event comes."""
        self._stopped.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # urllib3 2.3+: unblocks a read in progress in the other thread
            with contextlib.suppress(Exception):
                response.release_conn()

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                resource_version = self._list()
                while not self._stopped.is_set():
                    resource_version, progressed = self._watch(resource_version)
                    if progressed:
                        failures = 0
            except _Expired:
                logger.info("watch of %s expired (410 Gone): listing again", self._what)
                failures += 1  # a server that answers 410 to a fresh list's version must not be hammered
                if failures > 1:
                    self._stopped.wait(self._backoff(failures - 1))
            except Exception as error:  # discovery outlives every server failure: retried with backoff
                if self._stopped.is_set():
                    break
                failures += 1
                delay = self._backoff(failures)
                logger.warning("watching %s failed (%d in a row): %s; retrying in %.0f s",
                               self._what, failures, _reason(error), delay)
                self._stopped.wait(delay)

    @staticmethod
    def _backoff(failures: int) -> float:
        return float(min(MAX_BACKOFF_SECONDS, 2 ** max(0, failures - 1)))

    def _list(self) -> str:
        response = self._call(_preload_content=False, _request_timeout=(CONNECT_SECONDS, CONNECT_SECONDS * 3))
        listed = json.loads(response.data)
        self._objects = {str(item["metadata"]["name"]): item for item in listed.get("items") or []}
        self._publish()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, resource_version: str) -> tuple[str, bool]:
        """One watch until the server ends it: the resourceVersion reached, and whether any event came."""
        try:
            response = self._call(watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                                  timeout_seconds=self._watch_seconds, _preload_content=False,
                                  _request_timeout=(CONNECT_SECONDS, self._watch_seconds + READ_SLACK_SECONDS))
        except ApiException as error:
            if error.status == 410:
                raise _Expired from error
            raise
        self._response = response
        progressed = False
        try:
            for line in _lines(response):
                if self._stopped.is_set():
                    break
                resource_version = self._apply(json.loads(line), resource_version)
                progressed = True
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return resource_version, progressed

    def _apply(self, event: Mapping[str, Any], resource_version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired
            raise RuntimeError(f"the watch ended with an error: {obj.get('code')} {obj.get('message')}")
        metadata = obj.get("metadata") or {}
        resource_version = str(metadata.get("resourceVersion") or resource_version)
        name = str(metadata.get("name") or "")
        if kind in ("ADDED", "MODIFIED"):
            self._objects[name] = dict(obj)
        elif kind == "DELETED":
            self._objects.pop(name, None)
        else:
            return resource_version  # BOOKMARK: only a newer version to resume from
        self._publish()
        return resource_version

    def _publish(self) -> None:
        summary = self._summarize(self._objects)
        if self._delivered is None or self._delivered[0] != summary:
            self._delivered = (summary,)
            self._deliver(summary)


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


async def discover(namespace: str, pool: str, holder: ViewHolder, *, api_client: kubernetes.client.ApiClient,
                   watch_seconds: int = WATCH_SECONDS) -> None:
    """Keep ``holder`` current until cancelled: a change reaches it as soon as its watch event arrives.

    The view becomes known once both the pool and the slices were read; until then the holder keeps
    what it had (not known: the router is not ready).
    """
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def deliver_to_loop(which: str) -> Callable[[Any], None]:
        def deliver(summary: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the watcher is being stopped
                loop.call_soon_threadsafe(updates.put_nowait, (which, summary))
        return deliver

    custom = kubernetes.client.CustomObjectsApi(api_client)
    slices = kubernetes.client.DiscoveryV1Api(api_client)

    def list_pool(**kwargs: Any) -> Any:
        # One pool by name: what a Role with resourceNames may list and watch.
        return custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL,
                                                    field_selector=f"metadata.name={pool}", **kwargs)

    def list_slices(**kwargs: Any) -> Any:
        return slices.list_namespaced_endpoint_slice(
            namespace, label_selector=f"{SERVICE_NAME_LABEL}={replicas_service_name(pool)}", **kwargs)

    watchers: list[_ListWatch[Any]] = [
        _ListWatch(f"pool {namespace}/{pool}", list_pool, _pool_summary, deliver_to_loop("mode"),
                   watch_seconds=watch_seconds),
        _ListWatch(f"EndpointSlices of {namespace}/{replicas_service_name(pool)}", list_slices, _replicas_summary,
                   deliver_to_loop("replicas"), watch_seconds=watch_seconds),
    ]
    routing: tuple[FallbackMode, int | None] | None = None
    replicas: tuple[str, ...] | None = None
    try:
        for watcher in watchers:
            watcher.start()
        while True:
            which, summary = await updates.get()
            if which == "mode":
                routing = summary
            else:
                replicas = summary
            if routing is None or replicas is None:
                continue
            view = RouterView(mode=routing[0], in_flight_per_replica=routing[1], replicas=replicas, known=True)
            if view != holder.view:
                await holder.replace(view)
    finally:
        for watcher in watchers:
            watcher.stop()
