"""The job service's collector exports a training job's algorithm metrics even when the job began
and ended between two of its rounds (a short job), and stops once the job ended longer ago than it
keeps them."""

from __future__ import annotations

import time

import pytest

from raymaker.engine import job_metrics
from raymaker.engine.job_metrics import Collector
from raymaker.engine.store import JobStore
from tests.engine.helpers import training_request


def test_a_job_that_ran_between_two_rounds_is_exported(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    exported: list[tuple[str, list[dict]]] = []
    monkeypatch.setattr(job_metrics, "_set_algorithm_metrics", lambda job, values: exported.append((job, list(values))))
    store = JobStore(tmp_path / "jobs.db")
    collector = Collector(store, retain_s=300)
    collector.collect()  # a round before the job exists
    store.create_training_job(training_request(TrainingJobName="short-job"))
    store.add_metrics("short-job", [("train:auc", 0.9, 1), ("validation:auc", 0.8, 1)])
    for status in ("Downloading", "Training", "Uploading", "Completed"):  # all before the next round
        store.transition_training_job("short-job", status)
    exported.clear()
    collector.collect()
    (job, values), = exported
    assert job == "short-job" and {m["MetricName"]: m["Value"] for m in values} == {
        "train:auc": 0.9, "validation:auc": 0.8}
    exported.clear()
    collector.collect(now=time.time() + 301)  # kept 300 s after it ended, then no more
    assert exported == []
