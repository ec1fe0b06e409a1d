"""API scenarios the operator depends on, each written once and run against both API servers.

A scenario takes an ``Api`` and a fresh namespace and returns what it observed (statuses,
reasons, masked bodies); ``test_fidelity`` requires the same observation from the embedded
server as from the real one. Setup steps that must succeed say so with ``expect=``; the
observation is what the operator would act on.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

from controller.api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from tests.fidelity.api import JSON_PATCH, MERGE, STRATEGIC, Api, Reply, masked

Json = Any
Scenario = Callable[[Api, str], Json]
SCENARIOS: dict[str, Scenario] = {}


def scenario(function: Scenario) -> Scenario:
    SCENARIOS[function.__name__] = function
    return function


def _deployment(name: str, **template: Json) -> Json:
    container = {"name": "vllm", "image": "vllm/vllm-openai:v0.29.0", **template.pop("container", {})}
    containers = template.pop("containers", [container])
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers, **template}}},
    }


def _configmap(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> Json:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": data or {"k": "v"}}


def _pool(name: str) -> Json:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": name},
            "spec": {"model": {"name": "m"}, "replicas": {"min": 1, "max": 2}}}


def _deployments(ns: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments"


def _configmaps(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}/configmaps"


def _pools(ns: str) -> str:
    return f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{ns}/{PLURAL}"


def _status_shape(reply_body: Json) -> Json:
    """What a client reads from an error: kind, status, reason, code, the details' name and kind."""
    if not isinstance(reply_body, dict):
        return reply_body
    details = reply_body.get("details") or {}
    return {k: reply_body.get(k) for k in ("kind", "apiVersion", "status", "reason", "code")} | {
        "details": {k: details.get(k) for k in ("name", "kind", "group") if k in details}}


# --- create, read, errors ----------------------------------------------------------------------


@scenario
def create_and_read(api: Api, ns: str) -> Json:
    created = api.post(_deployments(ns), _deployment("web"))
    read = api.get(f"{_deployments(ns)}/web")
    again = api.post(_deployments(ns), _deployment("web"))
    missing = api.get(f"{_deployments(ns)}/nothing")
    metadata = created.body["metadata"]
    return {
        "created": created.status, "read": read.status,
        "metadata": sorted(k for k in metadata if k != "managedFields"),
        "generation": metadata.get("generation"),
        "same_object": read.body["metadata"]["uid"] == metadata["uid"],
        "again": (again.status, _status_shape(again.body)),
        "missing": (missing.status, _status_shape(missing.body)),
    }


@scenario
def invalid_objects_are_refused_with_422(api: Api, ns: str) -> Json:
    no_selector = _deployment("web")
    del no_selector["spec"]["selector"]
    bad_name = _configmap("Not_A_Name")
    replies = [api.post(_deployments(ns), no_selector), api.post(_configmaps(ns), bad_name)]
    return [(r.status, _status_shape(r.body)["reason"]) for r in replies]


# --- the kinds of patches ------------------------------------------------------------------------


