import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api.spec import CapacitySpec, PlacementSpec, Toleration
from controller.core.capacity import CapacityType, placement_for, split_replicas


@pytest.mark.parametrize(
    ("desired", "base", "percentage", "spot", "on_demand"),
    [
        (0, 1, 100, 0, 0),        # scaled to zero
        (1, 1, 100, 0, 1),        # only the base
        (5, 1, 100, 4, 1),        # base on-demand, all the rest spot
        (5, 1, 80, 3, 2),         # 80 % of 4 = 3.2: rounding favours on-demand
        (10, 0, 50, 5, 5),
        (4, 0, 0, 0, 4),          # no spot at all
        (3, 5, 100, 0, 3),        # base larger than the pool
    ],
    ids=["zero", "base_only", "all_spot_above_base", "rounds_towards_on_demand", "half", "no_spot",
         "base_exceeds_desired"],
)
def test_split(desired: int, base: int, percentage: int, spot: int, on_demand: int) -> None:
    split = split_replicas(desired, CapacitySpec(on_demand_base=base, spot_percentage=percentage))
    assert (split.spot, split.on_demand) == (spot, on_demand)


@given(desired=st.integers(0, 1000), base=st.integers(0, 1000), percentage=st.integers(0, 100))
def test_split_keeps_the_total_and_never_undercuts_the_on_demand_ask(desired: int, base: int, percentage: int) -> None:
    split = split_replicas(desired, CapacitySpec(on_demand_base=base, spot_percentage=percentage))
    assert split.total == desired
    assert split.on_demand >= min(desired, base)
    assert split.spot <= (desired - min(desired, base)) * percentage / 100


def test_negative_desired_is_a_bug_not_a_split() -> None:
    with pytest.raises(ValueError, match="negative"):
        split_replicas(-1, CapacitySpec())


def test_karpenter_preset_selects_capacity_type_labels() -> None:
    capacity = CapacitySpec(provider="karpenter")
    assert placement_for(capacity, CapacityType.SPOT).node_selector == {"karpenter.sh/capacity-type": "spot"}
    assert placement_for(capacity, CapacityType.ON_DEMAND).node_selector == {
        "karpenter.sh/capacity-type": "on-demand"}


def test_aks_spot_tolerates_the_spot_taint_and_on_demand_avoids_spot_nodes() -> None:
    capacity = CapacitySpec(provider="aks")
    spot = placement_for(capacity, CapacityType.SPOT)
    assert spot.node_selector == {"kubernetes.azure.com/scalesetpriority": "spot"}
    assert [t.key for t in spot.tolerations] == ["kubernetes.azure.com/scalesetpriority"]
    on_demand = placement_for(capacity, CapacityType.ON_DEMAND)
    assert on_demand.node_selector == {}
    assert [(r.key, r.operator) for r in on_demand.required_node_expressions] == [
        ("kubernetes.azure.com/scalesetpriority", "DoesNotExist")]


def test_admin_placement_is_added_on_top_of_the_preset() -> None:
    capacity = CapacitySpec(
        provider="eks",
        spot=PlacementSpec(node_selector={"gpu": "a10g"}, tolerations=[Toleration(key="team", operator="Exists")]),
    )
    spot = placement_for(capacity, CapacityType.SPOT)
    assert spot.node_selector == {"eks.amazonaws.com/capacityType": "SPOT", "gpu": "a10g"}
    assert [t.key for t in spot.tolerations] == ["team"]
