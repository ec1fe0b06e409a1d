"""Each API scenario the operator relies on gives the same observation on the embedded server as on the
real one, or is listed, with its reason, in ``known_gaps.py``."""

from __future__ import annotations

import pytest

from tests.fidelity.api import Api
from tests.fidelity.known_gaps import KNOWN_GAPS
from tests.fidelity.scenarios import SCENARIOS, describe


def _params() -> list[object]:
    params: list[object] = []
    for name in SCENARIOS:
        marks = [pytest.mark.xfail(reason=f"known gap: {KNOWN_GAPS[name]}", strict=True)] if name in KNOWN_GAPS else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("name", _params())
def test_the_embedded_server_answers_as_the_real_one(name: str, embedded_api: Api, real_api: Api) -> None:
    run = SCENARIOS[name]
    real = run(real_api, real_api.namespace())
    embedded = run(embedded_api, embedded_api.namespace())
    assert embedded == real, f"{name} differs.\n--- real ---\n{describe(real)}\n--- embedded ---\n{describe(embedded)}"


def test_every_known_gap_names_a_scenario() -> None:
    assert set(KNOWN_GAPS) <= set(SCENARIOS), set(KNOWN_GAPS) - set(SCENARIOS)
