"""Where the real traces are for these tests: ``../shared/data`` beside the checkout (data/README.md).

A fresh clone of a local checkout finds them beside the repository it was cloned from. Where they are
nowhere (the project runs without them: the synthetic trace and the model of reclaims are its defaults),
the tests that read them are skipped and say why; every other test runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


def _origin() -> Path | None:
    """The local repository this checkout was cloned from, if it was cloned from one."""
    try:
        url = subprocess.run(["git", "-C", str(REPOSITORY), "remote", "get-url", "origin"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.replace("file://", "") else None
    return path if path is not None and path.is_dir() else None


def find_real_data() -> Path | None:
    candidates = [Path(os.environ["POOLPILOT_DATA_DIR"])] if os.environ.get("POOLPILOT_DATA_DIR") else []
    candidates.append(REPOSITORY.parent / "shared" / "data")
    origin = _origin()
    if origin is not None:
        candidates.append(origin.resolve().parent / "shared" / "data")
    return next((c for c in candidates if (c / "traces").is_dir() and (c / "spot").is_dir()), None)


REAL_DATA = find_real_data()
if REAL_DATA is not None and not os.environ.get("POOLPILOT_DATA_DIR"):
    os.environ["POOLPILOT_DATA_DIR"] = str(REAL_DATA)  # what `default_data_dir()` reads


@pytest.fixture
def real_data() -> Path:
    if REAL_DATA is None:
        pytest.skip("the real traces are not beside this checkout (../shared/data, data/README.md)")
    return REAL_DATA
