"""
A stand-in kubelet for every Node of the embedded world: it ends the pods that are being deleted.

When a pod bound to an existing Node gets a ``deletionTimestamp`` (a graceful DELETE, an eviction),
the kubelet of that node terminates it as pkg/kubelet/kuberuntime/kuberuntime_container.go's
``killContainer`` does, then deletes it for good with grace 0 (the kubelet's final delete, after
which the API server removes the object):

* If a :class:`Container` is attached to the pod (``FakeKubelet.attach``, ``DevCluster.attach_container``):
  the ``preStop`` hook of the pod's first container runs first, if it is ``exec`` of ``sleep N``
  (``["sleep", "5"]``, ``["/bin/sh", "-c", "sleep 5"]``) or the ``sleep`` action, for N seconds but no
  longer than the grace; if less than 2 seconds of the grace are left then, the container still gets 2
  (``minimumGracePeriodInSeconds``, the real kubelet's one-off extension). Then SIGTERM: the pod's
  ``Ready`` and ``ContainersReady`` conditions go False and ``on_sigterm`` is awaited for what is left
  of the grace; if it has not returned by then it is cancelled (SIGKILL). Last, ``on_kill`` is called:
  the container is gone. A pod deleted at once (grace 0, its node deleted) has ``on_kill`` called at once.
* Without an attached container the pod is removed as soon as its ``deletionTimestamp`` is set, as
  KWOK's pod stages do (they run no ``preStop`` and send no signal); a real kubelet would run the
  ``preStop`` hook and wait for the containers to exit.

A shortened grace (a second DELETE) shortens the wait; a pod on a node that does not exist is not
ended by anyone (as on a real cluster, until something force-deletes it). While terminating, the pod
stays ``Running``.

Differences: a real kubelet keeps running readiness probes during termination (pkg/kubelet/prober/worker.go
stops only liveness and startup probes), so its Ready condition goes False when the probe fails or the
containers exit; here it goes False when SIGTERM is sent, as if the server stopped answering its probe
at once. Only one container per pod; ``preStop`` ``httpGet`` and other commands are not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from devkube import errors
from devkube.store import ObjectStore, WatchEvent, now_utc, timestamp

logger = logging.getLogger(__name__)

PodKey = tuple[str, str]  # namespace, name

# A minimal shutdown window for avoiding unnecessary SIGKILLs (kuberuntime_manager.go).
MINIMUM_GRACE_SECONDS = 2.0
_SLEEP_COMMAND = re.compile(r"^\s*(?:exec\s+)?sleep\s+(\d+(?:\.\d+)?)\s*;?\s*$")


@dataclasses.dataclass
class Container:
    """What runs in a pod, as far as termination goes (e.g. a fake vLLM replica bound to the pod).

    ``on_sigterm`` is awaited after the preStop hook, for at most what is left of the grace period
    (a drain: stop taking requests, finish the ones in flight); ``on_kill`` is called once at the very
    end, when the container is gone (it returned, was SIGKILLed, or its pod was force-deleted).
    The kubelet fills in ``sigterm_sent`` and ``killed`` (``on_sigterm`` ran out of time or was cut off).
    """

    on_sigterm: Callable[[], Awaitable[None]] | None = None
    on_kill: Callable[[], None] | None = None
    sigterm_sent: bool = dataclasses.field(default=False, init=False)
    killed: bool = dataclasses.field(default=False, init=False)
    gone: bool = dataclasses.field(default=False, init=False)


@dataclasses.dataclass
class _Termination:
    uid: str
    started: float  # loop time of the deletion request
    requested: float  # the pod's deletionGracePeriodSeconds as last seen
    grace: float  # what the kubelet grants (at least 2 s after SIGTERM)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.grace


def prestop_sleep_seconds(pod: Mapping[str, Any]) -> float:
    """The preStop ``sleep N`` of the pod's first container (exec or the sleep action), or 0."""
    containers = (pod.get("spec") or {}).get("containers") or []
    pre_stop = ((containers[0].get("lifecycle") or {}).get("preStop") or {}) if containers else {}
    if "sleep" in pre_stop:
        return float((pre_stop.get("sleep") or {}).get("seconds") or 0)
    command = [str(part) for part in ((pre_stop.get("exec") or {}).get("command") or [])]
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        text = f"sleep {command[1]}"
    elif len(command) == 3 and command[1] == "-c":
        text = command[2]  # sh -c 'sleep 5'
    else:
        return 0.0
    match = _SLEEP_COMMAND.match(text)
    return float(match.group(1)) if match else 0.0


