"""Bounded polling for tests: wait for a condition, fail with the last value seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


def eventually(probe: Callable[[], T], accept: Callable[[T], bool], *, timeout: float = 20.0,
               interval: float = 0.1, what: str = "condition") -> T:
    """Call ``probe`` until ``accept`` holds for its result; raise with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not accept(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)
        last = probe()
    return last
