"""What the router knows of its pool at a moment: the fallback mode and the replicas it may send to.

Discovery (the pool's status and the EndpointSlices of ``NAME-replicas``, watched) replaces the view
whole; the proxy reads it per request. Both sides meet only here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from controller.api.status import FallbackMode

__all__ = ["RouterView", "ViewHolder"]


@dataclass(frozen=True)
class RouterView:
    mode: FallbackMode = "Off"
    # Base URLs ("http://10.0.3.7:8000") of the replicas that are ready and serving, never terminating.
    replicas: tuple[str, ...] = ()
    # False until discovery has read both the pool and its slices once: the router is not ready before.
    known: bool = False
    # status.fallback.inFlightPerReplica: what one replica takes before a request spills (None: not observed).
    in_flight_per_replica: int | None = None


class ViewHolder:
    """The current view, swapped whole; ``changed`` wakes whoever waits for the next one."""

    def __init__(self, view: RouterView | None = None) -> None:
        self.view = view or RouterView()
        self.changed = asyncio.Condition()

    async def replace(self, view: RouterView) -> None:
        async with self.changed:
            self.view = view
            self.changed.notify_all()
