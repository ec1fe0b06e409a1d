"""The ``InferencePool`` status: what the operator observed and did, for people and for ``kubectl``.

Follows the Kubernetes API conventions: ``observedGeneration``, and ``conditions``
in the ``metav1.Condition`` shape keyed by type. No phase string.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CONDITION_TYPES",
    "Condition",
    "ConditionStatus",
    "CostStatus",
    "FallbackMode",
    "FallbackStatus",
    "InferencePoolStatus",
    "InterruptionRecord",
    "ReplicaCounts",
    "ScalingDecisionStatus",
    "Signals",
    "SpotStatus",
    "StatusModel",
]

ConditionStatus = Literal["True", "False", "Unknown"]
FallbackMode = Literal["Off", "Overflow", "Full"]

# The condition types PoolPilot sets; Ready summarises the others.
CONDITION_TYPES = ("Ready", "SpecValid", "MetricsAvailable", "Saturated", "FallbackActive", "SpotDisrupted")


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Condition(StatusModel):
    type: str = Field(
        min_length=1,
        max_length=316,
        description="Condition type: Ready, SpecValid, MetricsAvailable, Saturated, FallbackActive, SpotDisrupted.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="One CamelCase word saying why the condition is in this status.",
    )
    message: str = Field(max_length=32768, description="What happened, in words, with the numbers.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The pool generation this condition was computed from."
    )


class ReplicaCounts(StatusModel):
    desired: int = Field(default=0, ge=0, description="Replicas the operator wants, spot and on-demand together.")
    ready: int = Field(default=0, ge=0, description="Replicas ready to serve.")
    spot_desired: int = Field(default=0, ge=0, description="Replicas wanted on spot capacity.")
    spot_ready: int = Field(default=0, ge=0, description="Ready replicas on spot capacity.")
    on_demand_desired: int = Field(default=0, ge=0, description="Replicas wanted on on-demand capacity.")
    on_demand_ready: int = Field(default=0, ge=0, description="Ready replicas on on-demand capacity.")


class Signals(StatusModel):
    queue_depth: float | None = Field(default=None, description="Requests waiting, summed over ready replicas.")
    running_requests: float | None = Field(default=None, description="Requests running, summed over replicas.")
    kv_cache_utilization: float | None = Field(
        default=None, description="KV-cache utilization (0-1), averaged over ready replicas."
    )
    kv_cache_percent: int | None = Field(
        default=None, description="kvCacheUtilization as a whole percentage, for kubectl's KV% column."
    )
    replicas_reporting: int | None = Field(default=None, ge=0, description="How many replicas the signals come from.")
    prompt_tokens_per_second: float | None = Field(
        default=None, ge=0, description="Prompt tokens processed per second, summed over replicas."
    )
    generation_tokens_per_second: float | None = Field(
        default=None, ge=0, description="Tokens generated per second, summed over replicas."
    )
    router_api_prompt_tokens_per_second: float | None = Field(
        default=None, ge=0, description="Prompt tokens per second the router sent to the hosted API."
    )
    router_api_generation_tokens_per_second: float | None = Field(
        default=None, ge=0, description="Tokens per second the hosted API generated for the router."
    )
    ttft_seconds: float | None = Field(
        default=None, ge=0, description="Time to first token at spec.slo.ttftPercentile over the source's window, "
                                        "in seconds; absent with too few requests to read it."
    )
    source: Literal["pods", "prometheus"] | None = Field(default=None, description="Where the signals came from.")
    observed_time: str | None = Field(default=None, description="When these signals were read (RFC 3339).")


class ScalingDecisionStatus(StatusModel):
    time: str = Field(description="When the decision was made (RFC 3339).")
    from_replicas: int = Field(ge=0, description="Replicas asked for before the decision.")
    to_replicas: int = Field(ge=0, description="Replicas asked for after it.")
    reason: str = Field(description="One CamelCase word: ScaledUp, ScaledDown, ScaledToZero, AtMaximum, ...")
    message: str = Field(description="The inputs and the arithmetic, in words.")


class FallbackStatus(StatusModel):
    mode: FallbackMode = Field(
        default="Off", description="Off; Overflow (only what the pool cannot take); Full (all traffic)."
    )
    since: str | None = Field(default=None, description="When the mode last changed (RFC 3339).")
    in_flight_per_replica: int | None = Field(
        default=None, ge=1,
        description="Requests one replica takes before the router spills the next one in Overflow: the sequences "
                    "its KV cache was seen to hold (running / KV-cache use) plus saturation.queueDepthPerReplica. "
                    "Unset until observed; the router then uses --max-num-seqs plus that queue.")


class CostStatus(StatusModel):
    """What the pool costs at its current size and load, against the hosted API (prices from spec.cost)."""

    currency: str = Field(description="ISO 4217 code of every figure here.")
    hourly: float | None = Field(
        default=None, ge=0, description="The pool's cost per hour now: spot and on-demand replicas at their prices."
    )
    spot_replicas: int = Field(default=0, ge=0, description="Spot replicas the hourly cost counts.")
    on_demand_replicas: int = Field(default=0, ge=0, description="On-demand replicas the hourly cost counts.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="Prompt and generated tokens the pool processes per second now."
    )
    per_million_tokens: float | None = Field(
        default=None, ge=0, description="The pool's effective cost per million tokens at the current load."
    )
    api_hourly: float | None = Field(
        default=None, ge=0, description="What the hosted API would charge per hour for the same tokens."
    )
    api_per_million_tokens: float | None = Field(
        default=None, ge=0, description="The API's price per million tokens, blended at the current prompt mix."
    )
    break_even_tokens_per_second: float | None = Field(
        default=None, ge=0,
        description="The load at which the API would cost what the pool costs now; below it the API is cheaper.",
    )
    cheaper: Literal["pool", "api"] | None = Field(
        default=None, description="Which is cheaper for the current load."
    )
    api_cheaper_since: str | None = Field(
        default=None,
        description="fallback.preferCheaper, while the pool serves: since when the API has been cheaper for the "
                    "pool's load without a break (RFC 3339); after preferCheaperForSeconds the pool goes to zero.",
    )
    on_api_since: str | None = Field(
        default=None,
        description="fallback.preferCheaper: since when the pool has been at zero because the API is cheaper, "
                    "all traffic on the API (RFC 3339).",
    )
    pool_cheaper_since: str | None = Field(
        default=None,
        description="fallback.preferCheaper, at zero: since when one replica would have cost less than the API "
                    "charges for the router's traffic, without a break (RFC 3339); after preferCheaperForSeconds "
                    "the pool scales back up.",
    )


DrainOutcome = Literal["Replacing", "Draining", "Drained"]


class InterruptionRecord(StatusModel):
    """One replica taken out of the pool for a reclaim notice: kept while it drains, then a few as history."""

    pod: str = Field(description="The replica pod.")
    node: str | None = Field(default=None, description="The node it ran on.")
    kind: str = Field(description="spot-interruption, rebalance-recommendation, instance-stopping, ...")
    source: str = Field(description="Where the notice came from: aws-sqs, node-taint or pod-condition.")
    capacity_type: str = Field(description="The Deployment it was released from: spot or on-demand.")
    outcome: DrainOutcome = Field(
        description="Replacing (released, still serving), Draining (out of routing, being evicted), Drained."
    )
    noticed_time: str = Field(description="When PoolPilot acted on the notice (RFC 3339).")
    deadline: str = Field(description="When the capacity goes (RFC 3339).")
    drained_time: str | None = Field(default=None, description="When the pod was gone (RFC 3339).")
    eviction_attempts: int = Field(default=0, ge=0, description="Eviction requests made for it.")
    last_eviction_time: str | None = Field(default=None, description="When the last eviction was requested.")
    last_eviction_result: str | None = Field(default=None, description="What the API server answered last.")
    deadline_missed: bool = Field(default=False, description="Whether the pod outlived its deadline.")


class SpotStatus(StatusModel):
    """Spot capacity found missing: the spot share runs on on-demand while one spot replica probes."""

    unavailable_since: str = Field(description="When spot replicas were found unschedulable for too long.")
    moved_replicas: int = Field(default=0, ge=0, description="Replicas moved from spot to on-demand now.")
    probe_attempts: int = Field(default=1, ge=1, description="Probes made so far (the first at the shift).")
    probe_started_time: str | None = Field(default=None, description="When the current probe started; None "
                                           "while waiting for the next.")
    next_probe_time: str | None = Field(default=None, description="When the next probe starts (backoff).")
    held_replicas: int = Field(
        default=0, ge=0,
        description="Spot replicas that had nodes when the shift started: they keep running on spot; only the share "
                    "beyond them runs on on-demand, and spot counts as back once more than these have nodes.")


class InferencePoolStatus(StatusModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The most recent pool generation the operator acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Current state in the metav1.Condition shape, one per type."
    )
    replicas: ReplicaCounts | None = Field(default=None, description="Replica counts by capacity type.")
    signals: Signals | None = Field(default=None, description="The last vLLM load signals read.")
    last_decision: ScalingDecisionStatus | None = Field(
        default=None, description="The last scaling decision that changed the replica count, with its inputs."
    )
    fallback: FallbackStatus | None = Field(default=None, description="Where traffic goes.")
    cost: CostStatus | None = Field(default=None, description="What the pool costs now, against the hosted API.")
    spot: SpotStatus | None = Field(
        default=None, description="Set while spot capacity is missing and its share runs on on-demand."
    )
    interruptions: list[InterruptionRecord] = Field(
        default_factory=list,
        description="Replicas being replaced or drained for a reclaim notice, and the last few that were.",
    )
