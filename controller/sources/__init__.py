"""Edges that read the world: each source turns its raw input into the core's typed values.

``metrics``: vLLM load signals per pool, from Prometheus or from the replicas themselves.
Nothing in ``controller.core`` imports from here; the core only sees the values.
"""

__all__: list[str] = []