@scenario
def merge_json_and_strategic_patches(api: Api, ns: str) -> Json:
    path = f"{_deployments(ns)}/web"
    api.post(_deployments(ns), _deployment("web", container={"env": [{"name": "A", "value": "1"}]}), expect=201)
    merge = api.patch(path, {"metadata": {"labels": {"tier": "gpu", "app": None}}, "spec": {"replicas": 2}})
    json_patch = api.patch(path, [{"op": "replace", "path": "/spec/replicas", "value": 3},
                                  {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}],
                           content_type=JSON_PATCH)
    failing_test = api.patch(path, [{"op": "test", "path": "/spec/replicas", "value": 9}], content_type=JSON_PATCH)
    # Strategic merge: containers merge by name, env by name; a merge patch would replace the list.
    strategic = api.patch(path, {"spec": {"template": {"spec": {"containers": [
        {"name": "vllm", "env": [{"name": "B", "value": "2"}]}]}}}}, content_type=STRATEGIC)
    delete_directive = api.patch(path, {"spec": {"template": {"spec": {"containers": [
        {"name": "vllm", "env": [{"name": "A", "$patch": "delete"}]}]}}}}, content_type=STRATEGIC)
    replaced = api.patch(path, {"spec": {"template": {"spec": {"containers": [
        {"name": "other", "image": "busybox"}]}}}}, content_type=MERGE)
    return {
        "merge": (merge.status, merge.body["metadata"].get("labels"), merge.body["spec"]["replicas"]),
        "json": (json_patch.status, json_patch.body["spec"]["replicas"], json_patch.body["metadata"].get(
            "annotations")),
        "failing_test": (failing_test.status, _status_shape(failing_test.body)["reason"]),
        "strategic": (strategic.status, strategic.body["spec"]["template"]["spec"]["containers"][0]["env"],
                      strategic.body["spec"]["template"]["spec"]["containers"][0]["image"]),
        "delete_directive": delete_directive.body["spec"]["template"]["spec"]["containers"][0].get("env"),
        "merge_replaces_lists": [c["name"] for c in replaced.body["spec"]["template"]["spec"]["containers"]],
        "generation": replaced.body["metadata"]["generation"],
    }


@scenario
def a_patch_that_changes_nothing_writes_nothing(api: Api, ns: str) -> Json:
    path = f"{_configmaps(ns)}/c"
    created = api.post(_configmaps(ns), _configmap("c"), expect=201)
    same = api.patch(path, {"data": {"k": "v"}})
    return {"same_resource_version": same.body["metadata"]["resourceVersion"] == created.body["metadata"][
        "resourceVersion"]}


# --- custom resources: status subresource, generation -------------------------------------------


@scenario
def status_subresource_is_separate(api: Api, ns: str) -> Json:
    path = f"{_pools(ns)}/qwen"
    created = api.post(_pools(ns), _pool("qwen"), expect=201)
    status_via_main = api.patch(path, {"status": {"observedGeneration": 7}})
    spec_via_status = api.patch(f"{path}/status", {"spec": {"replicas": {"max": 5}},
                                                    "status": {"observedGeneration": 1}})
    spec_change = api.patch(path, {"spec": {"replicas": {"max": 3}}})
    final = api.get(path).body
    return {
        "created_generation": created.body["metadata"]["generation"],
        "status_via_main": (status_via_main.status, status_via_main.body.get("status"),
                            status_via_main.body["metadata"]["generation"]),
        "spec_via_status": (spec_via_status.status, spec_via_status.body["spec"]["replicas"]["max"],
                            spec_via_status.body["status"], spec_via_status.body["metadata"]["generation"]),
        "spec_change_generation": spec_change.body["metadata"]["generation"],
        "final": (final["spec"]["replicas"]["max"], final["status"], final["metadata"]["generation"]),
    }


@scenario
def custom_resources_are_defaulted_and_pruned(api: Api, ns: str) -> Json:
    body = _pool("qwen")
    body["spec"]["unknownField"] = "dropped"
    created = api.post(_pools(ns), body)
    spec = created.body["spec"]
    return {"status": created.status, "unknown_kept": "unknownField" in spec,
            "defaults": {section: sorted(spec.get(section, {})) for section in ("scaling", "interruption")}}


@scenario
def custom_resource_cel_rules_are_enforced(api: Api, ns: str) -> Json:
    body = _pool("qwen")
    body["spec"]["replicas"] = {"min": 3, "max": 2}
    refused = api.post(_pools(ns), body)
    return (refused.status, _status_shape(refused.body)["reason"])


# --- selectors ----------------------------------------------------------------------------------


