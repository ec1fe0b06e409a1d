"""Serving the router's app: the runner every caller uses (CLI, tests, bench), and the process's main loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

__all__ = ["make_runner", "serve"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTDOWN_SECONDS = 10.0  # in-flight answers get this long to finish on SIGTERM


def make_runner(app: web.Application) -> web.AppRunner:
    """``handler_cancellation``: a client that disconnects cancels its handler, which closes the upstream
    request (aiohttp's default lets the handler run on). No access log: a line per request costs latency."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)


async def serve(app: web.Application, port: int, background: Coroutine[Any, Any, None], *,
                host: str | None = None) -> int:
    """Serve ``app`` at ``host`` (None: every address) and ``port`` until SIGTERM/SIGINT, or until
    ``background`` (discovery) ends; 0 for a signal, 1 if it cannot listen or the background task ended."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    runner = make_runner(app)
    try:
        await runner.setup()
        try:
            await web.TCPSite(runner, host=host, port=port).start()
        except OSError as error:  # taken, or an address this machine does not have
            log.error("cannot serve on %s port %d: %s", host or "every address", port, error.strerror or error)
            return 1
        log.info("router serving on %s port %d", host or "every address", port)
        return await _until_stopped(asyncio.create_task(background, name="discovery"), stopping)
    finally:
        background.close()  # if it never ran (no-op once awaited)
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)
        await runner.cleanup()


async def _until_stopped(task: asyncio.Task[None], stopping: asyncio.Event) -> int:
    stop_waiter = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([task, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            return 0
        error = None if task.cancelled() else task.exception()
        cause = "it returned" if error is None else f"{type(error).__name__}: {error}"
        log.error("discovery stopped (%s): the router cannot follow its pool", cause)
        return 1
    finally:
        stop_waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
