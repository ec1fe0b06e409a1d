"""run_when_leading (controller/leadership.py) with a scripted elector: who runs when, and what ends it."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from controller.leadership import LOST_LEASE_EXIT_CODE, new_identity, run_when_leading


class ScriptedElector:
    """Leads once ``acquired`` is set; ``lost`` ends the lead through keep_renewing, ``lapse()`` locally."""

    identity = "me"

    def __init__(self) -> None:
        self.acquired = asyncio.Event()
        self.lost = asyncio.Event()
        self.leading = False
        self.released = 0
        self.loss_reason = "lost the Lease ns/poolpilot to other"

    def describe(self) -> str:
        return "ns/poolpilot"

    def is_leading(self) -> bool:
        return self.leading

    def lapse(self) -> None:
        self.leading = False

    async def acquire(self) -> None:
        await self.acquired.wait()
        self.leading = True

    async def keep_renewing(self) -> str:
        await self.lost.wait()
        self.leading = False
        return self.loss_reason

    async def release(self) -> bool:
        self.released += 1
        self.leading = False
        return True


class Operator:
    """Stands for Kopf: runs until its stop flag is set or ``finish`` is; records what it saw."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.cancelled = False
        self.stop_flag: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self, stop_flag: asyncio.Event) -> None:
        self.stop_flag = stop_flag
        self.started.set()
        try:
            waits = [asyncio.ensure_future(stop_flag.wait()), asyncio.ensure_future(self.finish.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail is not None:
            raise self.fail


async def test_the_operator_runs_only_while_leading_and_a_clean_stop_releases_the_lease() -> None:
    elector, operator = ScriptedElector(), Operator()
    roles: list[bool] = []
    running = asyncio.create_task(run_when_leading(elector, operator, on_role=roles.append))
    await asyncio.sleep(0.2)
    assert roles == [False] and not operator.started.is_set()  # a standby: no operator
    elector.acquired.set()
    await asyncio.wait_for(operator.started.wait(), 1)
    assert roles == [False, True]
    operator.finish.set()  # Kopf stopped on SIGTERM
    assert await asyncio.wait_for(running, 1) == 0
    assert elector.released == 1


async def test_a_lost_lease_ends_the_process_at_once(lost_reasons: list[str]) -> None:
    elector, operator = ScriptedElector(), Operator()
    elector.acquired.set()
    running = asyncio.create_task(run_when_leading(elector, operator, on_lost=lost_reasons.append))
    await asyncio.wait_for(operator.started.wait(), 1)
    elector.lost.set()
    assert await asyncio.wait_for(running, 1) == LOST_LEASE_EXIT_CODE
    assert lost_reasons == ["lost the Lease ns/poolpilot to other"]
    assert elector.released == 0  # nothing is written after the loss, not even a release
    assert operator.stop_flag is not None and operator.stop_flag.is_set()


async def test_a_lapse_seen_locally_ends_it_before_the_renewal_says_anything(lost_reasons: list[str]) -> None:
    elector, operator = ScriptedElector(), Operator()
    elector.acquired.set()
    running = asyncio.create_task(run_when_leading(elector, operator, on_lost=lost_reasons.append))
    await asyncio.wait_for(operator.started.wait(), 1)
    elector.lapse()  # the renewal still hangs (a stalled request), but the deadline passed
    assert await asyncio.wait_for(running, 1) == LOST_LEASE_EXIT_CODE
    assert len(lost_reasons) == 1 and "lapsed" in lost_reasons[0]


async def test_an_operator_that_fails_still_releases_the_lease() -> None:
    elector, operator = ScriptedElector(), Operator()
    elector.acquired.set()
    operator.fail = RuntimeError("Kopf crashed")
    operator.finish.set()
    with pytest.raises(RuntimeError, match="Kopf crashed"):
        await asyncio.wait_for(run_when_leading(elector, operator), 1)
    assert elector.released == 1


async def test_sigterm_while_standing_by_ends_it_with_nothing_to_release() -> None:
    elector, operator = ScriptedElector(), Operator()
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run_when_leading(elector, operator), 2) == 0
    assert not operator.started.is_set() and elector.released == 0


def test_two_processes_never_share_an_identity() -> None:
    identities = {new_identity("poolpilot-6d5f9c-abcde") for _ in range(100)}
    assert len(identities) == 100 and all(i.startswith("poolpilot-6d5f9c-abcde_") for i in identities)


@pytest.fixture
def lost_reasons() -> list[str]:
    return []