@scenario
def label_and_field_selectors(api: Api, ns: str) -> Json:
    for name, labels in (("a", {"pool": "x", "tier": "gpu"}), ("b", {"pool": "y"}), ("c", {})):
        api.post(_configmaps(ns), _configmap(name, labels), expect=201)

    def names(**query: str) -> Json:
        reply = api.get(_configmaps(ns), query=query)
        if reply.status != 200:
            return (reply.status, _status_shape(reply.body)["reason"])
        return sorted(item["metadata"]["name"] for item in reply.body["items"]
                      if item["metadata"]["name"] in ("a", "b", "c"))

    return {
        selector: names(labelSelector=selector)
        for selector in ("pool=x", "pool!=x", "pool in (x,y)", "pool notin (x)", "tier", "!tier", "pool=x,tier=gpu",
                         "pool==y", "bad selector!!")
    } | {
        "field name": names(fieldSelector="metadata.name=b"),
        "field not name": names(fieldSelector="metadata.name!=b"),
        "field namespace": names(fieldSelector=f"metadata.namespace={ns}"),
        "field unknown": names(fieldSelector="data.k=v"),
    }


# --- paging -------------------------------------------------------------------------------------


@scenario
def lists_come_in_pages(api: Api, ns: str) -> Json:
    # Secrets: no controller adds any to a new namespace (ConfigMaps get kube-root-ca.crt).
    secrets = f"/api/v1/namespaces/{ns}/secrets"
    for index in range(7):
        api.post(secrets, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{index}"},
                           "stringData": {"k": "v"}}, expect=201)
    first = api.get(secrets, query={"limit": "3"})
    pages, names = [first], [i["metadata"]["name"] for i in first.body["items"]]
    while pages[-1].body["metadata"].get("continue"):
        page = api.get(secrets, query={"limit": "3", "continue": pages[-1].body["metadata"]["continue"]})
        pages.append(page)
        names += [i["metadata"]["name"] for i in page.body["items"]]
    bad = api.get(secrets, query={"limit": "3", "continue": base64.b64encode(b"not a token").decode()})
    return {
        "page_sizes": [len(p.body["items"]) for p in pages],
        "remaining": [p.body["metadata"].get("remainingItemCount") for p in pages],
        "names": names,
        "bad_token": (bad.status, _status_shape(bad.body)["reason"]),
    }


# --- defaulting ---------------------------------------------------------------------------------


@scenario
def deployment_defaults(api: Api, ns: str) -> Json:
    probe = {"httpGet": {"path": "/health", "port": 8000}}
    created = api.post(_deployments(ns), _deployment("web", container={
        "ports": [{"containerPort": 8000}], "readinessProbe": probe, "env": [{"name": "E", "value": ""}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}}}), expect=201)
    return masked(created.body["spec"])


@scenario
def service_defaults(api: Api, ns: str) -> Json:
    created = api.post(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        expect=201)
    spec = masked(created.body["spec"])
    return spec


QUANTITIES = ("0.5", "1024Mi", "1.5Gi", "1000m", "2Gi", "12000", "1.5e3", "1E3", "2e4", "1e-7", "1.2345m",
              "0.1Mi", "1.5Ki", "2048", "1.000", "0.0", "+1", "1e0", "8E", "999Mi", "0.0000000001", 4, 2.5)


@scenario
def quantities_are_stored_canonically(api: Api, ns: str) -> Json:
    containers = [{"name": f"c{i}", "image": "busybox", "resources": {"requests": {"memory": value}}}
                  for i, value in enumerate(QUANTITIES)]
    created = api.post(_deployments(ns), _deployment("web", containers=containers), expect=201)
    stored = [c["resources"]["requests"]["memory"] for c in created.body["spec"]["template"]["spec"]["containers"]]
    invalid = api.post(_deployments(ns), _deployment("bad", container={"resources": {"requests": {"cpu": "abc"}}}))
    return {"stored": dict(zip(map(str, QUANTITIES), stored, strict=True)),
            "invalid": (invalid.status, _status_shape(invalid.body)["reason"])}


