"""A one-line progress bar for long simulations: label, bar, percent, simulated minutes.

It redraws in place (``\\r``) on a terminal only, unless forced on, and at most ten times a second of
wall time: the wall clock here is the user's, not the model's (the simulation never reads it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]

_BAR_WIDTH = 24
_MIN_REDRAW_SECONDS = 0.1  # ~10 redraws a second: smooth to the eye, negligible next to the run


class Progress:
    """Progress of one run through ``total_seconds`` of simulated time.

    ``enabled``: None (the default) draws only when ``stream`` is a terminal; True forces it, False
    silences it. ``clock`` is the wall clock that rate-limits the redraws (injectable for tests).
    """

    __slots__ = ("_active", "_clock", "_drawn_at", "_last_width", "_simulated", "_stream", "label", "total_seconds")

    def __init__(
        self,
        total_seconds: float,
        *,
        label: str,
        stream: TextIO,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_seconds = max(total_seconds, 0.0)
        self.label = label
        self._stream = stream
        self._clock = clock
        self._active = enabled if enabled is not None else _is_terminal(stream)
        self._drawn_at: float | None = None
        self._last_width = 0
        self._simulated = 0.0

    def update(self, simulated_seconds: float) -> None:
        """The run has reached ``simulated_seconds``; redraws if the last redraw is old enough."""
        self._simulated = simulated_seconds
        if not self._active:
            return
        now = self._clock()
        if self._drawn_at is not None and now - self._drawn_at < _MIN_REDRAW_SECONDS:
            return
        self._drawn_at = now
        self._draw()

    def close(self) -> None:
        """Draw the final state and end the line (nothing when inactive or never drawn)."""
        if self._active and self._drawn_at is not None:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
        self._active = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _draw(self) -> None:
        fraction = min(1.0, self._simulated / self.total_seconds) if self.total_seconds > 0 else 1.0
        filled = round(fraction * _BAR_WIDTH)
        text = (f"{self.label} [{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {fraction * 100:3.0f}%"
                f" {self._simulated / 60:.1f}/{self.total_seconds / 60:.1f} simulated min")
        padding = " " * max(0, self._last_width - len(text))  # wipe the rest of a longer previous line
        self._last_width = len(text)
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stream-like object without isatty
        return False
