"""Run an async context manager (the dev cluster, a fake vLLM fleet) on its own event loop in a thread.

Sync code (pytest sync tests, the demo, benchmarks) enters it with ``start()`` and leaves
with ``stop()``; a failure while entering is raised in the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

__all__ = ["LoopThread", "in_thread", "running_loop"]

C = TypeVar("C", bound=AbstractAsyncContextManager[Any])


@contextlib.contextmanager
def in_thread(context: C, *, name: str) -> Iterator[C]:
    """``context`` entered on its own loop in a background thread, for synchronous code; left on exit."""
    runner = LoopThread(context, name=name)
    runner.start()
    try:
        yield context
    finally:
        runner.stop()


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread:
    def __init__(self, context: AbstractAsyncContextManager[Any], *, name: str) -> None:
        self._context = context
        self._name = name
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"{self._name} did not start in time")
        if self._failure is not None:
            self._thread.join(timeout)
            raise self._failure

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self._failure = e
        finally:
            self._started.set()  # also on failures: start() must not wait for nothing

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._context:
            self._started.set()
            await self._stop.wait()