@scenario
def empty_strings_of_omitempty_fields_are_dropped(api: Api, ns: str) -> Json:
    created = api.post(_deployments(ns), _deployment("web", container={"env": [{"name": "E", "value": ""}]}),
                       expect=201)
    return created.body["spec"]["template"]["spec"]["containers"][0]["env"]


# --- concurrency --------------------------------------------------------------------------------


@scenario
def stale_writes_conflict(api: Api, ns: str) -> Json:
    path = f"{_configmaps(ns)}/c"
    created = api.post(_configmaps(ns), _configmap("c"), expect=201)
    api.patch(path, {"data": {"k": "v2"}}, expect=200)
    stale_put = api.put(path, {**created.body, "data": {"k": "v3"}})
    stale_patch = api.patch(path, {"metadata": {"resourceVersion": created.body["metadata"]["resourceVersion"]},
                                   "data": {"k": "v4"}})
    unconditional = copy.deepcopy(created.body)
    unconditional["metadata"].pop("resourceVersion")
    unconditional["data"] = {"k": "v5"}
    put_without_version = api.put(path, unconditional)
    return {
        "stale_put": (stale_put.status, _status_shape(stale_put.body)["reason"]),
        "stale_patch": (stale_patch.status, _status_shape(stale_patch.body)["reason"]),
        "put_without_version": (put_without_version.status, (put_without_version.body.get("data") or {}).get("k")),
    }


# --- Leases (the operator's leader election) ------------------------------------------------------


def _leases(ns: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def _lease(name: str, **spec: Json) -> Json:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec}


def _error(reply: Reply) -> Json:
    """What an error says: status, reason, message and the causes' fields and messages."""
    body = reply.body if isinstance(reply.body, dict) else {}
    causes = [(c.get("field"), c.get("message")) for c in (body.get("details") or {}).get("causes") or []]
    return (reply.status, body.get("reason"), body.get("message"), causes)


