"""An operator upgrade that renders a different pod template rolls the fleet gradually; a user's change does not wait.

"An older operator version" is played by rewriting each Deployment's template (and the
last-applied record beside it) as that version would have rendered it: with one more env var.
The operator then finds every pool's pods on an old rendering of an unchanged spec.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.crd import generate_crd
from controller.kube.diff import LAST_APPLIED_ANNOTATION
from controller.kube.observe import is_rolling
from tests.support.backends import Backend, RealCluster, open_backend
from tests.support.kube import condition
from tests.support.waiting import eventually

Manifest = dict[str, Any]
POOLS = ("alpha", "beta", "gamma")
OLD_ENV = {"name": "RENDERED_BY", "value": "poolpilot-0.0.9"}
SPEC = {"model": {"name": "m", "gpusPerReplica": 0}, "replicas": {"min": 2, "max": 2},
        "capacity": {"onDemandBase": 2}, "scaling": {"evaluationIntervalSeconds": 1}}


@pytest.fixture(params=["embedded", "real"])
def slow_pods(request: pytest.FixtureRequest) -> Iterator[Backend]:
    real: RealCluster | None = request.getfixturevalue("real_cluster") if request.param == "real" else None
    # Pods take a second to become ready, so a roll lasts long enough to be seen (KWOK: its own delay).
    with open_backend(request.param, real, crds=[generate_crd()], dev_options={"pod_ready_delay": 1.0}) as opened:
        yield opened


def deployment(backend: Backend, pool: str) -> Manifest:
    found = backend.kube.get("Deployment", backend.namespace, f"{pool}-on-demand")
    assert found is not None
    return found


def on_old_rendering(live: Manifest) -> bool:
    containers = live["spec"]["template"]["spec"]["containers"]
    return OLD_ENV in (containers[0].get("env") or [])


def play_an_older_operator(backend: Backend, pool: str) -> None:
    """Rewrite the pool's Deployment as an older version would have rendered the same spec."""
    live = deployment(backend, pool)
    applied = json.loads(live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])
    for manifest in (live, applied):
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [*(container.get("env") or []), OLD_ENV]
    backend.kube.patch("Deployment", backend.namespace, f"{pool}-on-demand", {
        "metadata": {"annotations": {LAST_APPLIED_ANNOTATION: json.dumps(applied, sort_keys=True,
                                                                         separators=(",", ":"))}},
        "spec": {"template": {"spec": {"containers": copy.deepcopy(live["spec"]["template"]["spec"]["containers"])}}},
    })


class RollWatcher:
    """Samples the Deployments: when each pool left the old rendering, and how many rolled at once."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.left_old_at: dict[str, float] = {}
        self.rolling_samples: list[frozenset[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RollWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            rolling: set[str] = set()
            for pool in POOLS:
                live = deployment(self.backend, pool)
                if not on_old_rendering(live):
                    self.left_old_at.setdefault(pool, time.monotonic())
                    if is_rolling(live):
                        rolling.add(pool)
            self.rolling_samples.append(frozenset(rolling))
            time.sleep(0.05)

    def most_at_once(self, among: set[str]) -> int:
        return max((len(sample & among) for sample in self.rolling_samples), default=0)


def settle(backend: Backend, *, old: bool) -> None:
    for pool in POOLS:
        eventually(lambda pool=pool: deployment(backend, pool),  # type: ignore[misc]
                   lambda d: on_old_rendering(d) == old and not is_rolling(d), timeout=60,
                   what=f"{pool} settled on the {'old' if old else 'new'} rendering")


def test_an_upgrade_rolls_one_pool_at_a_time_and_a_spec_change_does_not_wait(slow_pods: Backend) -> None:
    backend = slow_pods
    operator = backend.operator(env={"POOLPILOT_MAX_CONCURRENT_UPGRADES": "1"})
    for pool in POOLS:
        backend.kube.create_pool(backend.namespace, pool, SPEC)
    for pool in POOLS:
        eventually(lambda pool=pool: backend.kube.get_pool(backend.namespace, pool),  # type: ignore[misc]
                   lambda p: (condition(p, "Ready") or {}).get("status") == "True", timeout=60,
                   what=f"{pool} Ready")
    operator.stop()
    for pool in POOLS:
        play_an_older_operator(backend, pool)
    settle(backend, old=True)
    # Meanwhile a user changes gamma's spec: that applies at once, whatever the upgrade gate says.
    backend.kube.patch_pool(backend.namespace, "gamma", {"spec": {"model": {"args": ["--max-model-len=2048"]}}})

    with RollWatcher(backend) as watcher:
        operator.start()
        settle(backend, old=False)
    upgrades = {"alpha", "beta"}
    assert watcher.most_at_once(upgrades) == 1, [sorted(s) for s in watcher.rolling_samples if s]
    second_upgrade = max(watcher.left_old_at[p] for p in upgrades)
    assert watcher.left_old_at["gamma"] < second_upgrade, "the user's change waited for the upgrade slot"
    for pool in upgrades:  # Kopf posts Events from a queue: they may trail the change
        eventually(lambda pool=pool: [e for e in backend.kube.events_for(backend.namespace, pool)  # type: ignore[misc]
                                      if e["reason"] == "UpgradeStarted"],
                   lambda found: len(found) == 1, what=f"one UpgradeStarted on {pool}")
    assert not [e for e in backend.kube.events_for(backend.namespace, "gamma") if e["reason"] == "UpgradeStarted"]
    gamma = deployment(backend, "gamma")
    assert "--max-model-len=2048" in gamma["spec"]["template"]["spec"]["containers"][0]["args"]
