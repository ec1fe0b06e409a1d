"""The generated CRD: checked in, structural, documented, and agreeing with the pydantic models.

The API server and the operator validate a pool twice, from one source (``controller/api``): the
CRD's schema and CEL rules, and ``validate_pool``. These tests run the CRD side the way the API
server does (``devkube/crd_schema.py``: prune, default, schema, CEL) and check both sides
refuse the same objects with the same message, for a table of known-bad objects and for generated
ones.
"""

from __future__ import annotations

import copy
import difflib
import pathlib
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from controller.api.crd import generate_crd, render_crd_yaml
from controller.api.spec import API_GROUP, API_VERSION, KIND, MANAGED_VLLM_FLAGS, PLURAL, InferencePoolSpec
from controller.core.pool import SpecProblem, validate_pool
from devkube.crd_schema import (
    Admission,
    admit,
    openapi_schema,
    resolve_path,
    structural_problems,
)
from tests.support.crd_cases import BAD_OBJECTS, BASE_SPEC, BROKEN_SCHEMAS, GOOD_OBJECTS, merged

REPO = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "inferencepool.yaml"
CRD = generate_crd()
SCHEMA = openapi_schema(CRD)

Json = dict[str, Any]


def pool(name: str, spec: Mapping[str, Any]) -> Json:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "llm"},
        "spec": copy.deepcopy(dict(spec)),
    }


def describe(admission: Admission, parsed: InferencePoolSpec | list[SpecProblem]) -> str:
    crd = [str(problem) for problem in admission.problems] or "accepted"
    python = parsed if isinstance(parsed, list) else "accepted"
    return f"\n  CRD (defaults + schema + CEL): {crd}\n  validate_pool: {python}"


# --------------------------------------------------------------------------------- the file itself


def test_checked_in_crd_is_what_the_models_generate() -> None:
    expected = render_crd_yaml()
    actual = CRD_FILE.read_text()
    diff = "".join(difflib.unified_diff(
        actual.splitlines(keepends=True), expected.splitlines(keepends=True),
        "crds/inferencepool.yaml (checked in)", "render_crd_yaml()", n=1,
    ))
    assert actual == expected, f"crds/inferencepool.yaml is stale: run `make crd`.\n{diff[:3000]}"


def test_checked_in_crd_parses_to_the_generated_object() -> None:
    assert yaml.safe_load(CRD_FILE.read_text()) == CRD


def test_schema_is_structural_documented_and_its_rules_compile() -> None:
    assert structural_problems(SCHEMA) == []


def test_names_scope_and_status_subresource() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == f"{PLURAL}.{API_GROUP}"
    assert spec["group"] == "poolpilot.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "InferencePool"
    assert spec["names"]["plural"] == "inferencepools"
    # Short name and category are ours: the Gateway API Inference Extension's InferencePool is "infpool".
    assert spec["names"]["shortNames"] == ["ipool"]
    assert "poolpilot" in spec["names"]["categories"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


PRINTER_COLUMNS = ["Desired", "Ready", "Spot", "On-Demand", "Queue", "KV%", "Fallback", "Age"]
# The column types kubectl knows, and the schema types each may show.
COLUMN_TYPES = {
    "integer": {"integer"},
    "number": {"number", "integer"},
    "string": {"string"},
    "boolean": {"boolean"},
    "date": {"string"},
}


def test_printer_columns_show_the_pool_at_a_glance_in_order() -> None:
    columns = [column["name"] for column in CRD["spec"]["versions"][0]["additionalPrinterColumns"]]
    shown = [name for name in columns if name in PRINTER_COLUMNS]
    assert shown == PRINTER_COLUMNS, f"kubectl get ipool columns: {columns}"
    assert columns[-1] == "Age"


@pytest.mark.parametrize(
    "column", CRD["spec"]["versions"][0]["additionalPrinterColumns"], ids=lambda column: column["name"]
)
def test_printer_column_points_at_a_field_of_its_type(column: Mapping[str, Any]) -> None:
    node = resolve_path(SCHEMA, column["jsonPath"])
    assert node is not None, f"{column['name']}: {column['jsonPath']} names no field of the schema"
    assert column["type"] in COLUMN_TYPES
    assert node.get("type") in COLUMN_TYPES[column["type"]], (
        f"{column['name']} is a {column['type']} column but {column['jsonPath']} is {node.get('type')}"
    )


def _undocumented(schema: Mapping[str, Any], path: str) -> list[str]:
    missing = []
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}"
        if not str(child.get("description", "")).strip():
            missing.append(child_path)
        missing += _undocumented(child, child_path)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), Mapping):
            missing += _undocumented(schema[key], f"{path}[]")
    return missing