@scenario
def leases_store_micro_times_and_refuse_stale_updates(api: Api, ns: str) -> Json:
    """What the elector relies on: MicroTimes read back in UTC with six digits, 409 for a stale update."""
    path = f"{_leases(ns)}/poolpilot"
    created = api.post(_leases(ns), _lease("poolpilot", holderIdentity="a", leaseDurationSeconds=10,
                                           acquireTime="2026-12-03T12:00:00.000000Z",
                                           renewTime="2026-12-03T14:00:00.123456+02:00", leaseTransitions=0))
    read = api.get(path)
    listed = api.get(_leases(ns), expect=200)
    renewed = api.put(path, {**read.body, "spec": {**read.body["spec"], "renewTime": "2026-12-03T12:00:02.500000Z"}})
    stale = api.put(path, {**read.body, "spec": {**read.body["spec"], "holderIdentity": "b"}})
    unconditional = copy.deepcopy(read.body)
    unconditional["metadata"].pop("resourceVersion")
    without_version = api.put(path, unconditional)
    patched = api.patch(path, {"spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})
    events = api.watch(path.rsplit("/", 1)[0], {"resourceVersion": created.body["metadata"]["resourceVersion"],
                                                "fieldSelector": "metadata.name=poolpilot"}, seconds=1)
    deleted = api.delete(path)
    return {
        "created": (created.status, created.body.get("spec")), "read": read.body.get("spec"),
        "listed": [item["metadata"]["name"] for item in listed.body["items"]],
        "renewed": (renewed.status, renewed.body.get("spec", {}).get("renewTime"),
                    renewed.body["metadata"]["resourceVersion"] != read.body["metadata"]["resourceVersion"]),
        "stale": _error(stale), "without_version": _error(without_version),
        "patched": (patched.status, patched.body.get("spec")),
        "events": [(e["type"], e["object"]["spec"].get("holderIdentity")) for e in events],
        "deleted": deleted.status, "gone": api.get(path).status,
    }


@scenario
def leases_are_decoded_and_validated(api: Api, ns: str) -> Json:
    """MicroTime's one layout (no fraction, three or nine digits refused), Go's types, ValidateLeaseSpec."""
    times = ["2026-12-03T12:00:00Z", "2026-12-03T12:00:00.123Z", "2026-12-03T12:00:00.123456789Z",
             "2026-12-03 12:00:00.123456Z", "2026-13-03T12:00:00.123456Z", "2026-02-30T12:00:00.123456Z",
             "2026-12-03T12:00:00.123456+0200", "2026-12-03T12:00:00.123456Zabc", "", "soon", 5]
    bad_times = {str(t): _error(api.post(_leases(ns), _lease("t", renewTime=t))) for t in times}
    bad_types = [_error(api.post(_leases(ns), _lease("t", **{field: value}))) for field, value in (
        ("leaseDurationSeconds", "10"), ("leaseDurationSeconds", 1.5), ("leaseTransitions", 3_000_000_000),
        ("holderIdentity", 7), ("leaseTransitions", True))]
    invalid = api.post(_leases(ns), _lease("t", leaseDurationSeconds=0, leaseTransitions=-1))
    # strategy and preferredHolder: the CoordinatedLeaderElection gate is off, so they are dropped, as
    # fields no Lease has are.
    dropped = api.post(_leases(ns), {**_lease("d", holderIdentity="a", strategy="Bad", preferredHolder="b",
                                              unknown=1), "status": {"x": 1}})
    bare = api.post(_leases(ns), {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "e"}})
    put_creates = api.put(f"{_leases(ns)}/p", {**_lease("p", holderIdentity="a"),
                                               "metadata": {"name": "p", "resourceVersion": "5"}})
    bad_patch = api.patch(f"{_leases(ns)}/p", {"spec": {"renewTime": "2026-12-03T12:00:00Z"}})
    invalid_patch = api.patch(f"{_leases(ns)}/p", {"spec": {"leaseDurationSeconds": -1}})
    return {"bad_times": bad_times, "bad_types": bad_types, "invalid": _error(invalid),
            "dropped": (dropped.status, dropped.body.get("spec"), "status" in dropped.body),
            "bare": (bare.status, bare.body.get("spec")), "put_creates": (put_creates.status, put_creates.body.get(
                "spec")), "bad_patch": (bad_patch.status, bad_patch.body.get("reason"), "cannot parse" in str(
                    bad_patch.body.get("message"))), "invalid_patch": _error(invalid_patch)}


# --- admission ---------------------------------------------------------------------------------


@scenario
def a_quota_on_object_counts_refuses_one_more_with_403(api: Api, ns: str) -> Json:
    api.post(f"/api/v1/namespaces/{ns}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "two-deployments"},
        "spec": {"hard": {"count/deployments.apps": "2"}}}, expect=201)
    # The real server counts through its quota controller: wait until the quota shows its usage.
    api.eventually(lambda: api.get(f"/api/v1/namespaces/{ns}/resourcequotas/two-deployments").body,
                   lambda q: "used" in q.get("status", {}))
    first = api.post(_deployments(ns), _deployment("one")).status
    second = api.post(_deployments(ns), _deployment("two")).status
    refused = api.post(_deployments(ns), _deployment("three"))
    configmap = api.post(_configmaps(ns), _configmap("unlimited")).status
    return {"first": first, "second": second, "third": refused.status, "reason": refused.reason,
            "quota_named": "exceeded quota: two-deployments" in refused.body.get("message", ""),
            "other_kinds": configmap}


# --- ownerReferences and garbage collection -----------------------------------------------------


def _owned(owner: Json, name: str) -> Json:
    body = _configmap(name)
    body["metadata"]["ownerReferences"] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    return body


@scenario
def owner_references_and_background_gc(api: Api, ns: str) -> Json:
    owner = api.post(_configmaps(ns), _configmap("owner"), expect=201).body
    api.post(_configmaps(ns), _owned(owner, "dependent"), expect=201)
    deleted = api.delete(f"{_configmaps(ns)}/owner")
    gone = api.eventually(lambda: api.get(f"{_configmaps(ns)}/dependent").status, lambda s: s == 404)
    return {"delete": deleted.status, "dependent_after": gone}