class FakeKubelet:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.containers: dict[PodKey, Container] = {}
        self.errors: list[BaseException] = []  # failures of on_sigterm / on_kill callbacks
        self._terminations: dict[PodKey, _Termination] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.listeners.append(self._on_event)
        for pod in self.store.list_stored(self.store.resolve("", "v1", "pods")):
            self._consider(pod)

    def stop(self) -> None:
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        for termination in self._terminations.values():
            if termination.task is not None:
                termination.task.cancel()
        self._terminations.clear()
        self._loop = None

    # --- containers ---------------------------------------------------------------------------

    def attach(self, namespace: str, pod_name: str, container: Container) -> None:
        """Bind a container to an existing pod (404 if there is none); it goes when the pod goes."""
        pod = self.store.get(self.store.resolve("", "v1", "pods"), namespace, pod_name)
        self.containers[(namespace, pod_name)] = container
        self._consider(pod)  # a pod may be terminating already

    def detach(self, namespace: str, pod_name: str) -> Container | None:
        return self.containers.pop((namespace, pod_name), None)

    # --- events -------------------------------------------------------------------------------

    def _on_event(self, event: WatchEvent) -> None:
        if (event.resource.group, event.resource.plural) != ("", "pods"):
            return
        key = (event.object["metadata"]["namespace"], event.object["metadata"]["name"])
        if event.type == "DELETED":
            termination = self._terminations.pop(key, None)
            if termination is not None and termination.task is not None:
                termination.task.cancel()
            container = self.containers.pop(key, None)
            if container is not None and not container.gone and self._loop is not None:
                container.killed = True  # deleted before its container stopped: a force delete, a lost node
                self._loop.call_soon(self._kill, container)
            return
        self._consider(event.object)

    def _consider(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        if not meta.get("deletionTimestamp") or not node or self._loop is None:
            return
        if self.store.find_stored(self.store.resolve("", "v1", "nodes"), None, node) is None:
            return  # no kubelet serves a node that does not exist
        key = (meta["namespace"], meta["name"])
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        termination = self._terminations.get(key)
        if termination is not None and termination.uid == meta["uid"]:
            if grace < termination.requested:  # a second DELETE shortened the grace
                termination.requested = termination.grace = grace
                termination.changed.set()
            return
        termination = _Termination(uid=meta["uid"], started=self._loop.time(), requested=grace, grace=grace)
        self._terminations[key] = termination
        termination.task = self._loop.create_task(self._terminate(key, termination), name=f"kubelet {key}")

    # --- termination --------------------------------------------------------------------------

    async def _terminate(self, key: PodKey, termination: _Termination) -> None:
        container = self.containers.get(key)
        try:
            if container is not None:
                await self._stop_container(key, container, termination)
        finally:
            if container is not None:
                self.containers.pop(key, None)
                self._kill(container)
        if self._terminations.get(key) is termination:
            del self._terminations[key]
        self._final_delete(key, termination.uid)

    async def _stop_container(self, key: PodKey, container: Container, termination: _Termination) -> None:
        pod = self.store.find_stored(self.store.resolve("", "v1", "pods"), *key) or {}
        sleep = prestop_sleep_seconds(pod)
        if sleep > 0 and termination.grace > 0:
            started = termination.started
            await self._wait(termination, lambda: min(started + sleep, termination.deadline))
        assert self._loop is not None
        if termination.grace > 0 and termination.deadline - self._loop.time() < MINIMUM_GRACE_SECONDS:
            termination.grace = self._loop.time() + MINIMUM_GRACE_SECONDS - termination.started
        container.sigterm_sent = True
        self._mark_not_ready(key)
        if container.on_sigterm is None:
            return
        stopping = asyncio.ensure_future(container.on_sigterm())
        try:
            finished = await self._wait(termination, lambda: termination.deadline, stopping)
        finally:
            if not stopping.done():
                stopping.cancel()
                container.killed = True
        if finished and stopping.exception() is not None:
            self.errors.append(stopping.exception())  # type: ignore[arg-type]
        if not finished:
            container.killed = True

    async def _wait(
        self, termination: _Termination, until: Callable[[], float], work: asyncio.Future[None] | None = None
    ) -> bool:
        """Wait for ``work`` (or just time) until ``until()`` (loop time, re-read when the grace shrinks);
        True if the work finished in time."""
        assert self._loop is not None
        while True:
            if work is not None and work.done():
                return True
            remaining = until() - self._loop.time()
            if remaining <= 0:
                return False
            termination.changed.clear()
            changed: asyncio.Future[Any] = asyncio.ensure_future(termination.changed.wait())
            waiting: set[asyncio.Future[Any]] = {changed} if work is None else {changed, work}
            try:
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()

    def _mark_not_ready(self, key: PodKey) -> None:
        pods = self.store.resolve("", "v1", "pods")
        pod = self.store.find_stored(pods, *key)
        if pod is None:
            return
        status = dict(pod.get("status") or {})
        stamp = timestamp(now_utc())
        conditions = []
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Ready", "ContainersReady") and condition.get("status") != "False":
                condition = {**condition, "status": "False", "reason": "ContainersNotReady",
                             "message": "the container is shutting down", "lastTransitionTime": stamp}
            conditions.append(condition)
        status["conditions"] = conditions
        status["containerStatuses"] = [
            {**container, "ready": False} for container in status.get("containerStatuses") or []
        ]
        with contextlib.suppress(errors.ApiError):  # gone meanwhile
            self.store.write_status(pods, key[0], key[1], status)

    def _kill(self, container: Container) -> None:
        if container.gone:
            return
        container.gone = True
        if container.on_kill is not None:
            try:
                container.on_kill()
            except Exception as e:
                logger.exception("A container's on_kill failed")
                self.errors.append(e)

    def _final_delete(self, key: PodKey, uid: str) -> None:
        pods = self.store.resolve("", "v1", "pods")
        with contextlib.suppress(errors.ApiError):  # gone already, or another pod of that name now
            self.store.delete(pods, key[0], key[1], preconditions={"uid": uid}, grace_period_seconds=0)