@pytest.mark.parametrize("part", ["spec", "status"])
def test_kubectl_explain_finds_a_description_on_every_field(part: str) -> None:
    node = SCHEMA["properties"][part]
    assert node.get("description"), f"kubectl explain inferencepool.{part} would show no description"
    assert _undocumented(node, part) == []


def test_the_spec_requires_a_model() -> None:
    assert "model" in SCHEMA["properties"]["spec"]["required"]
    admission = admit(SCHEMA, pool("llama", {}))
    assert "Required value" in admission.messages()
    assert isinstance(validate_pool("llama", {}), list)


# -------------------------------------------------------------------- the rules, known-bad objects

@pytest.mark.parametrize(("name", "patch", "message", "path"), BAD_OBJECTS)
def test_bad_object_is_refused_by_the_crd_and_by_validate_pool(
    name: str, patch: Json, message: str, path: str
) -> None:
    spec = merged(BASE_SPEC, patch)
    admission = admit(SCHEMA, pool(name, spec))
    parsed = validate_pool(name, spec)

    rule_problems = [(found.path, found.message) for found in admission.problems if found.kind == "rule"]
    assert any(where == path and message in text for where, text in rule_problems), (
        f"the CRD should refuse it at {path or '<root>'} with {message!r}:" + describe(admission, parsed)
    )
    assert isinstance(parsed, list), "validate_pool should refuse it:" + describe(admission, parsed)
    python_path = path or "metadata.name"
    assert any(problem.field == python_path and message in problem.reason for problem in parsed), (
        f"validate_pool should report {message!r} at {python_path}:" + describe(admission, parsed)
    )


@pytest.mark.parametrize(("name", "patch"), GOOD_OBJECTS)
def test_edge_of_a_rule_is_accepted_by_the_crd_and_by_validate_pool(name: str, patch: Json) -> None:
    spec = merged(BASE_SPEC, patch)
    admission = admit(SCHEMA, pool(name, spec))
    parsed = validate_pool(name, spec)
    assert admission.accepted and isinstance(parsed, InferencePoolSpec), describe(admission, parsed)


def test_crd_defaults_are_the_model_defaults() -> None:
    """The stored object (defaults applied by the API server) parses to the same spec as the raw one."""
    provider = {"baseURL": "https://x/v1", "model": "m"}
    spec = merged(BASE_SPEC, {"fallback": {"enabled": True, "provider": provider}})
    admission = admit(SCHEMA, pool("llama", spec))
    assert admission.accepted, describe(admission, validate_pool("llama", spec))
    stored = admission.obj["spec"]
    # The server filled in every section, nested defaults included.
    assert stored["scaling"]["scaleDown"] == {"stabilizationSeconds": 300, "maxStepReplicas": 1}
    assert stored["fallback"]["saturation"]["forSeconds"] == 30
    assert stored["fallback"]["provider"]["baseURL"] == "https://x/v1"
    assert validate_pool("llama", stored) == validate_pool("llama", spec)


# ------------------------------------------------------------------ the rules, generated objects


