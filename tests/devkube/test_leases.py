"""The embedded server's Leases without the real one (tests/fidelity compares the two): MicroTime's one layout,
Go's messages, and the registry's rules for PUT."""

from __future__ import annotations

import datetime

import aiohttp
import pytest

from devkube.cluster import DevCluster
from devkube.leases import LeaseDecodeError, decode_lease, parse_micro_time, validate_lease


@pytest.mark.parametrize(("text", "utc"), [
    ("2026-12-03T12:00:00.123456Z", "2026-12-03T12:00:00.123456"),
    ("2026-12-03T14:30:00.000001+02:30", "2026-12-03T12:00:00.000001"),
    ("2026-12-31T23:00:00.500000-01:00", "2027-01-01T00:00:00.500000"),
    ("2024-02-29T00:00:00,000000Z", "2024-02-29T00:00:00"),  # Go takes a comma for the point, too
])
def test_micro_times_parse_as_gos_layout_does(text: str, utc: str) -> None:
    assert parse_micro_time(text) == datetime.datetime.fromisoformat(utc).replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize(("text", "error"), [
    ("2026-12-03T12:00:00Z", 'cannot parse "Z" as ".000000"'),
    ("2026-12-03T12:00:00.12345Z", 'cannot parse ".12345Z" as ".000000"'),
    ("2026-12-03T12:00:00.1234567Z", 'cannot parse "7Z" as "Z07:00"'),
    ("2025-02-29T00:00:00.000000Z", "day out of range"),
    ("2026-12-03T24:00:00.000000Z", "hour out of range"),
    ("2026-12-03T12:00:60.000000Z", "second out of range"),
    ("2026-12-03T12:00:00.000000+02:61", "time zone offset minute out of range"),
    ("2026-12-03T12:00:00.000000Z ", 'extra text: " "'),
    ("26-12-03T12:00:00.000000Z", 'cannot parse "26-12-03T12:00:00.000000Z" as "2006"'),
    ("2026-1-03T12:00:00.000000Z", 'cannot parse "1-03T12:00:00.000000Z" as "01"'),
])
def test_other_times_fail_with_gos_message(text: str, error: str) -> None:
    with pytest.raises(LeaseDecodeError) as raised:
        parse_micro_time(text)
    assert str(raised.value).endswith(error), str(raised.value)


def test_a_lease_decodes_to_its_known_fields_with_canonical_times() -> None:
    decoded = decode_lease({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                            "spec": {"holderIdentity": "a", "renewTime": "2026-12-03T13:00:00.100000+01:00",
                                     "acquireTime": None, "strategy": "OldestEmulationVersion",
                                "typo": 1}, "status": {}})
    assert decoded == {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                       "spec": {"holderIdentity": "a", "renewTime": "2026-12-03T12:00:00.100000Z"}}
    assert validate_lease(decoded) == []
    problems = validate_lease({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -2}})
    assert [(p.field, p.message) for p in problems] == [
        ("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0"),
        ("spec.leaseTransitions", "Invalid value: -2: must be greater than or equal to 0")]


async def test_a_put_creates_a_missing_lease_and_needs_a_resource_version_once_it_exists() -> None:
    async with DevCluster(nodes=()) as cluster, aiohttp.ClientSession(cluster.url) as session:
        path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/l"
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                "spec": {"holderIdentity": "a"}}
        async with session.put(path, json=body) as response:
            assert response.status == 201
            created = await response.json()
        async with session.put(path, json=body) as response:
            assert response.status == 422
            assert "metadata.resourceVersion: Invalid value: 0: must be specified for an update" in (
                await response.json())["message"]
        stale = {**body, "metadata": {"name": "l", "resourceVersion": "1"}}
        async with session.put(path, json=stale) as response:
            assert response.status == 409
        current = {**body, "metadata": created["metadata"], "spec": {"holderIdentity": "b"}}
        async with session.put(path, json=current) as response:
            assert response.status == 200 and (await response.json())["spec"] == {"holderIdentity": "b"}
        async with session.patch(path, json={"spec": {"renewTime": "2026-12-03T12:00:00Z"}},
                                 headers={"Content-Type": "application/merge-patch+json"}) as response:
            assert response.status == 422  # the patched Lease does not decode
        assert [w.status for w in cluster.writes(resource="leases")] == [201, 422, 409, 200, 422]
