"""
``DevKubeEmulator``: kmock's ``KubernetesEmulator`` grown into an API server that Kopf,
the ``kubernetes`` client and the real ``kubectl`` can work against.

It keeps kmock's machinery — the aiohttp handler, the request records and DSL reactions
(``emulator['get /foo'] << 500`` overrides a response), the ``objects`` and ``resources``
arrays — and replaces kmock's request parsing (which crashes on ``/api/v1/namespaces``),
its naive object handling and its discovery. The semantics are in :mod:`.store`, the
printing in :mod:`.tables`, the selectors in :mod:`.selectors`, the patches in :mod:`.patching`.

HTTP-level differences from a real API server (cover them in e2e tests on a real cluster):

* JSON only: no protobuf, no CBOR, no YAML bodies (415) — so kubectl's imperative generators
  that send protobuf (``kubectl create configmap|secret|deployment ...``) fail; use
  ``kubectl apply -f``/``create -f``; ``limit``/``continue`` paging pages the current state
  rather than a snapshot (see ``_Page``); BOOKMARK events after ``sendInitialEvents`` and, with
  ``allowWatchBookmarks``, every ``bookmark_interval_seconds`` (a real server sends them about once a
  minute, not on a strict clock); ``fieldValidation``, ``fieldManager``, ``propagationPolicy`` are
  accepted and ignored; ``gracePeriodSeconds`` counts for Pods only (see :mod:`.store`).
* No authentication, authorization or admission; no aggregated discovery (kubectl falls
  back to the legacy documents); no ``/scale``, ``/log``, ``/exec`` etc. subresources, but
  ``pods/eviction`` (:mod:`.eviction`).
* Server-side apply (``application/apply-patch+yaml``) answers 415.
* OpenAPI: a minimal v3 document that only declares the endpoints and their
  ``fieldValidation`` parameter (so kubectl leaves validation to the server, which does
  none) and no schemas; ``/openapi/v2`` is 404. ``kubectl apply`` therefore needs no flags.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
from typing_extensions import override

from devkube import discovery, errors, eviction, openapi, patching, selectors, tables
from devkube.paths import ApiPath, guess_action, is_true, parse_api_path
from devkube.resources import Resource
from devkube.store import PODS, ObjectStore, Subscription, WatchEvent
from devkube.writelog import WRITE_METHODS, WriteLog

logger = logging.getLogger(__name__)

# kmock exports Response at the top level but not in its __all__.
_Response = kmock.Response  # type: ignore[attr-defined]

JsonObject = dict[str, Any]


@attrs.define(kw_only=True)
class WatchSpec:
    """What one watch request wants to see, and how it wants to see it."""

    resource: Resource
    namespace: str | None
    name: str | None
    labels: selectors.LabelSelector
    fields: selectors.FieldSelector
    table_version: str | None
    include_object: str | None

    def in_scope(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return (self.namespace is None or meta.get("namespace") == self.namespace) and (
            self.name is None or meta.get("name") == self.name
        )

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self.in_scope(obj) and self.labels.matches(obj) and self.fields.matches(obj)

    def event_type(self, event: WatchEvent) -> str | None:
        """The event as this watcher sees it: objects entering/leaving the selection are ADDED/DELETED."""
        matches_now = self.matches(event.object)
        if event.type != "MODIFIED":
            return event.type if matches_now else None
        matched_before = event.old is not None and self.matches(event.old)
        if matches_now:
            return "MODIFIED" if matched_before else "ADDED"
        return "DELETED" if matched_before else None


@attrs.define(kw_only=True)
class DevKubeEmulator(kmock.KubernetesEmulator):
    history_size: int = 10_000
    # A watch that asked for bookmarks (allowWatchBookmarks=true) gets a BOOKMARK with the current
    # resourceVersion this often, as the real watch cache sends them (defaultBookmarkFrequency, one
    # minute, in k8s.io/apiserver/pkg/storage/cacher/cacher.go): a client whose selection saw no event
    # keeps a resourceVersion the server still has, and a quiet watch is not mistaken for a dead one.
    bookmark_interval_seconds: float = 60.0
    # How many recent requests kmock's reactions are matched against (see __call__).
    request_history: int = 1_000
    _requests_seen: int = attrs.field(default=0, init=False)
    _resource_reaction: Any = attrs.field(default=None, init=False)
    _builtin_payloads: int = attrs.field(default=0, init=False)
    store: ObjectStore = attrs.field(init=False)
    write_log: WriteLog = attrs.field(init=False, factory=WriteLog)
    # How many objects lists and watches sent, by (User-Agent, plural): what a client really received,
    # so a test can tell server-side selection from filtering after the data arrived.
    objects_sent: collections.Counter[tuple[str, str]] = attrs.field(init=False, factory=collections.Counter)
    unexpected_errors: list[Exception] = attrs.field(init=False, factory=list)
    # Every HTTP request received, by (User-Agent, verb: GET, WATCH, POST, PATCH, ...), discovery included:
    # the write log has only the writes; a benchmark counts what a client asks of the server in all.
    requests_received: collections.Counter[tuple[str, str]] = attrs.field(init=False, factory=collections.Counter)

    def __attrs_post_init__(self) -> None:
        # Only the scaffold's discovery endpoints and its 404 catch-all: kmock's own emulator
        # fallbacks for objects are replaced by ours (their paths do not overlap the discovery's).
        # User reactions (``emulator['patch'] << 503``) have a higher priority than all of these.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self.store = ObjectStore(self.objects, self.resources, history_size=self.history_size)
        self.fallback["get /openapi/v3"] << self._serve_openapi_root
        self.fallback["get", re.compile(openapi.GROUP_VERSION_PATH_RE)] << self._serve_openapi_group_version
        self._resource_reaction = self.fallback[self._is_resource_request] << self._serve_resource
        self._builtin_payloads = len(self._payloads)

    # --- request intake ---------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        request = await self._parse_request(raw_request)
        self._requests_seen += 1
        verb = "WATCH" if is_true(request.params.get("watch")) else request.method.upper()
        self.requests_received[(_header(request, "User-Agent") or "", verb)] += 1
        self._requests.append(request)
        # kmock matches each request against its whole request history (for slices like
        # ``emulator[...][:3] << 503``): unbounded, every request costs more than the last.
        # Keep a recent window; a slice reaction counts its requests within that window.
        if len(self._requests) > self.request_history:
            del self._requests[: len(self._requests) - self.request_history]
        try:
            response = await self._handle(request)
        except kmock.KubernetesError as e:  # ours and kmock's scaffold's (unknown groups, endpoints)
            response = _status_response(e)
        except Exception as e:
            logger.exception("Unexpected failure while serving %s %s", request.method, request.url)
            self.unexpected_errors.append(e)
            response = _status_response(errors.ApiError(500, "InternalError", repr(e)))
        self._log_write(request, response)
        return response

    async def _parse_request(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        text = body.decode("utf-8", errors="replace")
        data: Any = None
        if body:
            try:
                data = await raw_request.json()
            except ValueError:
                data = None
        path = parse_api_path(raw_request.path)
        query = dict(raw_request.query)
        return kmock.Request(
            id=self._requests_seen,
            method=raw_request.method,
            url=raw_request.url,
            params=query,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=text,
            data=data,
            action=guess_action(path, raw_request.method, query),
            resource=None if path is None else kmock.resource(path.group, path.version, path.plural),
            namespace=None if path is None else path.namespace,
            name=None if path is None else path.name,
            subresource=None if path is None else path.subresource,
            raw_request=raw_request,
        )

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Without reactions of a test's own, an API request can only end at our resource handler:
        # go there directly. kmock's matching scans the request history for every reaction, which
        # costs milliseconds per request once a run has made thousands (benchmarks at 1,000 pools).
        if len(self._payloads) == self._builtin_payloads and self._is_resource_request(request):
            response: aiohttp.web.StreamResponse = await self._resource_reaction(request)
            return response
        # Skip kmock's KubernetesEmulator._handle: it would store the objects its own way.
        return await kmock.RawHandler._handle(self, request)

    @override
    def _get_resources(self) -> list[kmock.resource]:
        # Only the declared resources: kmock would also list those of soft-deleted objects.
        return [*self.resources]

    def recent_requests(self) -> list[kmock.Request]:
        """The last ``request_history`` requests, oldest first."""
        return list(self._requests)

    def _log_write(self, request: kmock.Request, response: aiohttp.web.StreamResponse) -> None:
        path = parse_api_path(request.url.path)
        if request.method.upper() not in WRITE_METHODS or path is None or path.plural is None:
            return
        created_name = _created_name(response) if request.method.upper() == "POST" else None
        self.write_log.append(
            method=request.method.upper(),
            path=request.url.path,
            group=path.group,
            version=path.version,
            resource=path.plural,
            namespace=path.namespace,
            name=path.name or created_name or _body_name(request.data),
            subresource=path.subresource,
            user_agent=_header(request, "User-Agent") or "",
            content_type=_header(request, "Content-Type") or "",
            body=request.data if request.data is not None else request.text,
            status=response.status,
        )

    # --- discovery ------------------------------------------------------------------------

    @override
    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return dict(discovery.SERVER_VERSION)

    @override
    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return discovery.api_versions()

    @override
    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        return discovery.api_group_list(self.resources)

    @override
    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.url.path.strip("/").split("/")[1]
        versions = discovery.group_versions(self.resources).get(group)
        if not versions:
            raise errors.unknown_resource()
        return discovery.api_group(group, versions)

    @override
    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        path = parse_api_path(request.url.path)
        document = (
            None if path is None else discovery.api_resource_list(self.resources, path.group, path.version)
        )
        if document is None:
            raise errors.unknown_resource()
        return document

    async def _serve_openapi_root(self, request: kmock.Request) -> kmock.Payload:
        return openapi.root_document(self.resources)

    async def _serve_openapi_group_version(self, request: kmock.Request) -> kmock.Payload:
        document = openapi.group_version_document(self.resources, request.url.path)
        if document is None:
            raise errors.unknown_resource()
        return document

    # --- resources ------------------------------------------------------------------------

    @staticmethod
    def _is_resource_request(request: kmock.Request) -> bool:
        path = parse_api_path(request.url.path)
        return path is not None and path.plural is not None

    async def _serve_resource(self, request: kmock.Request) -> kmock.Payload:
        path = parse_api_path(request.url.path)
        assert path is not None and path.plural is not None  # guaranteed by _is_resource_request
        resource = self.store.resolve(path.group, path.version, path.plural)
        if path.namespace is not None and not resource.namespaced:
            raise errors.unknown_resource()
        method = request.method.upper()
        _require_json_body(request)
        if method == "POST" and path.subresource == "eviction" and resource.key == PODS:
            assert path.namespace is not None and path.name is not None  # pods are namespaced
            result = eviction.evict(self.store, path.namespace, path.name, request.data, dry_run=_dry_run(request))
            return _Response(status=int(result["code"]), payload=result)
        # A PUT of a missing Lease creates it (store.creates_on_update): 201, as a POST.
        created = method == "PUT" and path.name is not None and path.subresource is None \
            and self.store.creates_on_update(resource, path.namespace, path.name)
        if method == "GET":
            payload = self._serve_read(request, resource, path)
        elif path.name is None:
            payload = self._serve_collection_write(request, resource, path)
        else:
            payload = self._serve_object_write(request, resource, path)
        # Always explicit: kmock copies a nested response's status into the reaction's shared
        # response, so a 201 of one creation would otherwise leak into all later responses.
        status = 201 if (method == "POST" and path.name is None) or created else 200
        return _Response(status=status, payload=payload)

    def _serve_read(self, request: kmock.Request, resource: Resource, path: ApiPath) -> kmock.Payload:
        if is_true(request.params.get("watch")):
            return self._start_watch(request, resource, path)
        table_version = tables.wanted_table_version(_header(request, "Accept"))
        page: _Page | None = None
        if path.name is None:
            objects = self.store.list_objects(
                resource,
                path.namespace,
                selectors.parse_label_selector(request.params.get("labelSelector")),
                selectors.parse_field_selector(resource.plural, request.params.get("fieldSelector")),
            )
            page = _Page.of(request.params, objects, self.store.resource_version)
            if page is not None:
                objects = page.items
            self.objects_sent[(_header(request, "User-Agent") or "", resource.plural)] += len(objects)
        elif path.subresource in (None, "status") and (path.subresource is None or resource.has_status):
            objects = [self.store.get(resource, path.namespace, path.name)]
        else:
            raise errors.not_found(resource, path.name)
        if table_version is not None:
            table = self._table(request, resource, objects, table_version)
            if page is not None:
                table["metadata"] = {**table.get("metadata", {}), **page.metadata()}
            return table
        if path.name is not None:
            return objects[0]
        metadata = page.metadata() if page is not None else {"resourceVersion": str(self.store.resource_version)}
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": objects,
        }

    def _table(
        self, request: kmock.Request, resource: Resource, objects: list[JsonObject], version: str
    ) -> JsonObject:
        return tables.render_table(
            objects,
            self._columns(resource),
            api_version=version,
            resource_version=str(self.store.resource_version),
            include_object=request.params.get("includeObject"),
        )

    def _columns(self, resource: Resource) -> list[tables.Column]:
        if self.store.is_custom(resource):
            return tables.crd_columns(self.store.crds.printer_columns.get(resource.key))
        return tables.builtin_columns(resource.group, resource.plural)

    def _serve_collection_write(
        self, request: kmock.Request, resource: Resource, path: ApiPath
    ) -> kmock.Payload:
        method = request.method.upper()
        if method == "POST":
            return self.store.create(resource, path.namespace, request.data, dry_run=_dry_run(request))
        if method == "DELETE":
            deleted = self.store.delete_collection(
                resource,
                path.namespace,
                selectors.parse_label_selector(request.params.get("labelSelector")),
                selectors.parse_field_selector(resource.plural, request.params.get("fieldSelector")),
                grace_period_seconds=_grace_period(request),
            )
            return {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": deleted,
            }
        raise errors.method_not_allowed(f"{method} is not supported on a collection")

    def _serve_object_write(self, request: kmock.Request, resource: Resource, path: ApiPath) -> kmock.Payload:
        assert path.name is not None
        method, dry_run = request.method.upper(), _dry_run(request)
        if method == "PATCH":
            content_type = _header(request, "Content-Type") or patching.MERGE_PATCH
            if request.data is None:
                raise errors.bad_request("the patch body must be JSON")
            return self.store.patch(
                resource,
                path.namespace,
                path.name,
                content_type,
                request.data,
                subresource=path.subresource,
                dry_run=dry_run,
            )
        if method == "PUT":
            return self.store.replace(
                resource,
                path.namespace,
                path.name,
                request.data,
                subresource=path.subresource,
                dry_run=dry_run,
            )
        if method == "DELETE" and path.subresource is None:
            options = request.data if isinstance(request.data, Mapping) else {}
            return self.store.delete(
                resource,
                path.namespace,
                path.name,
                preconditions=options.get("preconditions"),
                grace_period_seconds=_grace_period(request),
                dry_run=dry_run,
            )
        raise errors.method_not_allowed(f"{method} is not supported on {request.url.path}")

    # --- watching -------------------------------------------------------------------------

    def _start_watch(self, request: kmock.Request, resource: Resource, path: ApiPath) -> kmock.Payload:
        # Selectors are parsed before streaming starts, so that bad ones fail with a plain 400.
        spec = WatchSpec(
            resource=resource,
            namespace=path.namespace,
            name=path.name or None,
            labels=selectors.parse_label_selector(request.params.get("labelSelector")),
            fields=selectors.parse_field_selector(resource.plural, request.params.get("fieldSelector")),
            table_version=tables.wanted_table_version(_header(request, "Accept")),
            include_object=request.params.get("includeObject"),
        )
        timeout = _integer_param(request.params, "timeoutSeconds")
        # Subscribe and snapshot in one synchronous step: nothing can be written in between.
        subscription = self.store.subscribe()
        try:
            initial = self._initial_events(spec, request.params)
        except errors.ApiError as e:
            # E.g. 410 Expired: real servers report it as an ERROR event in a 200 stream.
            self.store.unsubscribe(subscription)
            stream = self._watch_stream(spec, [{"type": "ERROR", "object": e.as_status()}], None, timeout)
        else:
            bookmarks = self.bookmark_interval_seconds if is_true(request.params.get("allowWatchBookmarks")) else None
            stream = self._watch_stream(spec, initial, subscription, timeout,
                                        counter_key=(_header(request, "User-Agent") or "", resource.plural),
                                        bookmark_interval=bookmarks)
        return _Response(status=200, headers={"Content-Type": "application/json"}, payload=stream)

    def _initial_events(self, spec: WatchSpec, params: Mapping[str, str]) -> list[JsonObject]:
        rv = params.get("resourceVersion") or ""
        if rv.isdigit() and rv != "0" and not is_true(params.get("sendInitialEvents")):
            replay = self.store.events_since(int(rv))
            return [rendered for event in replay if (rendered := self._render_event(spec, event)) is not None]
        snapshot = [
            {"type": "ADDED", "object": self._render_object(spec, obj)}
            for obj in self.store.list_objects(spec.resource, spec.namespace, spec.labels, spec.fields)
            if spec.in_scope(obj)
        ]
        if is_true(params.get("sendInitialEvents")):
            snapshot.append(self._initial_events_end(spec))
        return snapshot

    def _bookmark(self, spec: WatchSpec) -> JsonObject:
        """A BOOKMARK: only kind, apiVersion and the resourceVersion the watch has reached."""
        bookmark = {"kind": spec.resource.kind, "apiVersion": spec.resource.api_version,
                    "metadata": {"resourceVersion": str(self.store.resource_version)}}
        return {"type": "BOOKMARK", "object": bookmark}

    def _initial_events_end(self, spec: WatchSpec) -> JsonObject:
        bookmark = {
            "kind": spec.resource.kind,
            "apiVersion": spec.resource.api_version,
            "metadata": {
                "resourceVersion": str(self.store.resource_version),
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        }
        return {"type": "BOOKMARK", "object": bookmark}

    async def _watch_stream(
        self,
        spec: WatchSpec,
        initial: list[JsonObject],
        subscription: Subscription | None,
        timeout: float | None,
        counter_key: tuple[str, str] | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[kmock.Payload]:
        deadline = None if timeout is None else time.monotonic() + timeout
        next_bookmark = None if bookmark_interval is None else time.monotonic() + bookmark_interval
        try:
            yield b""  # send the headers now: clients wait for them before reading events
            for event in initial:
                self._count_sent(counter_key, event)
                yield event
            if subscription is None:
                return
            while (remaining := _remaining(deadline)) is None or remaining > 0:
                wait = remaining
                if next_bookmark is not None:
                    until_bookmark = max(0.0, next_bookmark - time.monotonic())
                    wait = until_bookmark if wait is None else min(wait, until_bookmark)
                try:
                    # NB: no timeout context around the yields: it would cancel the HTTP writes.
                    item = await asyncio.wait_for(subscription.queue.get(), wait)
                except TimeoutError:
                    if next_bookmark is not None and time.monotonic() >= next_bookmark:
                        next_bookmark = time.monotonic() + (bookmark_interval or 0.0)
                        yield self._bookmark(spec)
                        continue
                    return
                if item is None:
                    return  # the emulator is shutting down
                if (rendered := self._render_event(spec, item)) is not None:
                    self._count_sent(counter_key, rendered)
                    yield rendered
        finally:
            if subscription is not None:
                self.store.unsubscribe(subscription)

    def _count_sent(self, key: tuple[str, str] | None, event: JsonObject) -> None:
        if key is not None and event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            self.objects_sent[key] += 1

    def _render_event(self, spec: WatchSpec, event: WatchEvent) -> JsonObject | None:
        if event.resource != self.store.storage_key(spec.resource):
            return None
        event_type = spec.event_type(event)
        if event_type is None:
            return None
        return {"type": event_type, "object": self._render_object(spec, event.object)}

    def _render_object(self, spec: WatchSpec, obj: Mapping[str, Any]) -> JsonObject:
        presented = self.store.present(spec.resource, obj)
        if spec.table_version is None:
            return presented
        return tables.render_table(
            [presented],
            self._columns(spec.resource),
            api_version=spec.table_version,
            resource_version=presented["metadata"].get("resourceVersion", ""),
            include_object=spec.include_object,
        )

    def register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """
        Declare a CRD's served versions and remember their printer columns, without storing
        a CRD object (creating one via the API or ``DevCluster.apply_crd`` does both).
        """
        return self.store.register_crd(crd)

    def close_watches(self) -> None:
        """End all watch streams (at shutdown), so that the server can stop at once."""
        self.store.close()


def _created_name(response: aiohttp.web.StreamResponse) -> str | None:
    """The name of a created object (it might be generated), from a successful JSON response."""
    if not isinstance(response, aiohttp.web.Response) or response.status != 201:
        return None
    try:
        body = json.loads(response.body if isinstance(response.body, bytes) else b"")
    except ValueError:
        return None
    return _body_name(body)


def _status_response(error: kmock.KubernetesError) -> aiohttp.web.StreamResponse:
    if isinstance(error, errors.ApiError):
        return aiohttp.web.json_response(error.as_status(), status=error.status)
    status = errors.ApiError(
        error.status,
        "NotFound" if error.status == 404 else (error.reason or "InternalError"),
        error.message or "the server could not find the requested resource",
    )
    return aiohttp.web.json_response(status.as_status(), status=error.status)


def _require_json_body(request: kmock.Request) -> None:
    """Refuse bodies that are not JSON: kubectl's typed commands (`create configmap`) send protobuf."""
    content_type = (_header(request, "Content-Type") or "application/json").split(";")[0].strip().lower()
    if request.body and request.method.upper() in ("POST", "PUT") and content_type != "application/json":
        raise errors.unsupported_media_type(content_type)


