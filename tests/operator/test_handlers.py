"""The Kopf wiring: what runs where."""

import inspect

import kopf

import controller.handlers  # noqa: F401  # registers the handlers


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
