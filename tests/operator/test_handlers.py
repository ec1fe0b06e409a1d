"""The Kopf wiring: what runs where."""

import asyncio
import inspect
import logging
from typing import Any

import kopf
import pytest

import controller.handlers  # registers the handlers
from controller.reconcile import ReconcileResult
from controller.settings import OperatorSettings


def test_handlers_that_wake_pools_run_on_the_event_loop_not_in_worker_threads() -> None:
    # Kopf runs sync handlers in a thread pool; a wake-up there would set an asyncio.Event from the
    # wrong thread (not thread-safe: the waiting loop is not woken). Only index handlers, which
    # return values and touch no shared state, may stay sync.
    registry = kopf.get_default_registry()
    handlers = [*registry._watching.get_all_handlers(), *registry._activities.get_all_handlers()]
    assert handlers, "no handlers registered"
    ours = [h for h in handlers if h.fn.__module__ == "controller.handlers"]
    assert len(ours) >= 5, [h.id for h in ours]
    sync = [h.id for h in ours if not inspect.iscoroutinefunction(h.fn)]
    assert sync == []


def test_a_pool_event_wakes_its_loop_for_a_new_generation_only() -> None:
    """The loop's own status writes come back as pool events; waking on them would evaluate twice."""
    runtime = controller.handlers.Runtime(api=None, reader=None, settings=None)  # type: ignore[arg-type]
    key = ("llm", "pool")
    wakeup = runtime.wakeup_for(key)
    runtime.memories[key] = controller.handlers.PoolMemory(evaluated_generation=3)
    runtime.wake_for_generation(key, 3)
    assert not wakeup.is_set()
    runtime.wake_for_generation(key, 4)
    assert wakeup.is_set()


def test_the_pool_copy_is_reused_while_its_resource_version_stays() -> None:
    copied = controller.handlers._PoolCopy()
    raw: dict[str, Any] = {"metadata": {"resourceVersion": "7"}, "spec": {"a": [1]}, "status": {"b": 1}}
    body = kopf.Body(raw)  # type: ignore[arg-type]
    spec, status = copied.of(body)
    assert spec == {"a": [1]} and status == {"b": 1}
    raw["spec"]["a"].append(2)  # Kopf updates its live body in place
    assert copied.of(body)[0] is spec and spec == {"a": [1]}  # a copy, not the live body
    raw["metadata"]["resourceVersion"] = "8"
    assert copied.of(body)[0] == {"a": [1, 2]}


def test_no_more_pools_are_evaluated_at_once_than_the_slots_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand pools start together; their evaluations queue for slots instead of all running at once."""
    running, most, evaluated = 0, 0, set()

    async def slow_evaluation(api: Any, reader: Any, snapshot: Any, **_: Any) -> ReconcileResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        evaluated.add(snapshot.ref.name)
        return ReconcileResult(events=[], status_written=False, spec=None)

    monkeypatch.setattr(controller.handlers, "reconcile_pool", slow_evaluation)

    async def run() -> None:
        runtime = controller.handlers.Runtime(api=None, reader=None,  # type: ignore[arg-type]
                                              settings=OperatorSettings(), evaluation_slots=asyncio.Semaphore(3))
        memo = kopf.Memo(runtime=runtime)
        empty: dict[str, Any] = {name: {} for name in ("owned_deployments", "owned_services", "owned_pdbs",
                                                       "owned_service_accounts", "owned_roles",
                                                       "owned_role_bindings", "ready_pod_ips", "ready_router_ips",
                                                       "replica_pods", "node_notices")}
        daemon: Any = controller.handlers.evaluate_pool_continuously
        raw: list[Any] = [{"metadata": {"name": f"p{i}", "namespace": "llm", "uid": f"u{i}", "resourceVersion": "1",
                                        "generation": 1}, "spec": {}} for i in range(10)]
        loops = [asyncio.create_task(daemon(body=kopf.Body(body), memo=memo, logger=logging.getLogger("test"),
                                            **empty)) for body in raw]
        while len(evaluated) < 10:
            await asyncio.sleep(0.01)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert evaluated == {f"p{i}" for i in range(10)}
    assert most == 3


def test_until_the_watch_brings_a_status_write_back_the_next_evaluation_starts_from_it() -> None:
    memory = controller.handlers.PoolMemory()
    cached = {"interruptions": [{"pod": "a", "outcome": "Draining"}]}
    assert memory.status_after_writes("41", cached) is cached
    written = {"interruptions": [{"pod": "a", "outcome": "Drained"}]}
    memory.written_status = ("42", written)  # our write made version 42
    assert memory.status_after_writes("41", cached) is written  # the cache still shows version 41
    assert memory.status_after_writes("42", {"x": 1}) == {"x": 1}  # our write arrived: the cache is current
    assert memory.written_status is None


def test_a_cache_two_writes_behind_does_not_bring_an_older_status_back() -> None:
    """Found by the demo: write 1 made version 41, write 2 version 42; the watch then brought 41, and the
    next evaluation started from write 1's status, before write 2's drain, and posted ReplicaDrained twice."""
    memory = controller.handlers.PoolMemory()
    first = {"interruptions": [{"pod": "a", "outcome": "Draining"}]}
    second = {"interruptions": [{"pod": "a", "outcome": "Drained"}]}
    memory.written_status = ("42", second)
    assert memory.status_after_writes("41", first) is second
    assert memory.status_after_writes("42", second) is second
