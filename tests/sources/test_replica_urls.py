"""Where the operator reaches a replica: the URL built from a pod's IP."""

from __future__ import annotations

import pytest

from controller.sources.metrics.urls import replica_metrics_base_url

__all__: list[str] = []


@pytest.mark.parametrize(("ip", "url"), [
    ("10.1.2.3", "http://10.1.2.3:8000"),
    ("fd00::5", "http://[fd00::5]:8000"),
    ("FD00:0:0::5", "http://[fd00::5]:8000"),  # one spelling per address
    ("::ffff:10.1.2.3", "http://[::ffff:a01:203]:8000"),
])
def test_ipv6_pod_ips_are_bracketed(ip: str, url: str) -> None:
    assert replica_metrics_base_url(ip, 8000) == url


@pytest.mark.parametrize("ip", ["", "pod.example", "10.1.2.3:8000", "[fd00::5]", "fe80::1%eth0"])
def test_what_is_not_a_pod_ip_is_refused(ip: str) -> None:
    with pytest.raises(ValueError, match="not a pod IP address"):
        replica_metrics_base_url(ip, 8000)