def _maybe(draw: st.DrawFn, target: Json, key: str, values: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        target[key] = draw(values)


# sampled_from draws about uniformly (one_of and small integer ranges lean to their first choice).
ONE_IN_SIX = st.sampled_from([False] * 5 + [True])


def _mostly(good: st.SearchStrategy[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """Good values five times in six, so that a fair share of whole specs is valid; else a bad one."""
    return ONE_IN_SIX.flatmap(lambda broken: st.sampled_from(bad) if broken else good)


def _ints(low: int, high: int, bad: list[int], *good_edges: int) -> st.SearchStrategy[Any]:
    good = st.one_of(st.integers(low, high), st.sampled_from([low, high, *good_edges]))
    return _mostly(good, bad)


def _floats(low: float, high: float, bad: list[float], *, exclude_low: bool = False,
            exclude_high: bool = False) -> st.SearchStrategy[Any]:
    edges = [edge for edge, excluded in ((low, exclude_low), (high, exclude_high)) if not excluded]
    floats = st.floats(low, high, exclude_min=exclude_low, exclude_max=exclude_high, allow_nan=False)
    good = st.one_of(floats, st.sampled_from(edges)) if edges else floats
    return _mostly(good, bad)


VALID_ARGS = st.sampled_from(["--max-model-len=8192", "--enable-prefix-caching", "--portal", "--hostname=x"])
MANAGED_ARGS = st.sampled_from([*MANAGED_VLLM_FLAGS, *(f"{flag}=1" for flag in MANAGED_VLLM_FLAGS)])
NAMES = _mostly(
    st.one_of(st.from_regex(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True), st.just("a" * 40)),
    ["a" * 41, "Llama", "8b", "llama-", "-llama", "ll_ama", "ll.ama"],
)


@st.composite
def pool_specs(draw: st.DrawFn, *, args: bool) -> Json:
    """Specs that vary what the rules and the bounds look at, valid and invalid alike.

    Every bound of the fields drawn here is tried on both sides; every rule is broken now and then.
    ``args=False`` leaves ``model.args`` out.
    """
    model: Json = {"name": draw(st.sampled_from(["m", "meta-llama/Llama-3.1-8B-Instruct"]))}
    if args:
        listed = draw(st.lists(VALID_ARGS, max_size=3))
        if draw(ONE_IN_SIX):
            listed.insert(draw(st.integers(0, len(listed))), draw(MANAGED_ARGS))
        model["args"] = listed
    _maybe(draw, model, "gpusPerReplica", _ints(0, 16, [-1, 17]))
    spec: Json = {"model": model}

    if draw(st.booleans()):
        replicas: Json = {}
        _maybe(draw, replicas, "min", _ints(0, 6, [-1, 1001], 1000))
        _maybe(draw, replicas, "max", _ints(1, 8, [0, 1001], 1000))
        spec["replicas"] = replicas

    if draw(st.booleans()):
        scaling: Json = {}
        kv_target = _floats(0.0, 1.0, [0.0, 1.0000001, -0.1], exclude_low=True)
        _maybe(draw, scaling, "targetKVCacheUtilization", kv_target)
        _maybe(draw, scaling, "tolerance", _floats(0.0, 1.0, [1.0, -0.1], exclude_high=True))
        _maybe(draw, scaling, "startupSeconds", _ints(10, 7200, [9, 7201]))
        if draw(st.booleans()):
            step: Json = {}
            _maybe(draw, step, "stabilizationSeconds", _ints(0, 3600, [-1, 3601]))
            _maybe(draw, step, "maxStepReplicas", _ints(1, 1000, [0]))
            scaling["scaleUp"] = step
        spec["scaling"] = scaling

    if draw(st.booleans()):
        capacity: Json = {}
        providers = st.sampled_from(["karpenter", "eks", "gke", "aks", "custom"])
        _maybe(draw, capacity, "provider", _mostly(providers, ["azure", "Karpenter"]))
        _maybe(draw, capacity, "spotPercentage", _ints(0, 100, [-1, 101]))
        _maybe(draw, capacity, "onDemandBase", _ints(0, 3, [-1]))
        if draw(st.booleans()):
            spot: Json = {}
            _maybe(draw, spot, "nodeSelector", st.sampled_from([{}, {"pool": "spot"}]))
            capacity["spot"] = spot
        spec["capacity"] = capacity

    if draw(st.booleans()):
        interruption: Json = {}
        _maybe(draw, interruption, "drainSeconds", _ints(10, 130, [9, 3601], 3600))
        _maybe(draw, interruption, "preStopSeconds", _ints(0, 120, [-1, 121]))
        _maybe(draw, interruption, "nodeTaints", st.booleans())
        spec["interruption"] = interruption

    if draw(st.booleans()):
        fallback: Json = {}
        _maybe(draw, fallback, "enabled", st.booleans())
        _maybe(draw, fallback, "provider", _mostly(st.sampled_from([
            {"baseURL": "https://api.example/v1", "model": "m"},
            {"baseURL": "https://api.example/v1", "model": "m", "apiKeySecretRef": {"name": "key"}},
        ]), [{"baseURL": "", "model": "m"}, {"model": "m"}]))
        _maybe(draw, fallback, "route", _mostly(st.sampled_from(["router", "httpRoute"]), ["gateway"]))
        _maybe(draw, fallback, "httpRoute", _mostly(st.just({"name": "llm"}), [{"name": ""}, {}]))
        _maybe(draw, fallback, "preferCheaper", st.booleans())
        _maybe(draw, fallback, "preferCheaperForSeconds", _ints(60, 86400, [59, 86401], 1800))
        if draw(st.booleans()):
            saturation: Json = {}
            _maybe(draw, saturation, "kvCacheUtilization", _floats(0.0, 1.0, [0.0, 1.01], exclude_low=True))
            _maybe(draw, saturation, "forSeconds", _ints(0, 3600, [-1]))
            fallback["saturation"] = saturation
        spec["fallback"] = fallback

    if draw(st.booleans()):
        slo: Json = {}
        _maybe(draw, slo, "ttftPercentile", _floats(50.0, 99.99, [49.99, 100.0]))
        _maybe(draw, slo, "ttftSeconds", _floats(0.0, 600.0, [0.0, 600.5], exclude_low=True))
        spec["slo"] = slo

    if draw(st.booleans()):
        cost: Json = {"currency": draw(_mostly(st.sampled_from(["USD", "EUR"]), ["US", "EURO"]))}
        for price in ("spotReplicaHourly", "onDemandReplicaHourly", "apiInputPerMillionTokens",
                      "apiOutputPerMillionTokens"):
            _maybe(draw, cost, price, _mostly(st.sampled_from([0, 0.15, 0.8048]), [-0.01]))
        spec["cost"] = cost
    return spec


def assert_crd_and_pydantic_agree(name: str, spec: Json) -> None:
    admission = admit(SCHEMA, pool(name, spec))
    parsed = validate_pool(name, spec)
    assert admission.pruned == (), f"the generator made fields the CRD does not know: {admission.pruned}"
    assert admission.accepted == isinstance(parsed, InferencePoolSpec), (
        f"the CRD and validate_pool disagree on name={name!r} spec={spec}:" + describe(admission, parsed)
    )
    if admission.accepted:
        # The operator reads the stored object: the server's defaults must give the same spec.
        assert validate_pool(name, admission.obj["spec"]) == parsed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, spec=pool_specs(args=True))
def test_crd_and_validate_pool_agree_on_generated_specs(name: str, spec: Json) -> None:
    assert_crd_and_pydantic_agree(name, spec)


@settings(max_examples=50, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@example(name="llama", spec={"model": {"name": "m"}})
@given(name=NAMES, spec=pool_specs(args=False))
def test_crd_and_validate_pool_agree_on_generated_specs_without_args(name: str, spec: Json) -> None:
    assert_crd_and_pydantic_agree(name, spec)


# ------------------------------------------------------------- the validator the tests above rely on


def test_validator_prunes_unknown_fields_and_nulls_then_defaults() -> None:
    schema: Json = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "object", "default": {}, "properties": {
                    "b": {"type": "integer", "default": 3},
                    "c": {"type": "object", "default": {"d": 1}, "properties": {
                        "d": {"type": "integer"}, "e": {"type": "string", "default": "x"}}},
                }},
                "n": {"type": "integer", "default": 7},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            }},
        },
    }
    admission = admit(schema, {"apiVersion": "v", "kind": "K", "metadata": {"name": "x"},
                               "spec": {"n": None, "zzz": 1, "free": {"any": [1]}}})
    assert admission.pruned == ("spec.n", "spec.zzz")
    assert admission.obj["spec"] == {"a": {"b": 3, "c": {"d": 1, "e": "x"}}, "n": 7, "free": {"any": [1]}}
    assert admission.accepted


