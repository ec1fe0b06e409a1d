"""The leader election's settings: where the Lease lives, and timings that keep the takeover within 15 s."""

from __future__ import annotations

import pathlib

from controller.leader import STANDBY_JITTER
from controller.settings import DEFAULT_LEASE_NAMESPACE, OperatorSettings


def test_the_lease_namespace_is_the_one_set_else_the_pods_own_else_poolpilot_system(tmp_path: pathlib.Path) -> None:
    namespace_file = tmp_path / "namespace"
    assert OperatorSettings().lease_namespace_or_default(namespace_file) == DEFAULT_LEASE_NAMESPACE == \
        "poolpilot-system"
    namespace_file.write_text("ops\n")  # in a pod: the ServiceAccount's namespace file
    assert OperatorSettings().lease_namespace_or_default(namespace_file) == "ops"
    assert OperatorSettings(pod_namespace="from-downward-api").lease_namespace_or_default(namespace_file) == \
        "from-downward-api"
    assert OperatorSettings(pod_namespace="p", lease_namespace="chosen").lease_namespace_or_default(
        namespace_file) == "chosen"


def test_the_default_timings_bound_the_takeover_after_a_kill_below_15_s() -> None:
    """A standby sees the last renewal up to one look late and takes over at its first look after the
    expiry: lease duration + 2 looks, each at most retry x (1 + jitter); Kopf's start comes on top (~1 s)."""
    settings = OperatorSettings()
    look = settings.lease_retry_period_seconds * (1 + STANDBY_JITTER)
    worst = settings.lease_duration_seconds + 2 * look
    assert worst <= 11.5
    assert settings.lease_duration_seconds > settings.lease_renew_deadline_seconds  # the leader stops first
    assert settings.lease_name == "poolpilot" and settings.leader_election
