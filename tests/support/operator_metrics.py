"""Reading the real operator process' /metrics, as Prometheus would scrape it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from devkube.localrun import OperatorProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(operator: OperatorProcess) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, or None when there is no such series."""
    return samples.get((name, frozenset(labels.items())))


def pool_series(samples: Samples, pool: str) -> list[str]:
    return [name for name, labels in samples if ("pool", pool) in labels]