@scenario
def orphan_propagation_keeps_dependents(api: Api, ns: str) -> Json:
    owner = api.post(_configmaps(ns), _configmap("owner"), expect=201).body
    api.post(_configmaps(ns), _owned(owner, "dependent"), expect=201)
    api.delete(f"{_configmaps(ns)}/owner", {"kind": "DeleteOptions", "apiVersion": "v1",
                                             "propagationPolicy": "Orphan"})
    api.eventually(lambda: api.get(f"{_configmaps(ns)}/owner").status, lambda s: s == 404)
    dependent = api.eventually(lambda: api.get(f"{_configmaps(ns)}/dependent"),
                               lambda r: r.status == 200 and not r.body["metadata"].get("ownerReferences"))
    return {"dependent": dependent.status, "owner_references": dependent.body["metadata"].get("ownerReferences")}


@scenario
def foreground_deletion_waits_for_dependents(api: Api, ns: str) -> Json:
    owner = api.post(_configmaps(ns), _configmap("owner"), expect=201).body
    blocker = _owned(owner, "dependent")
    blocker["metadata"]["finalizers"] = ["poolpilot.io/test"]  # holds the dependent, and so the owner
    api.post(_configmaps(ns), blocker, expect=201)
    api.delete(f"{_configmaps(ns)}/owner", {"kind": "DeleteOptions", "apiVersion": "v1",
                                             "propagationPolicy": "Foreground"})
    waiting = api.get(f"{_configmaps(ns)}/owner")
    api.patch(f"{_configmaps(ns)}/dependent", {"metadata": {"finalizers": None}})
    owner_gone = api.eventually(lambda: api.get(f"{_configmaps(ns)}/owner").status, lambda s: s == 404)
    return {"owner_while_waiting": (waiting.status, waiting.body["metadata"].get("finalizers"),
                                    "deletionTimestamp" in waiting.body["metadata"]),
            "owner_after": owner_gone}


# --- graceful deletion of pods ------------------------------------------------------------------


@scenario
def scheduled_pods_are_deleted_gracefully(api: Api, ns: str) -> Json:
    pods = f"/api/v1/namespaces/{ns}/pods"
    pod: Json = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           # Bound to a node no kubelet serves: only a force delete removes it.
           "spec": {"nodeName": "nowhere", "terminationGracePeriodSeconds": 45,
                    "containers": [{"name": "c", "image": "busybox"}]}}
    api.post(pods, pod, expect=201)
    deleted = api.delete(f"{pods}/p")
    terminating = api.get(f"{pods}/p")
    forced = api.delete(f"{pods}/p", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    # No node matches its selector: the real scheduler cannot bind it between the create and the delete.
    unscheduled = {**pod, "metadata": {"name": "q"},
                   "spec": {**pod["spec"], "nodeSelector": {"poolpilot.io/fidelity": "no-such-node"}}}
    del unscheduled["spec"]["nodeName"]
    api.post(pods, unscheduled, expect=201)
    api.delete(f"{pods}/q")
    return {
        "delete": deleted.status,
        "terminating": (terminating.status, "deletionTimestamp" in terminating.body["metadata"],
                        terminating.body["metadata"].get("deletionGracePeriodSeconds")),
        "forced": (forced.status, api.get(f"{pods}/p").status),
        "unscheduled_gone_at_once": api.get(f"{pods}/q").status,
    }


# --- watches ------------------------------------------------------------------------------------


@scenario
def watch_replays_changes_after_a_resource_version(api: Api, ns: str) -> Json:
    start = api.get(_configmaps(ns), expect=200).body["metadata"]["resourceVersion"]
    api.post(_configmaps(ns), _configmap("w", {"pool": "x"}), expect=201)
    api.patch(f"{_configmaps(ns)}/w", {"data": {"k": "v2"}}, expect=200)
    api.patch(f"{_configmaps(ns)}/w", {"metadata": {"labels": {"pool": "y"}}}, expect=200)
    api.delete(f"{_configmaps(ns)}/w", expect=200)
    everything = api.watch(_configmaps(ns), {"resourceVersion": start})
    selected = api.watch(_configmaps(ns), {"resourceVersion": start, "labelSelector": "pool=x"})

    def shape(events: Json) -> Json:
        return [(e["type"], e["object"]["metadata"]["name"], e["object"].get("data", {}).get("k"))
                for e in events if e["object"]["metadata"].get("name") == "w"]

    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in everything]
    return {"all": shape(everything), "selected": shape(selected), "increasing": versions == sorted(versions)}


