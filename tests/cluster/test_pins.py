"""The control plane's versions live in one place, cluster/go.mod, and agree with each other."""

from __future__ import annotations

import pathlib
import re

GO_MOD = pathlib.Path(__file__).resolve().parents[2] / "cluster" / "go.mod"


def _requirements() -> dict[str, str]:
    return dict(re.findall(r"^\s+(\S+) (v\S+)(?: // indirect)?$", GO_MOD.read_text(), flags=re.MULTILINE))


def _replacements() -> dict[str, str]:
    return dict(re.findall(r"^\s+(\S+) => \S+ (v\S+)$", GO_MOD.read_text(), flags=re.MULTILINE))


def test_every_staging_module_is_pinned_to_the_kubernetes_release() -> None:
    release = re.fullmatch(r"v1\.(\d+)\.(\d+)", _requirements()["k8s.io/kubernetes"])
    assert release is not None
    minor, patch = release.groups()
    assert int(minor) in (36, 37), "a current release: 1.36 or 1.37"
    staging = _replacements()
    assert len(staging) >= 30, staging
    assert set(staging.values()) == {f"v0.{minor}.{patch}"}, staging


def test_kwok_and_etcd_are_pinned() -> None:
    requirements = _requirements()
    assert requirements["sigs.k8s.io/kwok"].startswith("v0.")
    assert requirements["go.etcd.io/etcd/server/v3"].startswith("v3.")
