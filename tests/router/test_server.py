"""The router process's main loop: it serves while discovery runs, stops on SIGTERM, and exits non-zero if
discovery ends (a router that cannot follow its pool must not go on routing on an old view)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import aiohttp
import pytest

from controller.router.proxy import build_app
from controller.router.server import serve
from controller.router.settings import RouterSettings
from controller.router.view import RouterView, ViewHolder
from devkube.localrun import free_port

SETTINGS = RouterSettings(namespace="team-a", pool="chat", served_model="m")


async def get(port: int, path: str) -> int:
    async with aiohttp.ClientSession(trust_env=False) as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as answer:
        return answer.status


async def test_serves_until_sigterm() -> None:
    port = free_port()
    holder = ViewHolder()
    seen: list[int] = []
    cancelled = asyncio.Event()

    async def discovery() -> None:
        try:
            seen.append(await get(port, "/readyz"))  # nothing known yet
            await holder.replace(RouterView(mode="Off", replicas=(), known=True))
            seen.append(await get(port, "/readyz"))
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    assert await serve(build_app(SETTINGS, holder), port, discovery()) == 0
    assert seen == [503, 200] and cancelled.is_set()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")  # closed


@pytest.mark.parametrize("failure", [RuntimeError("watch failed"), None])
async def test_exits_1_when_discovery_ends(failure: Exception | None, caplog: pytest.LogCaptureFixture) -> None:
    async def discovery() -> None:
        await asyncio.sleep(0.01)
        if failure is not None:
            raise failure

    assert await serve(build_app(SETTINGS, ViewHolder()), free_port(), discovery()) == 1
    assert "discovery stopped" in caplog.text and ("watch failed" in caplog.text) == (failure is not None)


async def test_a_port_in_use_is_one_clear_log_line_and_exit_1_and_discovery_never_starts(
        caplog: pytest.LogCaptureFixture) -> None:
    started: list[bool] = []

    async def discovery() -> None:
        started.append(True)

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await serve(build_app(SETTINGS, ViewHolder()), port, discovery()) == 1
    assert started == []
    assert f"cannot serve on every address port {port}" in caplog.text and "Traceback" not in caplog.text