def _header(request: kmock.Request, name: str) -> str | None:
    wanted = name.lower()
    return next((str(value) for key, value in request.headers.items() if key.lower() == wanted), None)


def _body_name(data: Any) -> str | None:
    if isinstance(data, Mapping) and isinstance(data.get("metadata"), Mapping):
        name = data["metadata"].get("name")
        return str(name) if name else None
    return None


def _grace_period(request: kmock.Request) -> int | None:
    """DeleteOptions' gracePeriodSeconds, from the body (kubectl) or the query (the python client may)."""
    options = request.data if isinstance(request.data, Mapping) else {}
    value = options.get("gracePeriodSeconds")
    if value is None:
        return _integer_param(request.params, "gracePeriodSeconds")
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.bad_request(f"gracePeriodSeconds must be an integer, not {value!r}")
    return value


def _dry_run(request: kmock.Request) -> bool:
    return request.params.get("dryRun") == "All"


def _integer_param(params: Mapping[str, str], name: str) -> int | None:
    """A query parameter the real server decodes as an integer: ``timeoutSeconds=300.0`` is a 400 there
    (apimachinery's query conversion, strconv.ParseInt), and so it is here."""
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value, 10)
    except ValueError:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


@attrs.frozen
class _Page:
    """One page of a list with ``limit``, resumed with the ``continue`` token of the page before.

    As the real API server does (apiserver pkg/storage/etcd3/store.go, GetList): pages in key
    order, a continue token while items remain, ``remainingItemCount`` only when no selector
    narrowed the list, and 400 for a token it did not issue. Unlike it, later pages show the
    objects as they are now, not as of the first page's resourceVersion; a token outlives
    every compaction here (there is none) instead of expiring with 410.
    """

    items: list[JsonObject]
    resource_version: int
    continue_token: str | None
    remaining: int | None

    @classmethod
    def of(cls, params: Mapping[str, str], objects: list[JsonObject], current_rv: int) -> _Page | None:
        limit = _integer_param(params, "limit") or 0
        token = params.get("continue") or ""
        if limit <= 0 and not token:
            return None
        rv, start = current_rv, None
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
                rv, start = int(decoded["rv"]), tuple(decoded["start"])
            except (ValueError, KeyError, TypeError) as error:
                raise errors.bad_request(f"continue key is not valid: {error}") from None
        rest = [obj for obj in objects if start is None or _list_key(obj) > start]
        items = rest[:limit] if limit > 0 else rest
        more = len(rest) - len(items)
        selected = bool(params.get("labelSelector") or params.get("fieldSelector"))
        next_token = None
        if more > 0:
            next_token = base64.urlsafe_b64encode(json.dumps(
                {"rv": rv, "start": list(_list_key(items[-1]))}).encode()).decode().rstrip("=")
        return cls(items, rv, next_token, more if more > 0 and not selected else None)

    def metadata(self) -> JsonObject:
        metadata: JsonObject = {"resourceVersion": str(self.resource_version)}
        if self.continue_token:
            metadata["continue"] = self.continue_token
        if self.remaining is not None:
            metadata["remainingItemCount"] = self.remaining
        return metadata


def _list_key(obj: JsonObject) -> tuple[str, str]:
    return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
