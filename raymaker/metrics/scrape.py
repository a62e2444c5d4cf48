"""Reading raymaker's metrics back from a live scrape of the cluster, as Prometheus would: every live
node's Ray metrics endpoint (the ones Ray's service discovery file lists), parsed with
prometheus_client's own parser. The web console's latency charts and the metrics tests read it."""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from raymaker.metrics import catalog

Series = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def metrics_urls() -> list[str]:
    """Every live node's metrics endpoint (this process must have joined the Ray cluster)."""
    import ray

    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics" for n in ray.nodes() if n["Alive"]]


def scrape(urls: list[str] | None = None, timeout_s: float = 10.0) -> dict[Series, float]:
    """One scrape of every node: (sample name, labels) -> value, raymaker's samples only."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Series, float] = {}
    for url in metrics_urls() if urls is None else urls:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith(("ray_sagemaker_", "ray_raymaker_")):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class Latency:
    """One histogram summed over the series Ray keeps apart (one per replica): cumulative counts per
    bucket's upper bound (microseconds), the count and the sum."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (as Prometheus' histogram_quantile
        bounds it), None without requests."""
        if self.count <= 0:
            return None
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= q * self.count:
                return bound
        return math.inf

    def cumulative(self) -> list[tuple[float, float]]:
        """(upper bound in microseconds, share of requests at or under it, 0-1), finite bounds only."""
        if self.count <= 0:
            return []
        return [(b, self.buckets[b] / self.count) for b in sorted(self.buckets) if math.isfinite(b)]


def endpoint_latency(endpoint: str, samples: dict[Series, float] | None = None) -> dict[tuple[str, str], Latency]:
    """(CloudWatch metric, variant) -> Latency for ModelLatency and OverheadLatency of ``endpoint``."""
    samples = scrape() if samples is None else samples
    out: dict[tuple[str, str], Latency] = {}
    for metric in (catalog.MODEL_LATENCY, catalog.OVERHEAD_LATENCY):
        bucket, total, count = metric.series()
        for (name, labels), value in samples.items():
            tags = dict(labels)
            if name not in (bucket, count, total) or tags.get("EndpointName", "").lower() != endpoint.lower():
                continue
            latency = out.setdefault((metric.cloudwatch_name, tags.get("VariantName", "")), Latency())
            if name == bucket:
                bound = float(tags["le"])
                latency.buckets[bound] = latency.buckets.get(bound, 0.0) + value
            elif name == count:
                latency.count += value
            else:
                latency.total += value
    return out
