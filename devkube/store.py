"""
The object store: what a Kubernetes API server does on reads and writes, in-process.

Objects live in kmock's ``ObjectsArray`` (``emulator.objects``, with their history of
versions), keyed by the resource of the *storage* version. All operations are synchronous
and run on the event loop's thread, so they are atomic without locks; watchers are fed
through per-watch queues.

Lists, quotas, the garbage collector and namespace deletion find objects through indexes (by
resource and namespace, by namespace, by owner uid) that every write keeps, as the real server's
watch cache and the garbage collector's graph do; in-process readers (the stand-in controllers)
read the stored objects without copies (``list_stored``, ``find_stored``, ``list_dependents_stored``).

Semantics, as on a real server:

* ``metadata.uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter, bumped by
  every write), ``generation`` (1 on create; +1 when anything outside ``metadata`` and
  ``status`` changes, also when a deletion with finalizers starts); ``generateName``.
* A write that changes nothing is a no-op: no new resourceVersion, no watch event.
* Status subresource: writes to ``/status`` change only ``.status``; writes to the object
  ignore ``.status``; create drops ``.status``.
* Optimistic concurrency: a ``metadata.resourceVersion`` in a PUT or PATCH body must match;
  a PUT of a custom resource must carry one.
* Graceful deletion of Pods (pkg/registry/core/pod/strategy.go ``CheckGracefulDelete``, apiserver's
  ``BeforeDelete`` in pkg/registry/rest/delete.go): a DELETE of a scheduled, non-terminal pod sets
  ``deletionTimestamp`` to now plus the grace (``gracePeriodSeconds``, else the pod's
  ``terminationGracePeriodSeconds``, else 30) and ``deletionGracePeriodSeconds``, bumps
  ``generation`` and keeps the pod, until the node's kubelet (:mod:`.kubelet`) deletes it with grace
  0. A later DELETE may shorten the grace, never lengthen it; grace 0, an unscheduled (no
  ``nodeName``) or a terminal pod goes at once.
* Deletion: finalizers block it (``deletionTimestamp`` is set; new finalizers are refused);
  once released, dependents are garbage-collected by ``ownerReferences`` (recursively);
  deleting a Namespace deletes its content and keeps it ``Terminating`` until it is empty;
  deleting a CRD deletes its custom resources (ignoring their finalizers, unlike a real
  server) and undeclares them.

Differences from a real server (cover them in e2e tests on a real cluster):

* No admission, no RBAC, no validation of built-in kinds (only names), except Leases, decoded and
  validated as kube-apiserver does (:mod:`.leases`; a PUT creates a missing one). Custom resources are pruned,
  defaulted and validated against their CRD's schema and CEL rules (``crd_schema``), unless
  ``validate_custom_resources`` is off (a cluster with an older CRD).
* ``generation`` is tracked for every kind; a real server has none for ConfigMaps, Secrets,
  Namespaces and other kinds without a spec, and counts only ``spec`` changes for some kinds.
* Server-side defaults only for Deployments, Services and Namespaces (see :mod:`.defaults`).
* No ``managedFields``; server-side apply (``application/apply-patch+yaml``) is refused.
* Garbage collection is immediate and synchronous, ``propagationPolicy`` is ignored
  (always background), and owner references to deleted owners are not removed from
  dependents that still have another live owner.
* Graceful deletion only for Pods (see ``pod_grace_period``); every other kind goes at once, whatever
  ``gracePeriodSeconds`` says (on a real server only Pods use it, too).
* All served versions of a CRD share one storage without conversion (only ``apiVersion``
  is rewritten). Core and ``events.k8s.io`` Events are separate stores.
* Watch history is kept for the last ``history_size`` events; older resourceVersions
  get ``410 Expired``, as after a real server's compaction.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import datetime
import functools
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kmock

from devkube import crd_schema, crds, defaults, errors, leases, patching, quota, selectors, tables
from devkube.resources import Resource, lookup, resolve

ObjectKey = tuple[kmock.resource, str | None, str]
Listener = Callable[["WatchEvent"], None]

NAMESPACES = kmock.resource("", "v1", "namespaces")
PODS = kmock.resource("", "v1", "pods")
# What the API defaults a pod's terminationGracePeriodSeconds to (pkg/apis/core/v1/defaults.go).
DEFAULT_POD_GRACE_SECONDS = 30
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
QUOTAS = kmock.resource("", "v1", "resourcequotas")
LEASES = kmock.resource("coordination.k8s.io", "v1", "leases")

# Fields of metadata that only the server sets; clients' values are ignored on updates.
_SERVER_OWNED_METADATA = (
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATED_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the real server: no vowels, no 0/1/3


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    resource: kmock.resource  # the storage key: group, storage version, plural
    object: dict[str, Any]
    old: dict[str, Any] | None  # the previous state for MODIFIED (to re-evaluate selectors)
    rv: int


class Subscription:
    """A live feed of all watch events; ``None`` means the store is closing."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    def __init__(
        self, objects: kmock.ObjectsArray, resources: kmock.ResourcesArray, *, history_size: int
    ) -> None:
        self.objects = objects
        self.resources = resources
        self.crds = crds.CrdRegistry(resources)
        # Prune, default and validate custom resources (schema and CEL) as a real server does;
        # off, the server is like one with an older CRD that has no such rules.
        self.validate_custom_resources = True
        self._rv = 0
        self._uids: dict[str, ObjectKey] = {}
        # Indexes of the live objects, kept by _commit (the only writer): every lookup a list, a quota,
        # the garbage collector, a namespace deletion or a stand-in controller makes is a dict access,
        # not a scan of the whole store (a fleet holds tens of thousands of objects).
        self._live_objects: dict[ObjectKey, dict[str, Any]] = {}
        self._by_resource: dict[kmock.resource, dict[ObjectKey, None]] = collections.defaultdict(dict)
        self._by_resource_namespace: dict[tuple[kmock.resource, str | None], dict[ObjectKey, None]] = (
            collections.defaultdict(dict)
        )
        self._by_namespace: dict[str, dict[ObjectKey, None]] = collections.defaultdict(dict)
        self._by_owner_uid: dict[str, dict[ObjectKey, None]] = collections.defaultdict(dict)
        self._history: collections.deque[WatchEvent] = collections.deque(maxlen=history_size)
        self._subscriptions: set[Subscription] = set()
        self.listeners: list[Listener] = []

    # --- resources -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def resolve(self, group: str, version: str, plural: str) -> Resource:
        resource = resolve(self.resources, group, version, plural)
        if resource is None:
            raise errors.unknown_resource()
        return resource

    def is_custom(self, resource: Resource) -> bool:
        return self.crds.storage_version(resource.group, resource.plural) is not None

    def storage_key(self, resource: Resource) -> kmock.resource:
        version = self.crds.storage_version(resource.group, resource.plural) or resource.version
        return kmock.resource(resource.group, version, resource.plural)

    # --- reads ------------------------------------------------------------------------------

    def find(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        stored = self._live(self._key(resource, namespace, name))
        return None if stored is None else self.present(resource, stored)

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        found = self.find(resource, namespace, name)
        if found is None:
            raise errors.not_found(resource, name)
        return found

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        labels: selectors.LabelSelector | None = None,
        fields: selectors.FieldSelector | None = None,
    ) -> list[dict[str, Any]]:
        found = self.list_stored(resource, namespace, labels, fields)
        return [self.present(resource, stored) for stored in found]

    def list_stored(
        self,
        resource: Resource,
        namespace: str | None = None,
        labels: selectors.LabelSelector | None = None,
        fields: selectors.FieldSelector | None = None,
    ) -> list[Mapping[str, Any]]:
        """The stored objects themselves, sorted as a list is: for in-process readers that only read
        (the stand-in controllers). Never modify them; a write goes through the store's operations."""
        storage_key = self.storage_key(resource)
        keys = (
            self._by_resource.get(storage_key, {})
            if namespace is None or not resource.namespaced
            else self._by_resource_namespace.get((storage_key, namespace), {})
        )
        return self._select(sorted(keys, key=lambda key: (key[1] or "", key[2])), labels, fields)

    def list_dependents_stored(self, resource: Resource, owner_uid: str) -> list[Mapping[str, Any]]:
        """The stored objects of a kind that name ``owner_uid`` in their ownerReferences, oldest first
        (read-only, see ``list_stored``): what a controller finds through its owner index."""
        storage_key = self.storage_key(resource)
        return self._select([key for key in self._by_owner_uid.get(owner_uid, {}) if key[0] == storage_key])

    def _select(
        self,
        keys: Iterable[ObjectKey],
        labels: selectors.LabelSelector | None = None,
        fields: selectors.FieldSelector | None = None,
    ) -> list[Mapping[str, Any]]:
        return [
            stored
            for key in keys
            if (stored := self._live_objects[key]) is not None
            if (labels is None or labels.matches(stored)) and (fields is None or fields.matches(stored))
        ]

    def find_stored(self, resource: Resource, namespace: str | None, name: str) -> Mapping[str, Any] | None:
        """The stored object itself, for in-process readers that only read (see ``list_stored``)."""
        return self._live(self._key(resource, namespace, name))

    def count(self, resource: Resource, namespace: str | None) -> int:
        return len(self._by_resource_namespace.get((self.storage_key(resource), namespace), {}))

    def _live(self, key: ObjectKey) -> dict[str, Any] | None:
        return self._live_objects.get(key)

    def _key(self, resource: Resource, namespace: str | None, name: str) -> ObjectKey:
        return (self.storage_key(resource), namespace if resource.namespaced else None, name)

    def present(self, resource: Resource, stored: Mapping[str, Any]) -> dict[str, Any]:
        # Deep copies: callers (HTTP rendering, tests) must never alias the stored state.
        obj = copy.deepcopy(dict(stored))
        obj["apiVersion"] = resource.api_version  # other served versions of a CRD share the storage
        return obj

    # --- creation ---------------------------------------------------------------------------

    def create(
        self, resource: Resource, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        obj = self._prepare_new(resource, namespace, body)
        name = obj["metadata"]["name"]
        key = self._key(resource, obj["metadata"].get("namespace"), name)
        if self._live(key) is not None:
            raise errors.already_exists(resource, name)
        self._check_namespace_accepts(resource, obj["metadata"].get("namespace"))
        self._check_quota(resource, obj["metadata"].get("namespace"))
        if resource.key == CRDS:
            self._validate_crd(obj)
            obj["status"] = crds.established_status(obj, now_utc())
        if resource.key == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        if resource.key == QUOTAS:
            obj["status"] = quota.initial_status(obj, functools.partial(self._count_in, obj["metadata"]["namespace"]))
        if dry_run:
            return self.present(resource, obj)
        return self.present(resource, self._commit(key, "ADDED", obj, old=None))

    def _count_in(self, namespace: str, spec: str) -> int | None:
        try:
            counted = lookup(self.resources, spec)
        except LookupError:
            return None
        return self.count(counted, namespace)

    def _check_quota(self, resource: Resource, namespace: str | None) -> None:
        if namespace is None or resource.key == QUOTAS:
            return
        quotas = self.list_objects(self.resolve("", "v1", "resourcequotas"), namespace)
        if quotas:
            quota.check_object_count(resource, quotas, lambda: self.count(resource, namespace))

    def _prepare_new(self, resource: Resource, namespace: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata", {}), Mapping):
            raise errors.bad_request("the body must be a JSON object with an object in metadata")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"] = self._storage_api_version(resource)
        obj["kind"] = resource.kind
        meta["name"] = self._new_name(resource, meta)
        self._set_namespace(resource, namespace, meta)
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = timestamp(now_utc())
        meta["generation"] = 1
        if resource.has_status:
            obj.pop("status", None)
        defaults.apply_defaults(resource.group, resource.plural, obj, previous=None)
        return self._admit_custom(resource, self._admit_builtin(resource, obj, patched=False))

    def _admit_custom(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """What apiextensions-apiserver does with a custom resource on create and update: prune unknown
        fields, apply the schema's defaults, validate the schema and the CEL rules (422 on a problem)."""
        schema = self.crds.schema(resource.group, resource.plural) if self.validate_custom_resources else None
        if schema is None:
            return obj
        admission = crd_schema.admit(schema, obj)
        if admission.problems:
            message = ", ".join(f"{p.path or '<root>'}: Invalid value: {p.message}" for p in admission.problems)
            raise errors.invalid(resource, obj["metadata"].get("name"), message)
        # Metadata is the API server's own; the schema governs the rest.
        return {**admission.obj, "metadata": obj["metadata"]}

    def _admit_builtin(self, resource: Resource, obj: dict[str, Any], *, patched: bool) -> dict[str, Any]:
        """Decode and validate the built-in kinds the emulator knows the Go types of (Leases, :mod:`.leases`).

        A body that does not decode is a 400 on a create or an update (the request's body is decoded
        first), and a 422 on a patch (the patched object is), as on kube-apiserver."""
        if resource.key != LEASES:
            return obj
        try:
            decoded = leases.decode_lease(obj)
        except leases.LeaseDecodeError as error:
            if patched:
                raise errors.invalid_patch(obj, str(error)) from None
            raise errors.bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                                     f"{resource.kind}: {error}") from None
        problems = leases.validate_lease(decoded)
        if problems:
            raise errors.invalid_fields(resource, decoded["metadata"].get("name"), problems)
        return decoded

    def creates_on_update(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Whether a PUT of this object creates it: it is missing, and its kind's registry strategy allows
        that (``AllowCreateOnUpdate``: Leases, pkg/registry/coordination/lease/strategy.go)."""
        return resource.key == LEASES and self._live(self._key(resource, namespace, name)) is None

    def _storage_api_version(self, resource: Resource) -> str:
        version = self.storage_key(resource).version
        return f"{resource.group}/{version}" if resource.group else str(version)

    def _new_name(self, resource: Resource, meta: Mapping[str, Any]) -> str:
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            suffix = "".join(secrets.choice(_GENERATED_SUFFIX_ALPHABET) for _ in range(5))
            name = f"{meta['generateName']}{suffix}"
        if not name:
            raise errors.invalid(
                resource, None, "metadata.name: Required value: name or generateName is required"
            )
        pattern = _LABEL_NAME_RE if resource.key == NAMESPACES else _NAME_RE
        if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
            raise errors.invalid(
                resource, str(name), f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 name"
            )
        return name

    def _set_namespace(self, resource: Resource, namespace: str | None, meta: dict[str, Any]) -> None:
        if not resource.namespaced:
            meta.pop("namespace", None)
            return
        body_namespace = meta.get("namespace")
        if namespace and body_namespace and body_namespace != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if not (namespace or body_namespace):
            raise errors.bad_request("a namespaced object must be created in a namespace")
        meta["namespace"] = namespace or body_namespace

    def _check_namespace_accepts(self, resource: Resource, namespace: str | None) -> None:
        if not resource.namespaced or namespace is None:
            return
        ns = self._live((NAMESPACES, None, namespace))
        if ns is None:
            raise errors.ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                f'{resource.plural} "" is forbidden: unable to create new content in '
                f"namespace {namespace} because it is being terminated"
            )

    # --- updates ----------------------------------------------------------------------------

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in patching.PATCH_TYPES:
            raise errors.unsupported_media_type(media_type)  # incl. server-side apply
        if media_type == patching.STRATEGIC_MERGE_PATCH and self.is_custom(resource):
            raise errors.unsupported_media_type(f"{media_type} is not supported for custom resources")

        def compute(current: dict[str, Any]) -> dict[str, Any]:
            try:
                return patching.apply_patch(media_type, current, patch)
            except (patching.PatchError, ValueError) as e:
                raise errors.invalid(resource, name, str(e)) from e

        return self._update(resource, namespace, name, compute, subresource=subresource, dry_run=dry_run,
                            patched=True)

    def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata", {}), Mapping):
            raise errors.bad_request("the body must be a JSON object with an object in metadata")
        body_name = body.get("metadata", {}).get("name")
        if body_name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        if subresource is None and self.creates_on_update(resource, namespace, name):
            return self.create(resource, namespace, {**body, "metadata": {**body.get("metadata", {}), "name": name}},
                               dry_run=dry_run)
        if self.is_custom(resource) and not body.get("metadata", {}).get("resourceVersion"):
            # Custom resources allow no unconditional updates (built-in kinds mostly do).
            message = "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            raise errors.invalid(resource, name, message)
        if resource.key == LEASES and not body.get("metadata", {}).get("resourceVersion") \
                and self._live(self._key(resource, namespace, name)) is not None:
            # AllowUnconditionalUpdate is false for Leases (pkg/registry/coordination/lease/strategy.go).
            problem = errors.FieldProblem("metadata.resourceVersion", "0", "must be specified for an update")
            raise errors.invalid_fields(resource, name, [problem], by_resource=True)
        return self._update(
            resource,
            namespace,
            name,
            lambda current: copy.deepcopy(dict(body)),
            subresource=subresource,
            dry_run=dry_run,
        )

    def write_status(
        self, resource: Resource, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> None:
        """An in-process status write (the fake controllers); no-op if nothing changes."""

        def compute(current: dict[str, Any]) -> dict[str, Any]:
            return {**current, "status": copy.deepcopy(dict(status))}

        self._update(
            resource, namespace, name, compute, subresource="status" if resource.has_status else None
        )

    def _update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        compute: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        subresource: str | None,
        dry_run: bool = False,
        patched: bool = False,
    ) -> dict[str, Any]:
        if subresource is not None and subresource not in resource.subresources:
            raise errors.not_found(resource, name)
        if subresource not in (None, "status"):
            raise errors.method_not_allowed(f"the subresource {subresource!r} is not served by this emulator")
        key = self._key(resource, namespace, name)
        current = self._live(key)
        if current is None:
            raise errors.not_found(resource, name)
        proposed = compute(copy.deepcopy(current))
        if not isinstance(proposed.get("metadata", {}), Mapping):
            raise errors.bad_request("metadata must be an object")
        expected_rv = (proposed.get("metadata") or {}).get("resourceVersion")
        if expected_rv and expected_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name)
        result = self._merge_update(resource, current, proposed, subresource, patched=patched)
        if result == current:
            return self.present(resource, current)  # a no-op: no new resourceVersion, no event
        if resource.key == CRDS and subresource is None:
            self._validate_crd(result)
        if dry_run:
            return self.present(resource, result)
        if (
            result["metadata"].get("deletionTimestamp")
            and current["metadata"].get("finalizers")
            and not result["metadata"].get("finalizers")
        ):
            # The last finalizer is gone: the object is deleted instead of updated (one DELETED event).
            return self.present(resource, self._remove(key, resource, result))
        return self.present(resource, self._commit(key, "MODIFIED", result, old=current))

    def _merge_update(
        self,
        resource: Resource,
        current: dict[str, Any],
        proposed: dict[str, Any],
        subresource: str | None,
        *,
        patched: bool = False,
    ) -> dict[str, Any]:
        if subresource == "status":
            # Everything but the status comes from the stored object, as on a real server.
            result = copy.deepcopy(current)
            _set_or_drop(result, "status", proposed.get("status"))
            return result
        result = copy.deepcopy(proposed)
        if resource.has_status:
            _set_or_drop(result, "status", current.get("status"))
        meta = result.setdefault("metadata", {})
        for field in _SERVER_OWNED_METADATA:
            _set_or_drop(meta, field, current["metadata"].get(field))
        meta.pop("managedFields", None)
        result["apiVersion"], result["kind"] = current["apiVersion"], current["kind"]
        defaults.apply_defaults(resource.group, resource.plural, result, previous=current)
        result = self._admit_custom(resource, self._admit_builtin(resource, result, patched=patched))
        self._check_finalizers(resource, current, result)
        if _spec_part(result) != _spec_part(current):
            meta["generation"] = current["metadata"].get("generation", 0) + 1
        return result

    def _check_finalizers(self, resource: Resource, current: dict[str, Any], result: dict[str, Any]) -> None:
        if not current["metadata"].get("deletionTimestamp"):
            return
        added = set(result["metadata"].get("finalizers") or []) - set(
            current["metadata"].get("finalizers") or []
        )
        if added:
            raise errors.invalid(
                resource,
                current["metadata"]["name"],
                f"metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                f"is being deleted, found new finalizers {sorted(added)!r}",
            )

    # --- deletion ---------------------------------------------------------------------------

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        preconditions: Mapping[str, Any] | None = None,
        grace_period_seconds: int | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        key = self._key(resource, namespace, name)
        current = self._live(key)
        if current is None:
            raise errors.not_found(resource, name)
        self.check_preconditions(resource, current, preconditions or {})
        if dry_run:
            return self.present(resource, current)
        if resource.key == PODS:
            grace = pod_grace_period(current, grace_period_seconds)
            if grace > 0:
                return self.present(resource, self._delete_gracefully(key, current, grace))
        return self.present(resource, self._delete_object(key, resource, current))

    def delete_collection(
        self,
        resource: Resource,
        namespace: str | None,
        labels: selectors.LabelSelector,
        fields: selectors.FieldSelector,
        *,
        grace_period_seconds: int | None = None,
    ) -> list[dict[str, Any]]:
        doomed = self.list_objects(resource, namespace, labels, fields)
        for obj in doomed:
            self.delete(
                resource,
                obj["metadata"].get("namespace"),
                obj["metadata"]["name"],
                grace_period_seconds=grace_period_seconds,
            )
        return doomed

    def _delete_gracefully(self, key: ObjectKey, current: dict[str, Any], grace: int) -> dict[str, Any]:
        """Start (or shorten) a pod's graceful deletion, as apiserver's BeforeDelete does."""
        meta = current["metadata"]
        marked = copy.deepcopy(current)
        if meta.get("deletionTimestamp"):
            previous = meta.get("deletionGracePeriodSeconds")
            requested_at = tables.parse_timestamp(meta["deletionTimestamp"])
            if previous is None or grace >= previous or requested_at is None:
                return current  # a grace can only get shorter; the deletion goes on as it was
            # Counted from the first request, as the real server does: the old timestamp less the old grace.
            deadline = requested_at - datetime.timedelta(seconds=previous) + datetime.timedelta(seconds=grace)
        else:
            deadline = now_utc() + datetime.timedelta(seconds=grace)
            # Controllers observe the start of a deletion through the generation, as on a real server.
            marked["metadata"]["generation"] = meta.get("generation", 0) + 1
        marked["metadata"]["deletionTimestamp"] = timestamp(deadline)
        marked["metadata"]["deletionGracePeriodSeconds"] = grace
        return self._commit(key, "MODIFIED", marked, old=current)

    def check_preconditions(
        self, resource: Resource, current: dict[str, Any], preconditions: Mapping[str, Any]
    ) -> None:
        for field in ("uid", "resourceVersion"):
            expected = preconditions.get(field)
            actual = current["metadata"].get(field)
            if expected and expected != actual:
                name = current["metadata"]["name"]
                message = (
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": Precondition failed: '
                    f"{field} in precondition: {expected}, {field} in object meta: {actual}"
                )
                raise errors.ApiError(409, "Conflict", message)

    def _delete_object(self, key: ObjectKey, resource: Resource, current: dict[str, Any]) -> dict[str, Any]:
        """Delete or start deleting (finalizers); returns the object's latest state."""
        if current["metadata"].get("deletionTimestamp"):
            if current["metadata"].get("finalizers") or self._is_nonempty_namespace(resource, current):
                return current  # already being deleted, waiting for the finalizers
            return self._remove(key, resource, current)  # a graceful deletion cut short (grace 0)
        if current["metadata"].get("finalizers") or self._is_nonempty_namespace(resource, current):
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = timestamp(now_utc())
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
            if resource.key == NAMESPACES:
                marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
            marked = self._commit(key, "MODIFIED", marked, old=current)
            if resource.key == NAMESPACES:
                self._delete_namespace_content(current["metadata"]["name"])
            return self._live(key) or marked
        return self._remove(key, resource, current)

    def _remove(self, key: ObjectKey, resource: Resource, last: dict[str, Any]) -> dict[str, Any]:
        """The final removal: the DELETED event, then what depends on the object."""
        removed = self._commit(key, "DELETED", last, old=self._live(key))
        self._collect_dependents(last["metadata"]["uid"])
        if resource.key == CRDS:
            self._undeclare_crd(last)
        self._release_terminating_namespace(last["metadata"].get("namespace"))
        return removed

    def _is_nonempty_namespace(self, resource: Resource, obj: Mapping[str, Any]) -> bool:
        if resource.key != NAMESPACES:
            return False
        return bool(self._by_namespace.get(obj["metadata"]["name"]))

    def _delete_namespace_content(self, namespace: str) -> None:
        for key in list(self._by_namespace.get(namespace, {})):
            stored = self._live(key)
            if stored is not None:  # a cascade of an earlier deletion may have taken it already
                self._delete_object(key, self._resource_of(key), stored)
        self._release_terminating_namespace(namespace)

    def _release_terminating_namespace(self, namespace: str | None) -> None:
        if namespace is None:
            return
        ns_key: ObjectKey = (NAMESPACES, None, namespace)
        ns = self._live(ns_key)
        if ns is None or not ns["metadata"].get("deletionTimestamp") or ns["metadata"].get("finalizers"):
            return
        if not self._by_namespace.get(namespace):
            self._remove(ns_key, self._resource_of(ns_key), ns)

    def _collect_dependents(self, owner_uid: str) -> None:
        for key in list(self._by_owner_uid.get(owner_uid, {})):
            current = self._live(key)
            if current is None:
                continue  # a cascade of an earlier deletion took it already
            if any(uid in self._uids for uid in _owner_uids(current)):
                continue  # another owner is still alive
            self._delete_object(key, self._resource_of(key), current)

    def _resource_of(self, key: ObjectKey) -> Resource:
        group, version, plural = key[0].group or "", key[0].version or "", key[0].plural or ""
        return self.resolve(group, version, plural)

    # --- test setup -------------------------------------------------------------------------

    def put(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite an object as given (status included), bypassing the API checks."""
        meta = body.get("metadata") or {}
        key = self._key(resource, meta.get("namespace"), meta.get("name", ""))
        current = self._live(key)
        obj = copy.deepcopy(dict(body))
        obj["apiVersion"], obj["kind"] = self._storage_api_version(resource), resource.kind
        new_meta = obj.setdefault("metadata", {})
        if current is None:
            new_meta.setdefault("uid", str(uuid.uuid4()))
            new_meta.setdefault("creationTimestamp", timestamp(now_utc()))
            new_meta.setdefault("generation", 1)
        else:
            for field in ("uid", "creationTimestamp"):
                new_meta.setdefault(field, current["metadata"].get(field))
            changed = _spec_part(obj) != _spec_part(current)
            new_meta.setdefault("generation", current["metadata"].get("generation", 0) + int(changed))
        new_meta.pop("resourceVersion", None)
        if resource.key == CRDS:
            self._validate_crd(obj)
        return self.present(
            resource, self._commit(key, "ADDED" if current is None else "MODIFIED", obj, old=current)
        )

    # --- CRDs -------------------------------------------------------------------------------

    def register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Declare the CRD's served versions as resources, replacing an older declaration."""
        self._validate_crd(crd)
        return self.crds.register(crd)

    def _validate_crd(self, crd: Mapping[str, Any]) -> None:
        try:
            crds.parse_crd(crd)
        except crds.CrdError as e:
            crd_resource = self.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            raise errors.invalid(crd_resource, (crd.get("metadata") or {}).get("name"), str(e)) from e

    def _undeclare_crd(self, crd: Mapping[str, Any]) -> None:
        """A deleted CRD takes its custom resources with it (without their finalizers, unlike a real one)."""
        name = str(crd["metadata"]["name"])
        for declared in self.crds.declared(name):
            for key in list(self._by_resource.get(declared, {})):
                stored = self._live(key)
                if stored is not None:
                    self._remove(key, self._resource_of(key), stored)
        self.crds.unregister(name)

    # --- events -----------------------------------------------------------------------------

    def _commit(
        self,
        key: ObjectKey,
        event_type: str,
        obj: dict[str, Any],
        *,
        old: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Store a new state (or the deletion) with the next resourceVersion; notify the watchers."""
        self._rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        if event_type == "DELETED":
            self.objects[key].delete()
            self._uids.pop(stored["metadata"].get("uid", ""), None)
        elif key in self.objects:
            self.objects[key].history.append(stored)
        else:
            self.objects[key] = stored
        if event_type != "DELETED":
            self._uids[stored["metadata"]["uid"]] = key
        self._reindex(key, self._live_objects.get(key), None if event_type == "DELETED" else stored)
        if key[0] == CRDS and event_type != "DELETED":
            self.register_crd(stored)  # before the event: watchers may look the new resource up at once
        event = WatchEvent(event_type, key[0], stored, old, self._rv)
        self._history.append(event)
        for subscription in self._subscriptions:
            subscription.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)
        return stored

    def _reindex(self, key: ObjectKey, old: Mapping[str, Any] | None, new: dict[str, Any] | None) -> None:
        resource, namespace, _ = key
        for uid in _owner_uids(old) - _owner_uids(new):
            _discard(self._by_owner_uid, uid, key)
        if new is None:
            self._live_objects.pop(key, None)
            _discard(self._by_resource, resource, key)
            _discard(self._by_resource_namespace, (resource, namespace), key)
            if namespace is not None:
                _discard(self._by_namespace, namespace, key)
            return
        self._live_objects[key] = new
        self._by_resource[resource][key] = None
        self._by_resource_namespace[(resource, namespace)][key] = None
        if namespace is not None:
            self._by_namespace[namespace][key] = None
        for uid in _owner_uids(new):
            self._by_owner_uid[uid][key] = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def events_since(self, rv: int) -> list[WatchEvent]:
        """Past events after a resourceVersion, for watches that resume; 410 if forgotten."""
        if rv >= self._rv:
            return []
        oldest_kept = self._history[0].rv if self._history else self._rv + 1
        if rv < oldest_kept - 1:
            raise errors.expired(f"too old resource version: {rv} ({oldest_kept - 1})")
        return [event for event in self._history if event.rv > rv]

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.queue.put_nowait(None)


def pod_grace_period(pod: Mapping[str, Any], requested: int | None) -> int:
    """The grace a pod deletion gets (pkg/registry/core/pod/strategy.go, CheckGracefulDelete): the
    request's, else the pod's terminationGracePeriodSeconds (defaulted to 30); 0 for a pod that was
    never scheduled or has terminated; a negative grace means 1."""
    spec = pod.get("spec") or {}
    if requested is not None:
        grace = int(requested)
    else:
        grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_SECONDS))
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    return 1 if grace < 0 else grace


def _owner_uids(obj: Mapping[str, Any] | None) -> set[str]:
    if obj is None:
        return set()
    return {str(ref.get("uid")) for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("uid")}


def _discard(index: dict[Any, dict[ObjectKey, None]], bucket: Any, key: ObjectKey) -> None:
    keys = index.get(bucket)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[bucket]


def _set_or_drop(container: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        container.pop(key, None)
    else:
        container[key] = copy.deepcopy(value)


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the generation tracks: everything outside metadata and status."""
    return {
        key: value for key, value in obj.items() if key not in ("metadata", "status", "apiVersion", "kind")
    }
