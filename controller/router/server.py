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

SHUTDOWN_SECONDS = 10.0  # in-flight answers get this long to finish on SIGTERM


def make_runner(app: web.Application) -> web.AppRunner:
    """``handler_cancellation``: a client that disconnects cancels its handler, which closes the upstream
    request (aiohttp's default lets the handler run on). No access log: a line per request costs latency."""
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)


async def serve(app: web.Application, port: int, background: Coroutine[Any, Any, None]) -> int:
    """Serve ``app`` on every address at ``port`` until SIGTERM/SIGINT, or until ``background`` (discovery)
    ends; 0 for a signal, 1 if the background task failed or returned."""
    runner = make_runner(app)
    await runner.setup()
    task = asyncio.create_task(background, name="discovery")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await web.TCPSite(runner, host=None, port=port).start()
        log.info("router serving on port %d", port)
        stop_waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait([task, stop_waiter], return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        if task.done():
            error = task.exception() if not task.cancelled() else None
            log.error("discovery stopped (%s): the router cannot follow its pool", type(error).__name__)
            return 1
        return 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await runner.cleanup()
