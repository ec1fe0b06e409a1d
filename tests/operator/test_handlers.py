"""The Kopf wiring: what runs where."""

import inspect
from typing import Any

import kopf

import controller.handlers  # registers the handlers


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
    runtime.evaluated_generations[key] = 3
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
