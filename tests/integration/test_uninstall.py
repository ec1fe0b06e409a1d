"""Uninstalling as the README says, with the real kubectl: no pool or namespace is left on a finalizer.

The commands come from the README's Uninstall section itself, so a wrong step there fails here.
"""

from __future__ import annotations

import pathlib
import re
import shlex

from tests.support.backends import Backend
from tests.support.scenarios import POOL_SPEC
from tests.support.waiting import eventually

FINALIZER = "poolpilot.io/finalizer"


def uninstall_commands() -> list[list[str]]:
    """The kubectl commands of the README's Uninstall section, in order."""
    readme = pathlib.Path("README.md").read_text()
    section = readme.split("### Uninstall", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("kubectl ")]


def readme_command(verb: str, kind: str) -> list[str]:
    found = [c for c in uninstall_commands() if c[1:3] == [verb, kind]]
    assert len(found) == 1, f"the README's Uninstall section should have one `kubectl {verb} {kind}`: {found}"
    return found[0][1:]


def pool_exists(backend: Backend, name: str) -> bool:
    return backend.kube.get_pool(backend.namespace, name) is not None


def test_the_readme_steps_delete_every_pool_and_its_objects(backend: Backend) -> None:
    backend.operator()
    for name in ("alpha", "beta"):
        backend.kube.create_pool(backend.namespace, name, POOL_SPEC)
        eventually(lambda name=name: backend.kube.get("Deployment", backend.namespace,  # type: ignore[misc]
                                                      f"{name}-spot"),
                   lambda d: d is not None, what=f"{name}'s Deployment")
    pool = backend.kube.get_pool(backend.namespace, "alpha")
    assert pool is not None and FINALIZER in pool["metadata"].get("finalizers", [])

    # Step 1, scoped to the test's namespace (other tests share a real cluster).
    step = [("-n" if a == "--all-namespaces" else a) for a in readme_command("delete", "inferencepools")]
    step.insert(step.index("-n") + 1, backend.namespace)
    backend.kubectl(*step)
    assert not pool_exists(backend, "alpha") and not pool_exists(backend, "beta")
    for name in ("alpha", "beta"):  # their objects follow by garbage collection
        eventually(lambda name=name: backend.kube.get("Deployment", backend.namespace,  # type: ignore[misc]
                                                      f"{name}-spot"),
                   lambda d: d is None, timeout=90, what=f"{name}'s Deployment collected")


def test_a_pool_left_behind_by_a_removed_operator_is_freed_by_the_readme_command(backend: Backend) -> None:
    operator = backend.operator()
    backend.kube.create_pool(backend.namespace, "orphan", POOL_SPEC)
    eventually(lambda: backend.kube.get_pool(backend.namespace, "orphan"),
               lambda p: p is not None and FINALIZER in p["metadata"].get("finalizers", []),
               what="the operator's finalizer on the pool")
    operator.stop()  # the wrong order: the operator went first
    backend.kubectl("delete", "inferencepool", "orphan", "-n", backend.namespace, "--wait=false")
    stuck = backend.kube.get_pool(backend.namespace, "orphan")
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp"), "a pool with a finalizer must wait"

    command = [{"NAME": "orphan", "NAMESPACE": backend.namespace}.get(a, a)
               for a in readme_command("patch", "inferencepool")]
    backend.kubectl(*command)
    eventually(lambda: pool_exists(backend, "orphan"), lambda exists: not exists, timeout=30,
               what="the pool gone once its finalizer is removed")
