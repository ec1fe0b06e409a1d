"""Run the operator only while this replica leads (controller/leader.py), and stop acting the moment it does not.

``run_when_leading`` waits as a standby (no Kopf, no write but to the Lease), runs the operator while it
leads, and on a clean shutdown (SIGTERM) stops the operator, releases the Lease and returns 0. When the
lead is lost (another holder, no renewal within the renew deadline, or the local check of that deadline
failing after a stall) it exits the process at once, as kube-controller-manager does: no queued write
(an Event in Kopf's queue, an evaluation mid-apply) may follow the loss, and the Deployment's restart
brings the container back as a standby. Until the exit, the write gate (KubeApi's ``write_gate``, and
Kopf's session: ``Leadership.write_gate``) already refuses every write, because it asks ``is_leading()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol

__all__ = ["LOST_LEASE_EXIT_CODE", "Leadership", "exit_at_once", "new_identity", "run_when_leading"]

logger = logging.getLogger("poolpilot.leader")

# The exit status after losing the Lease: distinct from a crash (1) and from bad settings (2).
LOST_LEASE_EXIT_CODE = 3
# How often the local deadline is checked while leading: a stalled renewal is noticed this soon.
GUARD_INTERVAL_SECONDS = 0.1


class Elector(Protocol):
    """What this module needs of controller/leader.py's LeaderElector."""

    identity: str

    def is_leading(self) -> bool: ...
    def describe(self) -> str: ...
    async def acquire(self) -> None: ...
    async def keep_renewing(self) -> str: ...
    async def release(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Leadership:
    """What the handlers need to know of the election (kept in Kopf's memo as ``leadership``): the identity
    their writes carry in the User-Agent, and the gate every write asks first (None: no election)."""

    identity: str
    write_gate: Callable[[], bool] | None = None


def new_identity(instance: str) -> str:
    """The pod name plus a random suffix: two processes (a restarted container, two local runs) never share
    an identity, so a new process never takes an old one's Lease for its own."""
    return f"{instance}_{secrets.token_hex(4)}"


def exit_at_once(reason: str) -> NoReturn:
    """Log, flush the logs, and end the process now: no cleanup, no handler, no queued write runs after this."""
    logger.error("%s: stopping at once (exit %d); the container restarts as a standby", reason, LOST_LEASE_EXIT_CODE)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(LOST_LEASE_EXIT_CODE)


async def run_when_leading(elector: Elector, run_operator: Callable[[asyncio.Event], Awaitable[None]], *,
                           on_role: Callable[[bool], None] | None = None,
                           on_lost: Callable[[str], None] = exit_at_once) -> int:
    """Stand by, lead, and return 0 after a clean shutdown; ``on_role(leading)`` hears each role taken.

    ``run_operator(stop_flag)`` runs the operator until ``stop_flag`` is set or it stops by itself (Kopf on
    SIGTERM). ``on_lost(reason)`` ends the process (the default); if it returns (tests), the operator is
    stopped and LOST_LEASE_EXIT_CODE returned.
    """
    shutdown = asyncio.Event()  # SIGTERM or SIGINT, before Kopf installs its own handlers
    stop_flag = asyncio.Event()

    def request_shutdown() -> None:
        shutdown.set()
        stop_flag.set()

    _install_signal_handlers(request_shutdown)
    if on_role is not None:
        on_role(False)
    if not await _first(elector.acquire(), shutdown.wait()):
        logger.info("shutting down as a standby")
        return 0
    if on_role is not None:
        on_role(True)
    guard = asyncio.create_task(_guard(elector), name="leader-guard")
    operator = asyncio.create_task(_run(run_operator, stop_flag), name="operator")
    await asyncio.wait({guard, operator}, return_when=asyncio.FIRST_COMPLETED)
    if guard.done():
        on_lost(guard.result())
        stop_flag.set()
        operator.cancel()
        with contextlib.suppress(BaseException):
            await operator
        return LOST_LEASE_EXIT_CODE
    guard.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await guard
    try:
        operator.result()  # re-raises when the operator failed; the Lease is released all the same
    finally:
        await elector.release()
    logger.info("the operator stopped; the Lease %s is released", elector.describe())
    return 0


async def _run(run_operator: Callable[[asyncio.Event], Awaitable[None]], stop_flag: asyncio.Event) -> None:
    await run_operator(stop_flag)


async def _first(acquire: Awaitable[None], shutdown: Awaitable[bool]) -> bool:
    """True when ``acquire`` finished first; False when ``shutdown`` did (acquiring is then cancelled)."""
    acquiring = asyncio.ensure_future(acquire)
    waiting = asyncio.ensure_future(shutdown)
    await asyncio.wait({acquiring, waiting}, return_when=asyncio.FIRST_COMPLETED)
    for task in (acquiring, waiting):
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if acquiring.done() and not acquiring.cancelled():
        acquiring.result()
        return True
    return False


async def _guard(elector: Elector) -> str:
    """Returns why the lead ended: the renewal says so, or the local deadline check does first."""
    renewing = asyncio.create_task(elector.keep_renewing(), name="lease-renewal")
    try:
        while not renewing.done():
            if not elector.is_leading():
                return f"the lead on the Lease {elector.describe()} lapsed: no renewal within the renew deadline"
            await asyncio.wait({renewing}, timeout=GUARD_INTERVAL_SECONDS)
        try:
            return renewing.result()
        except Exception as error:  # a bug in the renewal must not leave a leader that no longer renews
            logger.exception("the Lease renewal failed")
            return f"the Lease renewal failed: {error!r}"
    finally:
        renewing.cancel()


def _install_signal_handlers(handler: Callable[[], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler)
