"""The observe step of an evaluation."""

import logging

import pytest

from controller.reconcile import _endpoints


def test_a_pod_ip_that_is_not_an_address_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="controller.reconcile"):
        endpoints = _endpoints(["10.0.0.1", "not-an-ip", "fd00::5"], 8000)
    assert endpoints == ("http://10.0.0.1:8000", "http://[fd00::5]:8000")
    assert "'not-an-ip' is not a pod IP address" in caplog.text
