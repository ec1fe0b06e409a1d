"""The foundation scenarios on a real cluster. On the real control plane of `make test` KWOK's GPU nodes
run the pods, so readiness is asserted too; on a cluster without GPUs the pods stay pending and it is not."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support import scenarios
from tests.support.scenarios import ScenarioEnv


def test_creating_a_pool_creates_its_objects(env: ScenarioEnv) -> None:
    scenarios.creating_a_pool_creates_its_objects(env)


def test_changing_the_spec_patches_only_what_changed(env: ScenarioEnv) -> None:
    scenarios.create_and_settle(env, "qwen")
    scenarios.changing_the_spec_patches_only_what_changed(env)


def test_restarting_the_operator_writes_nothing(env: ScenarioEnv) -> None:
    scenarios.create_and_settle(env, "qwen")
    scenarios.restarting_the_operator_writes_nothing(env)


def test_deleting_the_pool_removes_its_objects(env: ScenarioEnv) -> None:
    scenarios.create_and_settle(env, "qwen")
    scenarios.deleting_the_pool_removes_its_objects(env)


@pytest.mark.parametrize(("spec", "message"), [
    ({"model": {"name": "m"}, "replicas": {"min": 3, "max": 2}}, "replicas.min must not exceed replicas.max"),
    ({"model": {"name": "m", "args": ["--port=9000"]}}, "must not set --port"),
    ({"model": {"name": "m"}, "capacity": {"spotPercentage": 150}}, "spotPercentage"),
])
def test_the_api_server_refuses_what_the_schema_and_cel_rules_catch(env: ScenarioEnv, spec: dict[str, object],
                                                                    message: str) -> None:
    with pytest.raises(ApiException) as refused:
        env.kube.create_pool(env.namespace, "refused", spec)
    assert refused.value.status == 422
    assert message in str(refused.value.body)