@pytest.mark.parametrize(("node", "value", "ok"), [
    ({"type": "integer"}, 3, True),
    ({"type": "integer"}, 3.5, False),
    ({"type": "integer"}, True, False),
    ({"type": "integer"}, "3", False),
    ({"type": "number"}, 3, True),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True}, 0, False),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True}, 1e-9, True),
    ({"type": "number", "maximum": 1}, 1, True),
    ({"type": "number", "maximum": 1, "exclusiveMaximum": True}, 1, False),
    ({"x-kubernetes-int-or-string": True}, "4Gi", True),
    ({"x-kubernetes-int-or-string": True}, 4, True),
    ({"x-kubernetes-int-or-string": True}, 4.5, False),
    ({"type": "string", "enum": ["A", "B"]}, "C", False),
    ({"type": "string", "minLength": 3, "maxLength": 3}, "USD", True),
    ({"type": "string", "minLength": 3, "maxLength": 3}, "EURO", False),
    ({"type": "string", "pattern": "^[a-z]+$"}, "abC", False),
    ({"type": "array", "maxItems": 1, "items": {"type": "string"}}, ["a", "b"], False),
    ({"type": "object", "additionalProperties": {"type": "string"}}, {"k": 1}, False),
    ({"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}}}, {}, False),
])
def test_validator_checks_types_and_bounds_like_the_api_server(node: Json, value: Any, ok: bool) -> None:
    schema: Json = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"v": node}}}}
    admission = admit(schema, {"spec": {"v": value}})
    assert admission.accepted is ok, admission.problems


