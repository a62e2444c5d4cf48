"""Reading latency back from a scrape: the replicas' series of one variant summed into one histogram,
quantiles bounded by the bucket that holds them (as Prometheus' histogram_quantile bounds them)."""

from __future__ import annotations

import math

from raymaker.metrics.scrape import endpoint_latency


def _histogram(name: str, worker: str, variant: str, counts: dict[str, float], total: float) -> dict:
    labels = {"EndpointName": "Ep-1", "VariantName": variant, "WorkerId": worker}
    out = {(f"ray_sagemaker_{name}_bucket", tuple(sorted({**labels, "le": le}.items()))): v for le, v in counts.items()}
    out[(f"ray_sagemaker_{name}_count", tuple(sorted(labels.items())))] = counts["+Inf"]
    out[(f"ray_sagemaker_{name}_sum", tuple(sorted(labels.items())))] = total
    return out


def test_replicas_are_summed_and_quantiles_are_bucket_bounds() -> None:
    samples = {
        **_histogram("modellatency", "w1", "A", {"1000.0": 6, "5000.0": 9, "60000000.0": 10, "+Inf": 10}, 30_000),
        **_histogram("modellatency", "w2", "A", {"1000.0": 4, "5000.0": 9, "60000000.0": 10, "+Inf": 10}, 20_000),
        **_histogram("overheadlatency", "w1", "A", {"1000.0": 1, "5000.0": 1, "60000000.0": 1, "+Inf": 1}, 400),
        **_histogram("modellatency", "w3", "B", {"1000.0": 0, "5000.0": 0, "60000000.0": 0, "+Inf": 0}, 0),
    }
    samples[("ray_sagemaker_modellatency_count", (("EndpointName", "other"), ("VariantName", "A")))] = 99
    found = endpoint_latency("ep-1", samples)  # endpoint names are case-insensitive
    a = found[("ModelLatency", "A")]
    assert (a.count, a.total) == (20, 50_000)
    assert a.buckets == {1000.0: 10, 5000.0: 18, 60_000_000.0: 20, math.inf: 20}
    assert a.quantile(0.5) == 1000.0 and a.quantile(0.9) == 5000.0 and a.quantile(0.99) == 60_000_000.0
    assert a.cumulative() == [(1000.0, 0.5), (5000.0, 0.9), (60_000_000.0, 1.0)]
    assert found[("OverheadLatency", "A")].count == 1
    empty = found[("ModelLatency", "B")]
    assert empty.quantile(0.5) is None and empty.cumulative() == []
