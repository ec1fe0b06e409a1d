"""The router's own metrics (fixed names), in a registry per app; every labelled child is made once, up front,
so a request touches no label lookup and every series shows from zero."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.router.picking import SpillReason

__all__ = ["Backend", "BackendMetrics", "RejectReason", "RouterMetrics"]

Backend = typing.Literal["pool", "api"]
RejectReason = typing.Literal["body_too_large", "bad_request", "unknown_model", "unavailable"]

# A completion lasts from milliseconds (an error) to minutes (a long answer, queued).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TTFB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class BackendMetrics:
    ok: Counter
    error: Counter
    in_flight: Gauge
    prompt_tokens: Counter
    generation_tokens: Counter
    duration: Histogram
    time_to_first_byte: Histogram


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        requests = Counter("poolpilot_router_requests", "Requests sent upstream, by backend and how they ended.",
                           ["backend", "outcome"], registry=registry)
        in_flight = Gauge("poolpilot_router_in_flight", "Requests in flight upstream, by backend.", ["backend"],
                          registry=registry)
        spills = Counter("poolpilot_router_spills", "Requests sent to the hosted API instead of the pool, by reason.",
                         ["reason"], registry=registry)
        prompt = Counter("poolpilot_router_prompt_tokens", "Prompt tokens, from the answers' usage.", ["backend"],
                         registry=registry)
        generation = Counter("poolpilot_router_generation_tokens", "Generated tokens, from the answers' usage.",
                             ["backend"], registry=registry)
        duration = Histogram("poolpilot_router_request_duration_seconds",
                             "From the request's arrival to the answer's last byte, by backend.", ["backend"],
                             buckets=_DURATION_BUCKETS, registry=registry)
        ttfb = Histogram("poolpilot_router_time_to_first_byte_seconds",
                         "From the request's arrival to the answer's first byte, by backend.", ["backend"],
                         buckets=_TTFB_BUCKETS, registry=registry)
        rejected = Counter("poolpilot_router_rejected", "Requests the router answered itself, by reason.",
                           ["reason"], registry=registry)

        def backend(name: Backend) -> BackendMetrics:
            return BackendMetrics(
                ok=requests.labels(name, "ok"), error=requests.labels(name, "error"), in_flight=in_flight.labels(name),
                prompt_tokens=prompt.labels(name), generation_tokens=generation.labels(name),
                duration=duration.labels(name), time_to_first_byte=ttfb.labels(name),
            )

        self.pool = backend("pool")
        self.api = backend("api")
        self.spills: dict[SpillReason, Counter] = {
            reason: spills.labels(reason) for reason in typing.get_args(SpillReason)}
        self.rejected: dict[RejectReason, Counter] = {
            reason: rejected.labels(reason) for reason in typing.get_args(RejectReason)}
