"""Operator settings, from the environment (``POOLPILOT_*``); one place, typed, with units in the names."""

from __future__ import annotations

import ipaddress
import pathlib
import re
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from controller.kube.render import DEFAULT_ROUTER_IMAGE
from controller.sources.metrics.urls import normalized_prometheus_url

__all__ = ["InvalidSettings", "OperatorSettings", "load_operator_settings"]

# Where a pod finds its own namespace (the ServiceAccount's projected volume).
IN_CLUSTER_NAMESPACE_FILE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_LEASE_NAMESPACE = "poolpilot-system"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POOLPILOT_", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty watches the whole cluster. Env: a JSON list.",
    )
    kubeconfig: str | None = Field(
        default=None, description="Path of a kubeconfig; unset uses in-cluster credentials or KUBECONFIG."
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for pools with metrics.source=prometheus and no url of their own."
    )
    allowed_prometheus_urls: list[str] = Field(
        default_factory=list,
        description="The Prometheus URLs a pool's spec.metrics.prometheus.url may name, besides prometheus_url "
                    "(always allowed); anyone who may edit pools writes that field, and the operator must not "
                    "query what they like. Exact match after normalisation (scheme and host lowercased, default "
                    "port spelled out, no trailing slash). Env: a JSON list.",
    )
    liveness_endpoint: str | None = Field(
        default=None,
        description="Where the operator serves its liveness probe, and /metrics on the same port. Unset: every "
                    "address of the pod's IP family on liveness_port, http://[::]:8080/healthz on an IPv6 pod "
                    "(pod_ip), else http://0.0.0.0:8080/healthz. One family only: the server is one asyncio "
                    "listener, and asyncio makes an IPv6 listener IPv6-only, so no single URL serves both.",
    )
    liveness_port: int = Field(default=8080, ge=1, le=65535,
                               description="The port of the default liveness endpoint and of /metrics.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text: one readable line per record; json: one JSON object per line, a "
                                    "decision's pool, reason and numbers as fields of their own.")
    pod_ip: str | None = Field(
        default=None,
        description="This pod's IP (the Downward API's status.podIP, which the kubelet probes): its family picks "
                    "the default liveness endpoint's address.",
    )
    reporting_instance: str = Field(
        default="poolpilot", description="Shown as the Event's reporting instance; the pod name in-cluster."
    )
    prometheus_round_seconds: float = Field(
        default=1.0, gt=0, le=60,
        description="One round of Prometheus queries serves every pool asking within this long after it.",
    )
    signals_refresh_seconds: float = Field(
        default=15.0, ge=0, le=3600,
        description="The QUEUE and KV% shown in the status refresh at most this often, unless replicas change.",
    )
    api_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="Every Kubernetes API request gives up after this long (connect and read), so a "
                    "half-open connection fails an evaluation, which is retried with backoff, instead of "
                    "hanging a pool's loop while the liveness probe stays green.",
    )
    watch_timeout_seconds: int = Field(
        # Whole seconds: the API server refuses `timeoutSeconds=300.0` with 400.
        default=300, gt=0, le=3600,
        description="The API server ends each watch after this long and Kopf starts a new one; a watch "
                    "silent for longer than this plus api_timeout_seconds is dropped and restarted.",
    )
    list_chunk_size: int = Field(
        default=500, ge=1, le=10_000,
        description="Initial lists (before each watch) come in pages of this many objects.",
    )
    wake_debounce_seconds: float = Field(
        default=0.2, ge=0, le=5,
        description="After an event wakes a pool, wait this long so a burst of events costs one evaluation.",
    )
    max_concurrent_upgrades: int = Field(
        default=2, ge=1, le=1000,
        description="When a new operator version renders a different pod template for an unchanged spec, at "
                    "most this many pools roll their pods at a time (each surge asks for a GPU). A user's spec "
                    "change still applies at once.",
    )
    max_concurrent_evaluations: int = Field(
        default=16, ge=1, le=1000,
        description="At most this many pools are evaluated at once; the rest wait their turn. When a thousand "
                    "pools start together, their evaluations' in-flight objects would otherwise all be alive "
                    "at once: that peak, not the steady state, set the operator's memory.",
    )
    sqs_queue_url: str | None = Field(
        default=None,
        description="An SQS queue EventBridge delivers EC2 interruption events to (spot interruption warnings, "
                    "rebalance recommendations, state changes, AWS Health scheduled changes): PoolPilot's own, "
                    "never Karpenter's or the Node Termination Handler's (a message goes to one consumer). "
                    "Unset: node taints and pod conditions only. Credentials the AWS way (IRSA, the environment).",
    )
    sqs_region: str | None = Field(default=None, description="The queue's region; unset: AWS_REGION.")
    sqs_wait_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait (WaitTimeSeconds).")
    router_image: str = Field(
        default=DEFAULT_ROUTER_IMAGE, min_length=1,
        description="The image of the bundled router's pods (fallback.route: router): the operator's own image "
                    "at its own version by default, since the router is its `poolpilot router` command. Set it "
                    "when the operator's image comes from a mirror (kustomize's `images:` does not reach it).",
    )

    leader_election: bool = Field(
        default=True,
        description="Run only while holding the coordination.k8s.io Lease lease_name: of the operator's replicas, "
                    "one leads and acts, the others stand by and take over when its Lease expires (README, "
                    "\"High availability\"). false: act at once, as the only replica.",
    )
    lease_name: str = Field(default="poolpilot", min_length=1, max_length=253, description="The Lease's name.")
    lease_namespace: str | None = Field(
        default=None,
        description="The Lease's namespace. Unset: the pod's own (pod_namespace, else the in-cluster "
                    "ServiceAccount's namespace file), else poolpilot-system.",
    )
    pod_namespace: str | None = Field(
        default=None, description="This pod's namespace (the Downward API's metadata.namespace)."
    )
    # client-go's defaults are 15 s, 10 s and 2 s. After a leader is killed (no release), the standby takes
    # over within lease_duration plus two of its polls (one to see the last renewal, one after the expiry):
    # 8 + 2 x 1.65 = 11.3 s at worst here, 15 s + 2 x 4.4 s with client-go's; with Kopf's start and the first
    # evaluation the pools are evaluated again within 15 s. lease_duration / renew_deadline is the clock-rate
    # skew tolerated between replicas (1.33), and their difference the margin for a write in flight (2 s).
    lease_duration_seconds: int = Field(
        default=8, ge=1, le=3600,
        description="A standby takes the Lease when its holder has not renewed it for this long, as measured on "
                    "the standby's own clock since it saw the Lease change.",
    )
    lease_renew_deadline_seconds: float = Field(
        default=6.0, gt=0, le=3600,
        description="The leader stops acting (and exits) when it has not renewed the Lease for this long; shorter "
                    "than lease_duration_seconds, so that it has stopped before anyone may take over.",
    )
    lease_retry_period_seconds: float = Field(
        default=1.5, gt=0, le=600,
        description="The leader renews the Lease this often; a standby looks at it this often (up to 10 % later).",
    )

    @model_validator(mode="after")
    def _lease_timings_in_order(self) -> OperatorSettings:
        # As client-go's NewLeaderElector requires (tools/leaderelection/leaderelection.go).
        if not self.lease_duration_seconds > self.lease_renew_deadline_seconds:
            raise ValueError("POOLPILOT_LEASE_DURATION_SECONDS must be greater than "
                             "POOLPILOT_LEASE_RENEW_DEADLINE_SECONDS")
        if not self.lease_renew_deadline_seconds > 1.2 * self.lease_retry_period_seconds:
            raise ValueError("POOLPILOT_LEASE_RENEW_DEADLINE_SECONDS must be greater than 1.2 x "
                             "POOLPILOT_LEASE_RETRY_PERIOD_SECONDS")
        return self

    def lease_namespace_or_default(self, namespace_file: pathlib.Path = IN_CLUSTER_NAMESPACE_FILE) -> str:
        """The Lease's namespace: the one set, else the pod's own, else poolpilot-system."""
        if self.lease_namespace:
            return self.lease_namespace
        if self.pod_namespace:
            return self.pod_namespace
        try:
            return namespace_file.read_text().strip() or DEFAULT_LEASE_NAMESPACE
        except OSError:
            return DEFAULT_LEASE_NAMESPACE

    @field_validator("prometheus_url")
    @classmethod
    def _a_prometheus_url(cls, value: str | None) -> str | None:
        if value:
            normalized_prometheus_url(value)
        return value or None

    @field_validator("allowed_prometheus_urls")
    @classmethod
    def _prometheus_urls(cls, values: list[str]) -> list[str]:
        for value in values:
            normalized_prometheus_url(value)
        return values

    def allowed_prometheus_url_set(self) -> frozenset[str]:
        """Every Prometheus URL the operator may query, normalised."""
        urls = [*self.allowed_prometheus_urls, *([self.prometheus_url] if self.prometheus_url else [])]
        return frozenset(normalized_prometheus_url(url) for url in urls)

    @field_validator("pod_ip")
    @classmethod
    def _an_ip_address(cls, value: str | None) -> str | None:
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address (set it from the pod's status.podIP)") from None
        return value or None

    def liveness_url(self) -> str:
        """The liveness endpoint: the one set, or the wildcard of the pod's address family."""
        if self.liveness_endpoint:
            return self.liveness_endpoint
        ipv6 = self.pod_ip is not None and ipaddress.ip_address(self.pod_ip).version == 6
        return f"http://{'[::]' if ipv6 else '0.0.0.0'}:{self.liveness_port}/healthz"


class InvalidSettings(ValueError):
    """Settings the operator cannot start with, in one line naming the variables."""


def load_operator_settings() -> OperatorSettings:
    """The settings from the environment, or :class:`InvalidSettings` saying which variable is wrong and why."""
    prefix = OperatorSettings.model_config.get("env_prefix", "")
    try:
        return OperatorSettings()
    except ValidationError as e:
        # A rule over several variables (the lease timings) names them in its message, with no location.
        problems = [(f"{prefix}{'_'.join(map(str, error['loc'])).upper()}: " if error["loc"] else "")
                    + error["msg"].removeprefix("Value error, ") for error in e.errors()]
        raise InvalidSettings("; ".join(problems)) from None
    except SettingsError as e:  # a list or object variable that is not JSON
        field = re.search(r'field "(\w+)"', str(e))
        name = f"{prefix}{field.group(1).upper()}" if field else "a POOLPILOT_ variable"
        raise InvalidSettings(f'{name}: not valid JSON; lists are JSON, e.g. a JSON list ["a", "b"]') from None
