"""Operator upgrades roll the fleet through a gate; a user's change does not wait."""

from controller.core.capacity import CapacityType
from controller.core.pool import DeploymentState
from controller.core.rollout import UpgradeGate, decide_rollout

OD, SPOT = CapacityType.ON_DEMAND, CapacityType.SPOT
NEW = {OD: "new-od", SPOT: "new-spot"}


def deployed(template: str, generation: int | None = 3, rolling: bool = False) -> dict[CapacityType, DeploymentState]:
    return {OD: DeploymentState(2, 2, template=template, template_generation=generation, rolling=rolling)}


def test_a_current_template_needs_no_slot() -> None:
    decision = decide_rollout(3, deployed("new-od"), NEW, UpgradeGate(limit=1, rolling_elsewhere=1))
    assert (decision.hold, decision.holds_slot, decision.waiting) == (frozenset(), False, False)


def test_an_upgrade_takes_a_free_slot_and_says_so_once() -> None:
    first = decide_rollout(3, deployed("old"), NEW, UpgradeGate(limit=2, rolling_elsewhere=1))
    assert (first.hold, first.holds_slot, first.started) == (frozenset(), True, True)
    # Applied: the template is current and the Deployment rolls; the slot is kept, no second Event.
    rolling = decide_rollout(3, deployed("new-od", rolling=True), NEW, UpgradeGate(limit=2, rolling_elsewhere=2,
                                                                                   held=True))
    assert (rolling.holds_slot, rolling.started) == (True, False)
    done = decide_rollout(3, deployed("new-od"), NEW, UpgradeGate(limit=2, rolling_elsewhere=2, held=True))
    assert done.holds_slot is False


def test_an_upgrade_waits_when_the_fleet_uses_every_slot() -> None:
    decision = decide_rollout(3, deployed("old"), NEW, UpgradeGate(limit=2, rolling_elsewhere=2))
    assert (decision.hold, decision.holds_slot, decision.waiting) == (frozenset({OD}), False, True)


def test_a_deployment_without_a_recorded_generation_is_an_upgrade() -> None:
    decision = decide_rollout(3, deployed("old", generation=None), NEW, UpgradeGate(limit=1, rolling_elsewhere=1))
    assert decision.hold == frozenset({OD})


def test_a_spec_change_applies_at_once_even_with_every_slot_taken() -> None:
    decision = decide_rollout(4, deployed("old", generation=3), NEW, UpgradeGate(limit=1, rolling_elsewhere=1))
    assert (decision.hold, decision.holds_slot, decision.waiting) == (frozenset(), False, False)
