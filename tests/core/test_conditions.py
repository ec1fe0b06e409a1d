from datetime import UTC, datetime, timedelta

from controller.core.conditions import find_condition, format_time, set_condition

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def test_a_new_condition_gets_the_current_time_and_generation() -> None:
    conditions = set_condition([], "Ready", "False", "ReplicasNotReady", "0/1", generation=3, now=T0)
    (ready,) = conditions
    assert (ready.type, ready.status, ready.reason, ready.observed_generation) == ("Ready", "False",
                                                                                   "ReplicasNotReady", 3)
    assert ready.last_transition_time == "2026-11-22T10:00:00Z"


def test_transition_time_is_kept_while_the_status_holds_even_if_the_reason_changes() -> None:
    first = set_condition([], "Ready", "False", "ReplicasNotReady", "0/2", generation=1, now=T0)
    later = set_condition(first, "Ready", "False", "InvalidSpec", "bad", generation=2, now=T0 + timedelta(minutes=5))
    ready = find_condition(later, "Ready")
    assert ready is not None
    assert ready.last_transition_time == "2026-11-22T10:00:00Z"
    assert (ready.reason, ready.message, ready.observed_generation) == ("InvalidSpec", "bad", 2)


def test_transition_time_moves_when_the_status_flips() -> None:
    first = set_condition([], "Ready", "False", "ReplicasNotReady", "0/2", generation=1, now=T0)
    flipped = set_condition(first, "Ready", "True", "ReplicasReady", "2/2", generation=1,
                            now=T0 + timedelta(seconds=90))
    ready = find_condition(flipped, "Ready")
    assert ready is not None and ready.last_transition_time == "2026-11-22T10:01:30Z"


def test_one_condition_per_type_with_ready_first() -> None:
    conditions = set_condition([], "SpecValid", "True", "Valid", "ok", generation=1, now=T0)
    conditions = set_condition(conditions, "Ready", "True", "ReplicasReady", "1/1", generation=1, now=T0)
    conditions = set_condition(conditions, "SpecValid", "True", "Valid", "ok", generation=2, now=T0)
    assert [c.type for c in conditions] == ["Ready", "SpecValid"]


def test_times_are_utc_with_z_even_from_other_zones_and_naive_input() -> None:
    eastern = datetime(2026, 11, 22, 5, 0, 0, tzinfo=UTC).astimezone(tz=None)
    assert format_time(eastern) == "2026-11-22T05:00:00Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
