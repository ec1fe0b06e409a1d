"""The ``InferencePool`` spec: what a cluster admin asks PoolPilot for.

These pydantic models are the one source of truth for the API: ``poolpilot crd``
generates the CRD's openAPIV3Schema from them (descriptions, defaults, bounds,
enums and the CEL rules of :mod:`controller.api.rules`), and the operator
validates every pool it reads with them.

Durations end in ``Seconds``; fractions are 0-1; percentages are 0-100.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from controller.api import quantity
from controller.api.rules import CrossFieldRule, SchemaMaxLength, check_rules

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "MANAGED_VLLM_FLAGS",
    "MAX_POOL_NAME_LENGTH",
    "PLURAL",
    "POOL_NAME_PATTERN",
    "CapacitySpec",
    "CostSpec",
    "EnvVar",
    "FallbackProviderSpec",
    "FallbackSpec",
    "HTTPRouteRef",
    "InferencePoolSpec",
    "InterruptionSpec",
    "MetricsSpec",
    "ModelSpec",
    "PlacementSpec",
    "PrometheusSpec",
    "ReplicasSpec",
    "ResourceRequirements",
    "SLOSpec",
    "SaturationSpec",
    "ScaleDirectionSpec",
    "ScalingSpec",
    "SecretKeyRef",
    "Spec",
    "Toleration",
]

API_GROUP = "poolpilot.io"
API_VERSION = "v1alpha1"
KIND = "InferencePool"
PLURAL = "inferencepools"

# vLLM flags the operator sets itself; a user value would silently fight the operator's.
MANAGED_VLLM_FLAGS = ("--port", "--served-model-name", "--shutdown-timeout", "--host")

DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.29.0"

IntOrString = int | str
# Bounded so the API server's CEL cost estimate of rules over these stays inside its budget.
VLLMArg = Annotated[str, Field(min_length=1, max_length=4096)]
MAX_VLLM_ARGS = 128


class Spec(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused, rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
    rules: ClassVar[tuple[CrossFieldRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Spec:
        check_rules(self, type(self).rules)
        return self


# ---------------------------------------------------------------------------------------------- model


class SecretKeyRef(Spec):
    name: str = Field(min_length=1, description="Name of a Secret in the pool's namespace.")
    key: str = Field(default="api-key", min_length=1, description="Key inside the Secret.")


class EnvVar(Spec):
    name: str = Field(min_length=1, description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...), passed through.",
    )


# Long enough for any real quantity ("1.5Gi", "123456789012345678901234567890m"), short enough to
# bound the isQuantity rule's estimated cost under the API server's budget.
QUANTITY_MAX_LENGTH = 64
QuantityValue = Annotated[int | str, SchemaMaxLength(QUANTITY_MAX_LENGTH)]


def _all_quantities(values: dict[str, QuantityValue]) -> bool:
    try:
        for value in values.values():
            if len(str(value)) > QUANTITY_MAX_LENGTH:
                return False
            quantity.parse(str(value))
    except quantity.InvalidQuantity:
        return False
    return True


def _quantity_rule(field: str) -> CrossFieldRule:
    return CrossFieldRule(
        # isQuantity: Kubernetes' CEL quantity library (kube-apiserver >= 1.28). The map and its keys
        # are bounded (maxProperties, maxLength) to keep the rule inside the API server's cost budget.
        cel=f"!has(self.{field}) || self.{field}.all(k, isQuantity(string(self.{field}[k])))",
        message=f"{field}: every value must be a Kubernetes quantity, e.g. 4, 500m, 16Gi",
        check=lambda model: _all_quantities(getattr(model, field)),
        field_path=field,
    )


class ResourceRequirements(Spec):
    rules = (_quantity_rule("requests"), _quantity_rule("limits"))

    requests: dict[str, QuantityValue] = Field(
        default_factory=dict, max_length=16,
        description="CPU and memory requests of the vLLM container, e.g. {cpu: 4}.",
    )
    limits: dict[str, QuantityValue] = Field(
        default_factory=dict, max_length=16,
        description="CPU and memory limits of the vLLM container. The GPU limit comes from gpusPerReplica.",
    )


def _no_managed_flags(model: ModelSpec) -> bool:
    return not any(arg == flag or arg.startswith(flag + "=") for arg in model.args for flag in MANAGED_VLLM_FLAGS)


_MANAGED_FLAGS_CEL = " || ".join(f"a == '{flag}' || a.startsWith('{flag}=')" for flag in MANAGED_VLLM_FLAGS)


class ModelSpec(Spec):
    rules = (
        CrossFieldRule(
            # CEL fails on an absent field instead of skipping the rule: guard every optional one with has().
            cel=f"!has(self.args) || self.args.all(a, !({_MANAGED_FLAGS_CEL}))",
            message="args must not set " + ", ".join(MANAGED_VLLM_FLAGS) + ": PoolPilot sets them itself",
            check=_no_managed_flags,
            field_path="args",
        ),
    )

    name: str = Field(
        min_length=1,
        description="The model vLLM serves: a Hugging Face repo id or a path inside the image.",
    )
    served_model_name: str | None = Field(
        default=None,
        description="The name clients put in the OpenAI `model` field. Defaults to `name`.",
    )
    image: str = Field(default=DEFAULT_VLLM_IMAGE, min_length=1, description="The vLLM OpenAI server image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy of the vLLM image."
    )
    args: list[VLLMArg] = Field(
        default_factory=list,
        max_length=MAX_VLLM_ARGS,
        description="Extra arguments for `vllm serve`, e.g. `--max-model-len=8192`.",
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment of the vLLM container.")
    gpus_per_replica: int = Field(
        default=1,
        ge=0,
        le=16,
        description="GPUs per replica; also vLLM's --tensor-parallel-size. 0 runs without a GPU request.",
    )
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, description="The extended resource name of the GPU."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory of the vLLM container."
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port vLLM listens on.")

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name


# ------------------------------------------------------------------------------------------- replicas


class ReplicasSpec(Spec):
    rules = (
        CrossFieldRule(
            cel="self.min <= self.max",
            message="replicas.min must not exceed replicas.max",
            check=lambda r: r.min <= r.max,
            field_path="min",
        ),
    )

    min: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest replicas. 0 lets the pool scale to zero when the API fallback is enabled.",
    )
    max: int = Field(default=1, ge=1, le=1000, description="Most replicas.")


class ScaleDirectionSpec(Spec):
    stabilization_seconds: int = Field(
        ge=0,
        le=3600,
        description="How long a recommendation must hold before it is acted on in this direction.",
    )
    max_step_replicas: int = Field(ge=1, le=1000, description="Most replicas added or removed in one step.")


def _scale_up_default() -> ScaleDirectionSpec:
    return ScaleDirectionSpec(stabilization_seconds=0, max_step_replicas=4)


def _scale_down_default() -> ScaleDirectionSpec:
    return ScaleDirectionSpec(stabilization_seconds=300, max_step_replicas=1)


class ScalingSpec(Spec):
    evaluation_interval_seconds: int = Field(
        default=5, ge=1, le=300, description="How often the pool is evaluated (it is also evaluated on events)."
    )
    target_queue_depth_per_replica: float = Field(
        default=4.0, gt=0, le=10000, description="Waiting requests per ready replica the pool aims for."
    )
    target_kv_cache_utilization: float = Field(
        default=0.8,
        gt=0,
        le=1,
        alias="targetKVCacheUtilization",
        description="KV-cache utilization (0-1) the pool aims for.",
    )
    tolerance: float = Field(
        default=0.1, ge=0, lt=1, description="No scaling while observed/target is within 1 +- tolerance."
    )
    scale_up: ScaleDirectionSpec = Field(
        default_factory=_scale_up_default, description="Scale-up behaviour: fast by default."
    )
    scale_down: ScaleDirectionSpec = Field(
        default_factory=_scale_down_default, description="Scale-down behaviour: slow by default."
    )
    startup_seconds: int = Field(
        default=600,
        ge=10,
        le=7200,
        description=(
            "Expected time from a new replica's creation to ready (node, image pull, weights). A starting "
            "replica counts as capacity on its way for this long; it also sizes the startup probe."
        ),
    )


# -------------------------------------------------------------------------------------------- metrics


class PrometheusSpec(Spec):
    url: str | None = Field(
        default=None,
        description="Base URL of the Prometheus HTTP API. Defaults to the operator's POOLPILOT_PROMETHEUS_URL. "
                    "The operator queries only URLs its admin allowed (POOLPILOT_ALLOWED_PROMETHEUS_URLS); "
                    "another gives MetricsAvailable=False, PrometheusUrlNotAllowed.",
    )


class MetricsSpec(Spec):
    source: Literal["pods", "prometheus"] = Field(
        default="pods",
        description="Where vLLM's signals come from: scrape each ready replica (pods), or query Prometheus.",
    )
    prometheus: PrometheusSpec = Field(
        default_factory=PrometheusSpec, description="Prometheus settings, used when source is prometheus."
    )
    timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Timeout of one scrape or one query."
    )


# ------------------------------------------------------------------------------------------- capacity


class Toleration(Spec):
    # As the API server validates a pod's tolerations (pkg/apis/core/validation, validateTolerations):
    # refused here, not by a Deployment write later.
    rules = (
        CrossFieldRule(
            cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="a toleration with operator Exists takes no value",
            check=lambda t: t.operator != "Exists" or not t.value,
            field_path="value",
        ),
        CrossFieldRule(
            cel="has(self.key) && self.key != '' || self.operator == 'Exists'",
            message="a toleration without a key must use operator Exists",
            check=lambda t: bool(t.key) or t.operator == "Exists",
            field_path="operator",
        ),
    )

    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value for the Equal operator.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )


class PlacementSpec(Spec):
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels the replicas of this capacity type require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations for the replicas of this capacity type."
    )


class CapacitySpec(Spec):
    rules = (
        CrossFieldRule(
            cel="self.provider != 'custom' || (has(self.spot.nodeSelector) && size(self.spot.nodeSelector) > 0)",
            message="the custom provider needs capacity.spot.nodeSelector to tell spot nodes apart",
            check=lambda c: c.provider != "custom" or bool(c.spot.node_selector),
            field_path="spot.nodeSelector",
        ),
    )

    on_demand_base: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="The first replicas, up to this many, run on on-demand capacity.",
    )
    spot_percentage: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share (0-100) of the replicas above onDemandBase that run on spot; the rest on on-demand.",
    )
    provider: Literal["karpenter", "eks", "gke", "aks", "custom"] = Field(
        default="karpenter",
        description="Node-label preset that tells spot from on-demand nodes; custom uses spot/onDemand only.",
    )
    spot: PlacementSpec = Field(default_factory=PlacementSpec, description="Extra placement of spot replicas.")
    on_demand: PlacementSpec = Field(
        default_factory=PlacementSpec, description="Extra placement of on-demand replicas."
    )
    spot_unavailable_after_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="A spot replica pending this long means no spot capacity: its share moves to on-demand.",
    )


# --------------------------------------------------------------------------------------- interruption


# Seconds kept between the end of vLLM's drain and the grace period's SIGKILL.
SIGKILL_MARGIN_SECONDS = 5


class InterruptionSpec(Spec):
    rules = (
        CrossFieldRule(
            cel=f"self.drainSeconds >= self.preStopSeconds + {SIGKILL_MARGIN_SECONDS + 5}",
            message=(
                f"interruption.drainSeconds must be at least preStopSeconds + {SIGKILL_MARGIN_SECONDS + 5}, "
                "so vLLM gets time to finish in-flight requests"
            ),
            check=lambda i: i.drain_seconds >= i.pre_stop_seconds + SIGKILL_MARGIN_SECONDS + 5,
            field_path="drainSeconds",
        ),
    )

    node_taints: bool = Field(
        default=True,
        description="Treat Karpenter and AWS Node Termination Handler taints on a node as a reclaim notice.",
    )
    drain_seconds: int = Field(
        default=90,
        ge=10,
        le=3600,
        description=(
            "The replica's terminationGracePeriodSeconds: preStop, then vLLM's --shutdown-timeout. Keep it "
            "inside the reclaim notice: about 90 on AWS, 25 on GCP and Azure."
        ),
    )
    pre_stop_seconds: int = Field(
        default=10,
        ge=0,
        le=120,
        description="Sleep before SIGTERM so load balancers drop the replica before vLLM stops accepting.",
    )

    @property
    def vllm_shutdown_timeout_seconds(self) -> int:
        return self.drain_seconds - self.pre_stop_seconds - SIGKILL_MARGIN_SECONDS


# ------------------------------------------------------------------------------------------- fallback


class FallbackProviderSpec(Spec):
    base_url: str = Field(
        alias="baseURL", min_length=1, description="Base URL of the OpenAI-compatible API, e.g. .../v1."
    )
    model: str = Field(min_length=1, description="Model name to request from the API.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding the API key, sent as a bearer token."
    )


class SaturationSpec(Spec):
    queue_depth_per_replica: float = Field(
        default=8.0, gt=0, le=10000, description="Waiting requests per ready replica that count as saturated."
    )
    kv_cache_utilization: float = Field(
        default=0.95, gt=0, le=1, description="KV-cache utilization (0-1) that counts as saturated."
    )
    for_seconds: int = Field(
        default=30, ge=0, le=3600, description="How long saturation must last before traffic spills over."
    )


class HTTPRouteRef(Spec):
    name: str = Field(
        min_length=1,
        description=(
            "Name of the HTTPRoute (gateway.networking.k8s.io/v1) whose backend weights PoolPilot sets. In every "
            "rule with a backendRef to the pool's Service (the pool's name, in its namespace), each other "
            "backendRef of that rule is the fallback, e.g. an ExternalName Service for the hosted API. Only "
            "those weights are written (Off: pool 100%; Overflow: pool 50%, fallbacks 50% shared evenly; Full: "
            "fallbacks 100%); other rules and fields are left as they are."
        ),
    )
    namespace: str | None = Field(default=None, description="Namespace of the HTTPRoute; defaults to the pool's.")


class FallbackSpec(Spec):
    rules = (
        CrossFieldRule(
            cel="!self.enabled || has(self.provider)",
            message="fallback.enabled needs fallback.provider",
            check=lambda f: not f.enabled or f.provider is not None,
            field_path="provider",
        ),
        CrossFieldRule(
            cel="self.route != 'httpRoute' || has(self.httpRoute)",
            message="fallback.route httpRoute needs fallback.httpRoute",
            check=lambda f: f.route != "httpRoute" or f.http_route is not None,
            field_path="httpRoute",
        ),
        CrossFieldRule(
            cel="!self.preferCheaper || self.enabled",
            message="fallback.preferCheaper needs fallback.enabled",
            check=lambda f: not f.prefer_cheaper or f.enabled,
            field_path="preferCheaper",
        ),
        CrossFieldRule(
            # At zero replicas only the router sees the API's traffic: without it the pool could never come back.
            cel="!self.preferCheaper || self.route == 'router'",
            message="fallback.preferCheaper needs fallback.route router: the router reports the API's tokens "
                    "at zero replicas",
            check=lambda f: not f.prefer_cheaper or f.route == "router",
            field_path="route",
        ),
    )

    enabled: bool = Field(default=False, description="Send traffic to the hosted API when the pool cannot serve it.")
    provider: FallbackProviderSpec | None = Field(default=None, description="The hosted OpenAI-compatible API.")
    saturation: SaturationSpec = Field(
        default_factory=SaturationSpec, description="When the pool counts as saturated (at max replicas)."
    )
    recover_after_seconds: int = Field(
        default=120, ge=0, le=3600, description="How long the pool must be healthy before traffic comes back."
    )
    route: Literal["router", "httpRoute"] = Field(
        default="router",
        description="Data plane: PoolPilot's bundled router, or the weights of a Gateway API HTTPRoute.",
    )
    http_route: HTTPRouteRef | None = Field(
        default=None, alias="httpRoute",
        description="The HTTPRoute to steer, when route is httpRoute: its rules name the pool's Service and the "
                    "fallback backend side by side.",
    )
    prefer_cheaper: bool = Field(
        default=False,
        description=(
            "Serve from the hosted API while it is cheaper: when the API's list price for the pool's current "
            "tokens stays below what the pool's replicas cost per hour for preferCheaperForSeconds, all traffic "
            "goes to the API (Full) and the pool scales to zero; once one replica (on spot if the capacity split "
            "puts the first replica there, else on-demand) would cost less than the API charges for the traffic "
            "the router sends it, for the same window, the pool scales back up. Off by default: many pools are "
            "self-hosted because the data must not leave. Needs fallback.enabled, route router (the router "
            "reports the API's tokens at zero replicas), replicas.min 0, both API prices, the on-demand replica "
            "price (spot's share runs on on-demand while spot capacity is missing) and, with a spot share "
            "(capacity.spotPercentage above 0), the spot replica price."
        ),
    )
    prefer_cheaper_for_seconds: int = Field(
        default=1800, ge=60, le=86400,
        description=(
            "How long the cheaper side must stay cheaper, without a break, before preferCheaper moves the "
            "traffic (either way): a load near the break-even flips at most once per window, and a short burst "
            "does not start a GPU replica that is paid for while it loads."
        ),
    )


# ------------------------------------------------------------------------------------------ slo, cost


class SLOSpec(Spec):
    ttft_seconds: float = Field(
        default=2.0, gt=0, le=600, description="Time to first token that counts as served well."
    )
    ttft_percentile: float = Field(
        default=95.0, ge=50, le=99.99, description="The percentile (50-99.99) ttftSeconds applies to."
    )


class CostSpec(Spec):
    spot_replica_hourly: float | None = Field(
        default=None, ge=0, description="What one spot replica costs per hour (node share included)."
    )
    on_demand_replica_hourly: float | None = Field(
        default=None, ge=0, description="What one on-demand replica costs per hour."
    )
    api_input_per_million_tokens: float | None = Field(
        default=None, ge=0, description="What the hosted API charges per million input tokens."
    )
    api_output_per_million_tokens: float | None = Field(
        default=None, ge=0, description="What the hosted API charges per million output tokens."
    )
    currency: str = Field(default="USD", min_length=3, max_length=3, description="ISO 4217 code of the prices.")


# --------------------------------------------------------------------------------------------- pool


def _api_priced(spec: InferencePoolSpec) -> bool:
    cost = spec.cost
    return cost.api_input_per_million_tokens is not None and cost.api_output_per_million_tokens is not None


def _replicas_priced(spec: InferencePoolSpec) -> bool:
    cost = spec.cost
    return cost.on_demand_replica_hourly is not None and (
        spec.capacity.spot_percentage == 0 or cost.spot_replica_hourly is not None)


_PREFER_CHEAPER_RULES = (
    CrossFieldRule(
        cel="!self.fallback.preferCheaper || self.replicas.min == 0",
        message="fallback.preferCheaper needs replicas.min 0: the pool scales to zero while the API is cheaper",
        check=lambda s: not s.fallback.prefer_cheaper or s.replicas.min == 0,
        field_path="replicas.min",
    ),
    CrossFieldRule(
        cel="!self.fallback.preferCheaper || has(self.cost.apiInputPerMillionTokens) && "
            "has(self.cost.apiOutputPerMillionTokens)",
        message="fallback.preferCheaper needs cost.apiInputPerMillionTokens and cost.apiOutputPerMillionTokens",
        check=lambda s: not s.fallback.prefer_cheaper or _api_priced(s),
        field_path="cost",
    ),
    CrossFieldRule(
        cel="!self.fallback.preferCheaper || has(self.cost.onDemandReplicaHourly) && "
            "(self.capacity.spotPercentage == 0 || has(self.cost.spotReplicaHourly))",
        message="fallback.preferCheaper needs cost.onDemandReplicaHourly and, with capacity.spotPercentage above "
                "0, cost.spotReplicaHourly",
        check=lambda s: not s.fallback.prefer_cheaper or _replicas_priced(s),
        field_path="cost",
    ),
)


class InferencePoolSpec(Spec):
    """The whole spec of one pool: one served model."""

    rules = _PREFER_CHEAPER_RULES

    model: ModelSpec = Field(description="What vLLM serves and how its container looks.")
    replicas: ReplicasSpec = Field(default_factory=ReplicasSpec, description="Bounds of the replica count.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="How replicas follow vLLM's load.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Where vLLM's load signals come from.")
    capacity: CapacitySpec = Field(default_factory=CapacitySpec, description="The spot and on-demand split.")
    interruption: InterruptionSpec = Field(
        default_factory=InterruptionSpec, description="Spot reclaim notices and graceful drain."
    )
    fallback: FallbackSpec = Field(
        default_factory=FallbackSpec, description="Spill to a hosted OpenAI-compatible API."
    )
    slo: SLOSpec = Field(default_factory=SLOSpec, description="What served well means.")
    cost: CostSpec = Field(default_factory=CostSpec, description="Prices, for cost figures in the status.")


# The pool's name becomes a Service name (a DNS-1035 label) and, with suffixes, Deployment and pod names.
MAX_POOL_NAME_LENGTH = 40
POOL_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

