"""Exact names of the counters the sources turn into rates, and of the router's metrics.

vLLM's gauges are in :class:`controller.core.signals.VLLM_METRICS`. Counters are exposed by
prometheus_client with a ``_total`` suffix and, unless disabled, a ``_created`` gauge per series (the
time the series was created: a restarted process has later ones), see
reference/llm-serving-control-planes.md section 1.2. The router's names are the fixed contract of
``poolpilot router``'s ``/metrics``.
"""

from __future__ import annotations

__all__ = ["ROUTER_METRICS", "ROUTER_METRICS_PORT", "VLLM_COUNTERS", "VLLM_TTFT"]


class VLLM_COUNTERS:  # a namespace of constants, named as the metrics are
    """vLLM's token counters (labels model_name and engine; summed over engine)."""

    PROMPT_TOKENS = "vllm:prompt_tokens_total"  # "Number of prefill tokens processed."
    GENERATION_TOKENS = "vllm:generation_tokens_total"  # "Number of generation tokens processed."
    PROMPT_TOKENS_CREATED = "vllm:prompt_tokens_created"
    GENERATION_TOKENS_CREATED = "vllm:generation_tokens_created"


class VLLM_TTFT:
    """vLLM's time-to-first-token histogram (labels model_name and engine; buckets 0.001 ... 2560 s and +Inf),
    reference/llm-serving-control-planes.md section 1.2; its series as prometheus_client exposes them."""

    HISTOGRAM = "vllm:time_to_first_token_seconds"  # "Histogram of time to first token in seconds."
    BUCKET = "vllm:time_to_first_token_seconds_bucket"  # cumulative, label le
    CREATED = "vllm:time_to_first_token_seconds_created"
    BOUND_LABEL = "le"


class ROUTER_METRICS:
    """``poolpilot router``'s series the pool's demand comes from."""

    REQUESTS = "poolpilot_router_requests_total"  # {backend="pool"|"api", outcome="ok"|"error"}, counter
    IN_FLIGHT = "poolpilot_router_in_flight"  # {backend}, gauge
    SPILLS = "poolpilot_router_spills_total"  # {reason}, counter
    # {backend}: tokens from the answers' usage; backend="api" is what the hosted API charges for.
    PROMPT_TOKENS = "poolpilot_router_prompt_tokens_total"
    GENERATION_TOKENS = "poolpilot_router_generation_tokens_total"
    REQUESTS_CREATED = "poolpilot_router_requests_created"
    SPILLS_CREATED = "poolpilot_router_spills_created"
    PROMPT_TOKENS_CREATED = "poolpilot_router_prompt_tokens_created"
    GENERATION_TOKENS_CREATED = "poolpilot_router_generation_tokens_created"
    API_BACKEND = "api"  # the backend label's value for the hosted API


ROUTER_METRICS_PORT = 8080  # `poolpilot router --port`'s default, where its /metrics is
