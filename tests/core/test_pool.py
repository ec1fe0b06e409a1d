from datetime import UTC, datetime, timedelta

import pytest

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core.capacity import CapacityType
from controller.core.conditions import find_condition
from controller.core.pool import (
    DeploymentState,
    PoolObservation,
    SpecProblem,
    compute_status,
    desired_replicas,
    invalid_spec_needs_warning,
    validate_pool,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
NOTHING_YET = PoolObservation(deployments={})


def spec(**overrides: object) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate({"model": {"name": "m"}, **overrides})


def observed(spot: tuple[int, int] = (0, 0), on_demand: tuple[int, int] = (0, 0)) -> PoolObservation:
    return PoolObservation(deployments={
        CapacityType.SPOT: DeploymentState(replicas=spot[0], ready=spot[1]),
        CapacityType.ON_DEMAND: DeploymentState(replicas=on_demand[0], ready=on_demand[1]),
    })


# --- validation ---------------------------------------------------------------------------------------


def test_a_valid_pool_parses_with_defaults() -> None:
    parsed = validate_pool("llama", {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}})
    assert isinstance(parsed, InferencePoolSpec)
    assert (parsed.replicas.min, parsed.replicas.max, parsed.capacity.provider) == (1, 1, "karpenter")


@pytest.mark.parametrize(
    ("name", "raw", "field", "words"),
    [
        ("p", {}, "spec.model", "Field required"),
        ("p", {"model": {"name": "m"}, "replicas": {"min": 3, "max": 2}}, "spec.replicas.min", "must not exceed"),
        ("p", {"model": {"name": "m", "args": ["--port=9000"]}}, "spec.model.args", "--port"),
        ("p", {"model": {"name": "m"}, "scaling": {"tolerance": "high"}}, "spec.scaling.tolerance", "number"),
        ("p", {"model": {"name": "m"}, "capacity": {"spotPercentage": 101}}, "spec.capacity.spotPercentage", "100"),
        ("p", {"model": {"name": "m"}, "fallback": {"enabled": True}}, "spec.fallback.provider", "provider"),
        ("p", {"model": {"name": "m"}, "interruption": {"drainSeconds": 12, "preStopSeconds": 10}},
         "spec.interruption.drainSeconds", "at least"),
        ("p", {"model": {"name": "m"}, "modle": {}}, "spec.modle", "Extra inputs"),
        ("Llama", {"model": {"name": "m"}}, "metadata.name", "DNS-1035"),
        ("x" * 41, {"model": {"name": "m"}}, "metadata.name", "at most 40"),
    ],
    ids=["model_missing", "min_above_max", "managed_flag", "wrong_type", "percentage_out_of_range",
         "fallback_without_provider", "drain_too_short", "typo_in_field", "name_not_dns_label", "name_too_long"],
)
def test_invalid_pools_name_the_field_and_the_reason(name: str, raw: dict[str, object], field: str,
                                                      words: str) -> None:
    problems = validate_pool(name, raw)
    assert isinstance(problems, list)
    assert any(p.field == field and words in p.reason for p in problems), problems


def test_a_spec_that_is_not_a_mapping_is_a_problem_not_a_crash() -> None:
    assert isinstance(validate_pool("p", None), list)


# --- desired replicas ------------------------------------------------------------------------------------


def test_a_new_pool_starts_at_its_minimum() -> None:
    assert desired_replicas(spec(replicas={"min": 2, "max": 5}), NOTHING_YET) == 2


def test_a_new_pool_with_min_zero_starts_at_one_unless_the_fallback_serves_meanwhile() -> None:
    assert desired_replicas(spec(replicas={"min": 0, "max": 3}), NOTHING_YET) == 1
    with_fallback = spec(replicas={"min": 0, "max": 3},
                         fallback={"enabled": True, "provider": {"baseURL": "https://api.example/v1", "model": "m"}})
    assert desired_replicas(with_fallback, NOTHING_YET) == 0


def test_running_replicas_are_kept_within_bounds() -> None:
    assert desired_replicas(spec(replicas={"min": 1, "max": 5}), observed(spot=(3, 3), on_demand=(1, 1))) == 4
    assert desired_replicas(spec(replicas={"min": 1, "max": 3}), observed(spot=(3, 3), on_demand=(1, 1))) == 3
    assert desired_replicas(spec(replicas={"min": 6, "max": 8}), observed(spot=(3, 3), on_demand=(1, 1))) == 6


# --- status ----------------------------------------------------------------------------------------------


def test_status_of_a_ready_pool() -> None:
    status = compute_status(InferencePoolStatus(), generation=4, spec=spec(replicas={"min": 3, "max": 3}),
                            observation=observed(spot=(2, 2), on_demand=(1, 1)), now=T0)
    assert status.observed_generation == 4
    assert status.replicas is not None
    assert (status.replicas.desired, status.replicas.ready, status.replicas.spot_ready,
            status.replicas.on_demand_ready) == (3, 3, 2, 1)
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("True", "ReplicasReady")
    assert "3/3 replicas ready (spot 2/2, on-demand 1/1)" in ready.message
    valid = find_condition(status.conditions, "SpecValid")
    assert valid is not None and valid.status == "True"


def test_status_while_replicas_start() -> None:
    status = compute_status(InferencePoolStatus(), generation=1, spec=spec(replicas={"min": 3, "max": 3}),
                            observation=observed(spot=(2, 0), on_demand=(1, 1)), now=T0)
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "ReplicasNotReady")
    assert ready.message.startswith("1/3 replicas ready")


def test_an_invalid_spec_reports_the_problem_and_the_replicas_as_they_are() -> None:
    problems = [SpecProblem("spec.replicas.min", "replicas.min must not exceed replicas.max")]
    status = compute_status(InferencePoolStatus(), generation=7, spec=problems,
                            observation=observed(spot=(2, 2), on_demand=(1, 1)), now=T0)
    valid = find_condition(status.conditions, "SpecValid")
    assert valid is not None
    assert (valid.status, valid.reason, valid.observed_generation) == ("False", "InvalidSpec", 7)
    assert "spec.replicas.min: replicas.min must not exceed replicas.max" in valid.message
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and ready.status == "False" and "left as they are" in ready.message
    assert status.replicas is not None and (status.replicas.desired, status.replicas.ready) == (3, 3)


def test_name_conflicts_make_the_pool_not_ready() -> None:
    status = compute_status(InferencePoolStatus(), generation=1, spec=spec(), observation=observed(on_demand=(1, 1)),
                            conflicts=["Service p"], now=T0)
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "ObjectConflict")
    assert "Service p" in ready.message


def test_recomputing_an_unchanged_pool_gives_an_identical_status() -> None:
    first = compute_status(InferencePoolStatus(), generation=1, spec=spec(), observation=observed(on_demand=(1, 1)),
                           now=T0)
    again = compute_status(first, generation=1, spec=spec(), observation=observed(on_demand=(1, 1)),
                           now=T0 + timedelta(hours=1))
    assert again == first


def test_invalid_spec_warns_once_per_generation() -> None:
    problems = [SpecProblem("spec.model", "Field required")]
    assert invalid_spec_needs_warning(InferencePoolStatus(), generation=2)
    warned = compute_status(InferencePoolStatus(), generation=2, spec=problems, observation=NOTHING_YET, now=T0)
    assert not invalid_spec_needs_warning(warned, generation=2)
    assert invalid_spec_needs_warning(warned, generation=3)
