"""The metric catalog against what depends on it: the names Ray accepts and exports, docs/metrics.md's
table, and the Prometheus configurations' service discovery file (Ray's own constant)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from raymaker.cluster import local
from raymaker.metrics import catalog

ROOT = Path(__file__).resolve().parents[2]
RAY_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Ray's check, less ':' (deprecated there)


def test_names_are_valid_lower_case_and_unique():
    names = [m.name for m in catalog.CATALOG]
    assert all(RAY_NAME.match(n) for n in names), names
    assert all(n == n.lower() for n in names), "Ray's exporter lowercases names: declare them so"
    samples = [s for m in catalog.CATALOG for s in m.series()]
    assert len(samples) == len(set(samples))
    for m in catalog.CATALOG:
        if m.cloudwatch_name:  # CloudWatch's own name, recognisable in the Prometheus one
            assert m.name.endswith(m.cloudwatch_name.lower()), m
        assert m.labels and all(RAY_NAME.match(label) for label in m.labels)


def test_docs_table_lists_every_metric_as_declared():
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`ray_"):
            rows[cells[0].strip("`")] = cells
    assert set(rows) == {m.exported for m in catalog.CATALOG}
    for m in catalog.CATALOG:
        name, kind, namespace, cw, labels, unit = rows[m.exported]
        assert kind == m.kind
        assert namespace.strip("`") == (m.namespace or "none")
        assert [x.strip() for x in labels.split(",")] == list(m.labels)
        assert unit == m.unit
        if m.cloudwatch_name:
            assert cw == m.cloudwatch_name


@pytest.mark.parametrize("config", ["local.yml", "aws.yml"])
def test_prometheus_reads_rays_service_discovery_file(config):
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    parsed = yaml.safe_load((ROOT / "dashboards" / "prometheus" / config).read_text())
    (job,) = parsed["scrape_configs"]
    (files,) = [sd["files"] for sd in job["file_sd_configs"]]
    # Where `raymaker up` (and `ray start` on a launched cluster) leave it by default.
    assert files == [str(Path(local.default_ray_temp_dir({})) / PROMETHEUS_SERVICE_DISCOVERY_FILE)]


def test_kuberay_podmonitor_selects_the_clusters_pods():
    monitor = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "kuberay-podmonitor.yaml").read_text())
    cluster = next(yaml.safe_load_all((ROOT / "cluster" / "kuberay.yaml").read_text()))
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert monitor["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    # The head's metrics port is its own: KubeRay's default (8080) is the runtime's listener there.
    head = cluster["spec"]["headGroupSpec"]
    ports = head["template"]["spec"]["containers"][0]["ports"]
    numbers = [p["containerPort"] for p in ports]
    assert len(numbers) == len(set(numbers)), f"a port listed twice: {numbers}"
    named = {p["name"]: p["containerPort"] for p in ports}
    scraped = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    assert named[scraped] == int(head["rayStartParams"]["metrics-export-port"]) != named["serve"]


@pytest.mark.parametrize(
    ("envs", "on"),
    [
        ((), True),
        (({"RAYMAKER_METRICS": "off"},), False),
        (({"RAYMAKER_METRICS": "on"}, {"RAYMAKER_METRICS": "off"}), True),  # the model's own wins
        (({}, {"RAYMAKER_METRICS": "0"}), False),
    ],
)
def test_the_switch(envs, on, monkeypatch):
    monkeypatch.delenv("RAYMAKER_METRICS", raising=False)
    assert catalog.enabled(*envs) is on
    monkeypatch.setenv("RAYMAKER_METRICS", "off")
    assert catalog.enabled() is False
