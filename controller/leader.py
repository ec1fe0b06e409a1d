"""Leader election through a ``coordination.k8s.io/v1`` Lease, with client-go's rules
(staging/src/k8s.io/client-go/tools/leaderelection/leaderelection.go and resourcelock/leaselock.go).

* A candidate takes the Lease when nobody holds it (``holderIdentity`` empty: released), or when its record
  has not changed for the holder's ``leaseDurationSeconds`` as measured on the candidate's OWN monotonic
  clock since the candidate last saw it change. The times in the record are never compared with this
  replica's clock: the replicas' clocks may disagree, only their rates must roughly agree.
* Every write is conditional on the resourceVersion read: of two candidates, one wins, the other gets 409.
* The leader renews every ``retry_period``; when it could not renew within ``renew_deadline`` (or sees
  another holder) it has lost. ``is_leading()`` is a local check of the same deadline, so a leader whose
  event loop stalled (a long pause, SIGSTOP) knows it lost before its renewal even runs again.
* A clean shutdown releases the Lease as client-go's ReleaseOnCancel does (empty holder,
  ``leaseDurationSeconds`` 1): a standby takes it at its next look instead of waiting for the expiry.

No fencing, as client-go has none: safety rests on ``renew_deadline < lease_duration``, the leader stopping
before anyone may take over, with ``lease_duration - renew_deadline`` of margin for a write in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from controller.kube.lease import LeaseConflict, LeaseError, LeaseRecord, micro_time

__all__ = ["ElectionTimings", "LeaderElector", "LeaseStore"]

logger = logging.getLogger("poolpilot.leader")

Manifest = dict[str, Any]
# client-go's JitterFactor: its checks use it; a standby here waits at most 10 % more than retry_period
# between looks, so that the worst-case takeover stays lease_duration + 2.2 x retry_period.
JITTER_FACTOR = 1.2
STANDBY_JITTER = 0.1


class LeaseStore(Protocol):
    """What the elector needs of the Lease (controller/kube/lease.py's LeaseApi)."""

    def describe(self) -> str: ...
    async def get(self, *, timeout_seconds: float) -> Manifest | None: ...
    async def create(self, record: LeaseRecord, *, timeout_seconds: float) -> Manifest: ...
    async def replace(self, lease: Manifest, record: LeaseRecord, *, timeout_seconds: float) -> Manifest: ...


@dataclasses.dataclass(frozen=True)
class ElectionTimings:
    lease_duration_seconds: int
    renew_deadline_seconds: float
    retry_period_seconds: float

    def __post_init__(self) -> None:
        # As client-go's NewLeaderElector requires.
        if not self.retry_period_seconds > 0:
            raise ValueError("the retry period must be greater than zero")
        if not self.lease_duration_seconds > self.renew_deadline_seconds:
            raise ValueError("the lease duration must be greater than the renew deadline")
        if not self.renew_deadline_seconds > JITTER_FACTOR * self.retry_period_seconds:
            raise ValueError(f"the renew deadline must be greater than {JITTER_FACTOR} x the retry period")

    @property
    def request_timeout_seconds(self) -> float:
        """Each Lease request gives up after this long: a renewal that stalls leaves time for another try."""
        return self.renew_deadline_seconds / 2


class LeaderElector:
    """Acquire, renew and release one Lease as ``identity``."""

    def __init__(self, leases: LeaseStore, identity: str, timings: ElectionTimings, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        if not identity:
            raise ValueError("the identity must not be empty")
        self.identity = identity
        self.timings = timings
        self._leases = leases
        self._clock = clock
        self._wall_clock = wall_clock
        self._lease: Manifest | None = None  # the Lease as last read or written, for the next conditional PUT
        self._record: LeaseRecord | None = None
        self._observed_at = 0.0  # when (monotonic) the record was last seen to change
        self._renewed_at: float | None = None  # when the last successful acquire or renew was SENT
        self._reported_leader: str | None = None
        self._last_error: str | None = None

    # --- what the rest of the operator asks ----------------------------------------------------------

    def is_leading(self) -> bool:
        """Holds the Lease, renewed (the request sent) less than renew_deadline ago on this clock."""
        return (self._renewed_at is not None and self._record is not None and self._record.holder == self.identity
                and self._clock() - self._renewed_at < self.timings.renew_deadline_seconds)

    @property
    def leader(self) -> str:
        """The holder last seen ("" when nobody holds the Lease, or before it was read)."""
        return self._record.holder if self._record is not None else ""

    def describe(self) -> str:
        return self._leases.describe()

    # --- the election ---------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait as a standby until this replica holds the Lease."""
        logger.info("leader election on Lease %s as %s (lease %d s, renew deadline %g s, retry %g s)",
                    self.describe(), self.identity, self.timings.lease_duration_seconds,
                    self.timings.renew_deadline_seconds, self.timings.retry_period_seconds)
        while not await self.try_acquire_or_renew(timeout_seconds=self.timings.request_timeout_seconds):
            if self.leader and self.leader != self._reported_leader:
                self._reported_leader = self.leader
                logger.info("standing by: %s leads", self.leader)
            elif not self.leader and self._reported_leader is None:
                self._reported_leader = ""
                logger.info("standing by: the Lease %s is not available yet", self.describe())
            await asyncio.sleep(self.timings.retry_period_seconds * (1 + STANDBY_JITTER * random.random()))
        self._reported_leader = self.identity
        logger.info("became leader: %s holds the Lease %s", self.identity, self.describe())

    async def keep_renewing(self) -> str:
        """Renew every retry_period while leading; returns why the lead ended (it never ends otherwise)."""
        deadline_seconds = self.timings.renew_deadline_seconds
        while True:
            await asyncio.sleep(self.timings.retry_period_seconds)
            while True:
                if self._renewed_at is None:
                    return "the Lease was released"
                remaining = self._renewed_at + deadline_seconds - self._clock()
                if remaining <= 0:
                    return f"could not renew the Lease {self.describe()} within {deadline_seconds:g} s"
                timeout = max(0.05, min(self.timings.request_timeout_seconds, remaining))
                if await self.try_acquire_or_renew(timeout_seconds=timeout):
                    break
                if self.leader != self.identity:
                    return f"lost the Lease {self.describe()} to {self.leader or 'nobody (released)'}"
                await asyncio.sleep(min(self.timings.retry_period_seconds,
                                        max(0.0, self._renewed_at + deadline_seconds - self._clock())))

    async def try_acquire_or_renew(self, *, timeout_seconds: float) -> bool:
        """One attempt: renew (fast path: a PUT of the Lease as last written), else read, then create the
        Lease, take it (free or expired) or renew it. True when this replica holds it now."""
        sent_at = self._clock()
        now = micro_time(self._wall_clock())
        wanted = LeaseRecord(holder=self.identity, lease_duration_seconds=self.timings.lease_duration_seconds,
                             acquire_time=now, renew_time=now, transitions=0)
        if self._holds() and self._valid(sent_at) and self._lease is not None and self._record is not None:
            renewal = dataclasses.replace(wanted, acquire_time=self._record.acquire_time,
                                          transitions=self._record.transitions)
            try:
                self._written(await self._leases.replace(self._lease, renewal, timeout_seconds=timeout_seconds),
                              sent_at)
                return True
            except LeaseError as error:
                logger.debug("renewing the Lease as last written failed (%s); reading it", error)
        try:
            lease = await self._leases.get(timeout_seconds=timeout_seconds)
            if lease is None:
                self._written(await self._leases.create(wanted, timeout_seconds=timeout_seconds), sent_at)
                return True
        except LeaseError as error:
            self._log_error(f"cannot read or create the Lease {self.describe()}: {error}")
            return False
        self._observe(lease)
        record = LeaseRecord.of(lease)
        if record.holder and record.holder != self.identity and self._valid(self._clock()):
            return False
        if record.holder == self.identity:
            wanted = dataclasses.replace(wanted, acquire_time=record.acquire_time, transitions=record.transitions)
        else:
            wanted = dataclasses.replace(wanted, transitions=record.transitions + 1)
        try:
            self._written(await self._leases.replace(lease, wanted, timeout_seconds=timeout_seconds), sent_at)
        except LeaseConflict:
            return False  # somebody else wrote it first: the next read shows who
        except LeaseError as error:
            self._log_error(f"cannot update the Lease {self.describe()}: {error}")
            return False
        return True

    async def release(self) -> bool:
        """Give the Lease up (clean shutdown), as client-go's ReleaseOnCancel: empty holder, duration 1 s."""
        if not self._holds() or self._lease is None or self._record is None:
            return True
        self._renewed_at = None  # stop acting first: the write gate closes before the Lease is given up
        now = micro_time(self._wall_clock())
        released = LeaseRecord(holder="", lease_duration_seconds=1, acquire_time=now, renew_time=now,
                               transitions=self._record.transitions)
        timeout = self.timings.request_timeout_seconds
        try:
            try:
                updated = await self._leases.replace(self._lease, released, timeout_seconds=timeout)
            except LeaseConflict:  # changed by someone (an annotation?): release it as it is now, if still ours
                current = await self._leases.get(timeout_seconds=timeout)
                if current is None or LeaseRecord.of(current).holder != self.identity:
                    return True
                updated = await self._leases.replace(current, released, timeout_seconds=timeout)
        except LeaseError as error:
            logger.error("could not release the Lease %s: %s; a standby takes over when it expires",
                         self.describe(), error)
            return False
        self._observe(updated)
        logger.info("released the Lease %s", self.describe())
        return True

    # --- bookkeeping ----------------------------------------------------------------------------------

    def _holds(self) -> bool:
        return self._record is not None and self._record.holder == self.identity

    def _valid(self, at: float) -> bool:
        """The record last seen has not expired yet, by the holder's duration, on this replica's clock."""
        return self._record is not None and at < self._observed_at + self._record.lease_duration_seconds

    def _observe(self, lease: Manifest) -> None:
        self._lease = lease
        record = LeaseRecord.of(lease)
        if record != self._record:
            self._record, self._observed_at = record, self._clock()

    def _written(self, lease: Manifest, sent_at: float) -> None:
        """Our write went through: we hold the Lease since the request was sent (not when it answered)."""
        self._observe(lease)
        self._observed_at = sent_at
        self._renewed_at = sent_at
        self._last_error = None

    def _log_error(self, message: str) -> None:
        # Once per distinct failure: a standby retries every retry_period while the API server is away.
        if message != self._last_error:
            logger.warning("%s", message)
            self._last_error = message
        else:
            logger.debug("%s", message)
