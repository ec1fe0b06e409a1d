"""vLLM load signals per pool, behind one small interface (:class:`MetricsSource`).

``prometheus``: a constant number of PromQL queries per round for all pools.
``pods``: scrape each ready replica's ``/metrics`` directly (no Prometheus needed, no scrape lag).
Both return ``PoolSignals`` or a ``MetricsProblem`` for every pool asked about, and never
raise for a failing backend: the problem is the answer.
"""

from controller.sources.metrics.base import MetricsSource, PoolTarget, ReadStats
from controller.sources.metrics.pods import PodsSource
from controller.sources.metrics.prometheus import PrometheusSource

__all__ = ["MetricsSource", "PodsSource", "PoolTarget", "PrometheusSource", "ReadStats"]
