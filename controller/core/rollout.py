"""Which Deployments may roll their pods now. Pure.

A new pod template reaches a pool two ways. A user changed the spec (the pool's generation moved
past the one the template was rolled for): that applies at once, as the user asked. Or a new
operator version renders the same spec differently (same generation, different template): then
every pool of the fleet would roll at once, and each surge asks for a GPU. Those rolls go through
a fleet-wide gate instead: at most ``limit`` pools roll at a time; a pool keeps its slot until
its Deployments finished rolling (or the Deployment controller gave up: ProgressDeadlineExceeded),
and the others keep their current template, with replica counts still applied, until a slot frees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.core.capacity import CapacityType
from controller.core.pool import DeploymentState

__all__ = ["RolloutDecision", "UpgradeGate", "decide_rollout"]


@dataclass(frozen=True)
class UpgradeGate:
    """The fleet as one pool's evaluation sees it: the remembered state shared by all pools."""

    limit: int = 2  # pools that may roll for an operator upgrade at the same time
    rolling_elsewhere: int = 0  # other pools holding a slot now
    held: bool = False  # this pool holds a slot since an earlier evaluation


@dataclass(frozen=True)
class RolloutDecision:
    hold: frozenset[CapacityType]  # Deployments that keep their current template for now
    holds_slot: bool  # whether this pool holds an upgrade slot after this evaluation
    started: bool  # this evaluation starts an upgrade roll (worth an Event)
    waiting: bool  # an upgrade waits for a slot


def decide_rollout(generation: int, deployments: Mapping[CapacityType, DeploymentState],
                   rendered_templates: Mapping[CapacityType, str], gate: UpgradeGate) -> RolloutDecision:
    """``rendered_templates``: the fingerprint of the template this operator renders now, per Deployment."""
    outdated = {capacity_type for capacity_type, state in deployments.items()
                if capacity_type in rendered_templates and state.template is not None
                and state.template != rendered_templates[capacity_type]}
    # A Deployment with no record of the generation it rolled for predates the record: an upgrade.
    upgrade = {t for t in outdated if deployments[t].template_generation in (None, generation)}
    rolling = any(state.rolling for state in deployments.values())
    if not upgrade:
        # Only user changes (or nothing): nothing waits; a slot is kept while the roll it started lasts.
        return RolloutDecision(hold=frozenset(), holds_slot=gate.held and rolling, started=False, waiting=False)
    if gate.held or gate.rolling_elsewhere < gate.limit:
        return RolloutDecision(hold=frozenset(), holds_slot=True, started=not gate.held, waiting=False)
    return RolloutDecision(hold=frozenset(upgrade), holds_slot=False, started=False, waiting=True)
