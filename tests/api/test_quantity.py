"""Canonical quantities, as kube-apiserver 1.36 stored them in a Deployment's resource requests.

The table was read off the real server (tests/fidelity runs the same inputs through both
servers on every `make test`); here it pins the pure function without a server.
"""

from __future__ import annotations

import pytest

from controller.api.quantity import InvalidQuantity, canonical

STORED_BY_THE_REAL_SERVER = {
    "0.5": "500m", "1024Mi": "1Gi", "1.5Gi": "1536Mi", "1000m": "1", "2Gi": "2Gi", "12000": "12k",
    "1.5e3": "1500", "1E3": "1E3", "2e4": "20e3", "1e-7": "1e-3", "1.2345m": "2m", "0.1Mi": "104857600m",
    "1.5Ki": "1536", "2048": "2048", "1.000": "1", "0.0": "0", "0m": "0", "+1": "+1", "1e0": "1e0", "8E": "8E",
    "999Mi": "999Mi", "0.0000000001": "1m", "1234567890123": "1234567890123", "100Gi": "100Gi", "1025": "1025",
    "0.000001m": "1m", "1e18": "1e18", "1e-3": "1e-3",
}


@pytest.mark.parametrize(("written", "stored"), STORED_BY_THE_REAL_SERVER.items())
def test_a_pod_resource_quantity_is_rendered_as_the_server_stores_it(written: str, stored: str) -> None:
    assert canonical(written, round_to_milli=True) == stored


def test_without_milli_rounding_nano_precision_is_kept() -> None:
    assert canonical("1u") == "1u"
    assert canonical("1.5u") == "1500n"


@pytest.mark.parametrize("bad", ["abc", "1.2.3", "", "Mi", "1Xi"])
def test_a_malformed_quantity_is_refused(bad: str) -> None:
    with pytest.raises(InvalidQuantity):
        canonical(bad)
