"""Where one request goes: a replica (least outstanding requests first) or the hosted API, and why.

Pure: counts and decisions, no I/O. The proxy asks ``route`` before sending, and ``spill_after`` when the
pool answered (or did not) before any byte went to the client; after that a request is never moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from controller.api.status import FallbackMode

__all__ = ["PoolLoad", "Route", "SpillReason", "budget_per_replica", "route", "spill_after"]

SpillReason = Literal["status_429", "status_503", "refused", "budget", "full", "no_replicas"]


@dataclass(frozen=True, slots=True)
class Route:
    backend: Literal["pool", "api", "none"]  # none: nowhere to send it (answer 503)
    replica: str | None = None
    reason: SpillReason | None = None  # why it goes to the API


_TO_API: dict[SpillReason, Route] = {
    reason: Route("api", reason=reason)
    for reason in ("status_429", "status_503", "refused", "budget", "full", "no_replicas")
}
_NOWHERE = Route("none")


class PoolLoad:
    """Requests in flight to the pool: per replica (for picking) and in all (for the budget)."""

    def __init__(self) -> None:
        self.outstanding: dict[str, int] = {}
        self.total = 0
        self._turn = 0  # where the scan starts: equal loads take turns

    def pick(self, replicas: tuple[str, ...]) -> str:
        """The replica with the fewest outstanding requests; among equals, each in turn."""
        count = len(replicas)
        start = self._turn % count
        self._turn = start + 1
        outstanding = self.outstanding
        best = replicas[start]
        fewest = outstanding.get(best, 0)
        for offset in range(1, count):
            if fewest == 0:
                break
            candidate = replicas[(start + offset) % count]
            load = outstanding.get(candidate, 0)
            if load < fewest:
                best, fewest = candidate, load
        return best

    def started(self, replica: str) -> None:
        self.outstanding[replica] = self.outstanding.get(replica, 0) + 1
        self.total += 1

    def finished(self, replica: str) -> None:
        left = self.outstanding.get(replica, 0) - 1
        if left > 0:
            self.outstanding[replica] = left
        else:  # replicas come and go: keep no entry for an idle one
            self.outstanding.pop(replica, None)
        self.total -= 1


def budget_per_replica(configured: int, observed: int | None, *, routers: int = 1) -> int:
    """One router's in-flight budget per replica: its configured one (--max-num-seqs plus the saturation queue,
    split over the routers), or its share of what the pool's status says a replica takes, when that is less."""
    if observed is None:
        return configured
    return max(1, min(configured, math.ceil(observed / max(1, routers))))


def route(mode: FallbackMode, replicas: tuple[str, ...], load: PoolLoad, *, budget_per_replica: int,
          has_provider: bool) -> Route:
    """Before sending: the pool, the API, or nowhere.

    Without a provider every mode is ``Off``: the pool or nothing. ``Off`` never goes to the API.
    """
    if has_provider and mode == "Full":
        return _TO_API["full"]
    if not replicas:
        return _TO_API["no_replicas"] if has_provider and mode == "Overflow" else _NOWHERE
    if has_provider and mode == "Overflow" and load.total >= budget_per_replica * len(replicas):
        return _TO_API["budget"]
    return Route("pool", replica=load.pick(replicas))


def spill_after(mode: FallbackMode, *, has_provider: bool, status: int | None) -> Route | None:
    """After the pool answered ``status`` (None: it refused the connection), before any byte went to the
    client: the API route if the request moves there, else None (the pool's answer stands)."""
    if not has_provider or mode != "Overflow":
        return None
    if status is None:
        return _TO_API["refused"]
    if status == 429:
        return _TO_API["status_429"]
    if status == 503:
        return _TO_API["status_503"]
    return None
