"""The observe step of an evaluation."""

import logging

import pytest

from controller.api.spec import InferencePoolSpec
from controller.core.capacity import CapacityType
from controller.kube.render import PoolRef
from controller.reconcile import ParsedSpec, _endpoints


def test_a_pod_ip_that_is_not_an_address_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.reconcile"):
        endpoints = _endpoints(["10.0.0.1", "not-an-ip", "fd00::5"], 8000)
    assert endpoints == ("http://10.0.0.1:8000", "http://[fd00::5]:8000")
    assert "'not-an-ip' is not a pod IP address" in caplog.text


def test_the_spec_is_parsed_anew_for_a_new_generation_or_another_pool_of_that_name() -> None:
    parsed = ParsedSpec()
    first = PoolRef(name="p", namespace="llm", uid="uid-1")
    valid = {"model": {"name": "m"}, "replicas": {"min": 1, "max": 2}}
    spec, templates = parsed.get(first, 1, valid)
    assert isinstance(spec, InferencePoolSpec) and set(templates) == set(CapacityType)
    assert parsed.get(first, 1, valid)[0] is spec
    invalid = {"model": {"name": "m"}, "replicas": {"min": 3, "max": 2}}
    problems, templates = parsed.get(first, 2, invalid)
    assert isinstance(problems, tuple) and problems and templates == {}
    spec, _ = parsed.get(PoolRef(name="p", namespace="llm", uid="uid-2"), 2, valid)  # recreated: generation 2 again
    assert isinstance(spec, InferencePoolSpec)
