"""One request of a trace, and what became of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Outcome", "SimRequest"]

Outcome = Literal["pool", "api", "lost"]


@dataclass(slots=True, eq=False)
class SimRequest:
    """A request as a trace gives it (arrival, token lengths); the simulation fills in the rest.

    Times are seconds from the start of the trace. ``eq=False``: two requests are never equal by value.
    """

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    first_token_at: float | None = None  # when the first output token was produced
    finished_at: float | None = None
    served_by: Outcome | None = None  # None while in flight
    preemptions: int = 0  # times the engine evicted it to free KV cache (recomputed after)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.arrival