def test_validator_runs_cel_at_each_node_with_schema_types_and_reports_errors() -> None:
    schema: Json = {"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {
                "type": "object",
                "properties": {"low": {"type": "number"}, "high": {"type": "number"}},
                "x-kubernetes-validations": [{"rule": "self.low <= self.high", "message": "low above high"}],
            }},
            "opt": {"type": "string"},
        },
        "x-kubernetes-validations": [
            {"rule": "self.opt == 'x'", "message": "opt must be x", "fieldPath": ".opt"},
        ],
    }}}
    # 1 <= 2.5 compares an int-looking value with a double: fine, as the schema says both are numbers.
    items = [{"low": 1, "high": 2.5}, {"low": 3, "high": 2}]
    admission = admit(schema, {"spec": {"items": items, "opt": "y"}})
    assert [(p.path, p.message) for p in admission.problems] == [
        ("spec.opt", "opt must be x"),
        ("spec.items[1]", "low above high"),
    ]
    # An absent field the rule reads is an evaluation error, which refuses the object too.
    (problem,) = admit(schema, {"spec": {}}).problems
    assert problem.path == "spec" and "evaluating rule: self.opt == 'x'" in problem.message


@pytest.mark.parametrize(("broken", "complaint"), BROKEN_SCHEMAS)
def test_structural_check_finds_what_the_api_server_refuses(broken: Json, complaint: str) -> None:
    schema = {"type": "object", **broken}
    problems = structural_problems(schema)
    assert any(complaint in problem for problem in problems), problems