@scenario
def a_watch_ends_when_the_server_says(api: Api, ns: str) -> Json:
    secrets = f"/api/v1/namespaces/{ns}/secrets"  # nothing else writes Secrets in a new namespace
    listing = api.get(secrets, expect=200).body
    events = api.watch(secrets, {"resourceVersion": listing["metadata"]["resourceVersion"]}, seconds=1)
    fractional = api.get(secrets, query={"watch": "1", "timeoutSeconds": "1.5"})
    bad_limit = api.get(secrets, query={"limit": "ten"})
    return {"events": [e["type"] for e in events], "list_kind": listing["kind"], "api_version": listing[
        "apiVersion"], "fractional_timeout": (fractional.status, _status_shape(fractional.body)["reason"]),
        "bad_limit": (bad_limit.status, _status_shape(bad_limit.body)["reason"])}


# --- events -------------------------------------------------------------------------------------


@scenario
def core_v1_events_for_a_custom_resource(api: Api, ns: str) -> Json:
    pool = api.post(_pools(ns), _pool("qwen"), expect=201).body
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "qwen.1"},
             "involvedObject": {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": "qwen",
                                "namespace": ns, "uid": pool["metadata"]["uid"]},
             "reason": "Created", "message": "m", "type": "Normal", "source": {"component": "poolpilot"},
             "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1}
    created = api.post(f"/api/v1/namespaces/{ns}/events", event)
    bad = api.post(f"/api/v1/namespaces/{ns}/events", {**event, "metadata": {"name": "qwen.2"}, "type": "Bad"})
    listed = api.get(f"/api/v1/namespaces/{ns}/events",
                     query={"fieldSelector": f"involvedObject.name=qwen,involvedObject.kind={KIND}"})
    return {"created": created.status, "bad_type": (bad.status, _status_shape(bad.body)["reason"]),
            "listed": [e["reason"] for e in listed.body.get("items", [])]}


def describe(observation: Json) -> str:
    return json.dumps(observation, indent=1, sort_keys=True, default=str)


# --- CRDs in the Kubernetes project's groups ------------------------------------------------------


@scenario
def crds_in_protected_groups_need_the_api_approval_annotation(api: Api, ns: str) -> Json:
    """A *.k8s.io group (the Gateway API's is one) without ``api-approved.kubernetes.io`` is refused."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    group = f"{ns}.example.k8s.io"  # unique per run: CRDs are cluster-wide
    crd: Json = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": f"widgets.{group}"},
                 "spec": {"group": group, "scope": "Namespaced",
                          "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                          "versions": [{"name": "v1", "served": True, "storage": True,
                                        "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    missing = api.post(crds, crd)
    crd["metadata"]["annotations"] = {"api-approved.kubernetes.io": "not a URL"}
    invalid = api.post(crds, crd)
    crd["metadata"]["annotations"] = {"api-approved.kubernetes.io": "unapproved, a test"}
    approved = api.post(crds, crd)
    api.delete(f"{crds}/widgets.{group}")
    return {"missing": (missing.status, "api-approved.kubernetes.io" in str(missing.body)),
            "invalid": invalid.status, "approved": approved.status}
