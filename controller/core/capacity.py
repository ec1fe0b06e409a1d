"""The spot / on-demand split and where each capacity type's replicas may run.

The split follows EC2 Auto Scaling's mixed-instances shape: an on-demand base,
then a percentage of the rest on spot. Rounding favours on-demand, so a pool
never has less stable capacity than the admin asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from controller.api.spec import CapacitySpec, PlacementSpec, Toleration

__all__ = ["CapacitySplit", "CapacityType", "Placement", "placement_for", "split_replicas"]


class CapacityType(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class CapacitySplit:
    spot: int
    on_demand: int

    @property
    def total(self) -> int:
        return self.spot + self.on_demand

    def for_type(self, capacity_type: CapacityType) -> int:
        return self.spot if capacity_type is CapacityType.SPOT else self.on_demand


def split_replicas(desired: int, capacity: CapacitySpec) -> CapacitySplit:
    if desired < 0:
        raise ValueError(f"desired replicas must not be negative, got {desired}")
    on_demand_base = min(desired, capacity.on_demand_base)
    above_base = desired - on_demand_base
    spot = math.floor(above_base * capacity.spot_percentage / 100)
    return CapacitySplit(spot=spot, on_demand=desired - spot)


@dataclass(frozen=True)
class NodeRequirement:
    """One node-affinity match expression (for labels that mark only one capacity type)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    required_node_expressions: tuple[NodeRequirement, ...] = ()


# What each provider's nodes carry. GKE and AKS label only spot nodes, so on-demand
# replicas there must require the label's absence instead of a value.
_PRESETS: dict[str, dict[CapacityType, Placement]] = {
    "karpenter": {
        CapacityType.SPOT: Placement(node_selector={"karpenter.sh/capacity-type": "spot"}),
        CapacityType.ON_DEMAND: Placement(node_selector={"karpenter.sh/capacity-type": "on-demand"}),
    },
    "eks": {
        CapacityType.SPOT: Placement(node_selector={"eks.amazonaws.com/capacityType": "SPOT"}),
        CapacityType.ON_DEMAND: Placement(node_selector={"eks.amazonaws.com/capacityType": "ON_DEMAND"}),
    },
    "gke": {
        CapacityType.SPOT: Placement(
            node_selector={"cloud.google.com/gke-spot": "true"},
            tolerations=(Toleration(key="cloud.google.com/gke-spot", operator="Equal", value="true",
                                    effect="NoSchedule"),),
        ),
        CapacityType.ON_DEMAND: Placement(
            required_node_expressions=(NodeRequirement("cloud.google.com/gke-spot", "DoesNotExist"),),
        ),
    },
    "aks": {
        CapacityType.SPOT: Placement(
            node_selector={"kubernetes.azure.com/scalesetpriority": "spot"},
            tolerations=(Toleration(key="kubernetes.azure.com/scalesetpriority", operator="Equal", value="spot",
                                    effect="NoSchedule"),),
        ),
        CapacityType.ON_DEMAND: Placement(
            required_node_expressions=(NodeRequirement("kubernetes.azure.com/scalesetpriority", "DoesNotExist"),),
        ),
    },
    "custom": {CapacityType.SPOT: Placement(), CapacityType.ON_DEMAND: Placement()},
}


def placement_for(capacity: CapacitySpec, capacity_type: CapacityType) -> Placement:
    """The provider preset for this capacity type, with the admin's extra selectors and tolerations on top."""
    preset = _PRESETS[capacity.provider][capacity_type]
    extra: PlacementSpec = capacity.spot if capacity_type is CapacityType.SPOT else capacity.on_demand
    return Placement(
        node_selector={**preset.node_selector, **extra.node_selector},
        tolerations=preset.tolerations + tuple(extra.tolerations),
        required_node_expressions=preset.required_node_expressions,
    )
