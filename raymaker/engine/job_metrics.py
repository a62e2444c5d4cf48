"""What only the job database knows, exported as gauges from the job service (``metrics.catalog``):

- resources by kind and status (``raymaker_jobs``);
- each running training job's algorithm metrics and MetricDefinitions matches, their latest values
  (``sagemaker_trainingjobs_AlgorithmMetric{TrainingJobName, MetricName}``): Prometheus samples them
  into a time series;
- each running tuning job's training jobs by status and its best objective so far, as
  DescribeHyperParameterTuningJob reports them.

One ``Collector`` thread per job service reads the database every ``COLLECT_S`` and sets the gauges.
Ray forgets a gauge ~20 s after its last value, so values are set again every round; a job's are kept
``RETAIN_S`` after it ends, long enough for any scrape interval to see its final values. The service
starts it (``ensure_collector``) when it first runs a training or tuning job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from raymaker.engine.database import database_ident
from raymaker.engine.kinds import Kind
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore
from raymaker.engine.tuning_jobs import describe_tuning_job
from raymaker.metrics import catalog
from raymaker.metrics.recorder import bound

COLLECT_S = 5.0
RETAIN_S = 300.0
RUNNING = ("InProgress", "Stopping")
# The Kind label: the resource's SageMaker name.
KIND_LABEL = {
    Kind.TUNING_JOB.value: "HyperParameterTuningJob",
    Kind.TRANSFORM_JOB.value: "TransformJob",
    Kind.ENDPOINT.value: "Endpoint",
}
TRAINING_JOB = "TrainingJob"

logger = logging.getLogger(__name__)


class Collector:
    """Reads the job database and sets the gauges; ``collect`` is one round (tests call it)."""

    def __init__(self, store: JobStore, *, retain_s: float = RETAIN_S):
        self.store, self.resources, self.retain_s = store, ResourceStore(store), retain_s
        self.database = database_ident(store.location)  # as the job service's actor name holds it
        self._counts_seen: set[tuple[str, str]] = set()
        # name -> when it was last seen running (jobs are kept retain_s after that)
        self._training: dict[str, float] = {}
        self._tuning: dict[str, float] = {}
        self._final_training: dict[str, list[dict[str, Any]]] = {}
        self._final_tuning: dict[str, dict[str, Any]] = {}

    def collect(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._counts()
        self._training_metrics(now)
        self._tuning_progress(now)

    # --- resources by kind and status -----------------------------------------------------------

    def _counts(self) -> None:
        c = self.store.connection()
        counts: dict[tuple[str, str], int] = {}
        for status, n in c.execute("SELECT status, COUNT(*) FROM training_jobs GROUP BY status").fetchall():
            counts[(TRAINING_JOB, str(status))] = int(n)
        rows = c.execute(
            "SELECT kind, status, COUNT(*) FROM resources WHERE status IS NOT NULL GROUP BY kind, status"
        ).fetchall()
        for kind, status, n in rows:
            if kind in KIND_LABEL:
                counts[(KIND_LABEL[kind], str(status))] = int(n)
        self._counts_seen |= set(counts)
        for kind, status in self._counts_seen:  # a status nothing has any more reads 0, not stale
            bound(catalog.JOBS, {"JobDatabase": self.database, "Kind": kind, "Status": status}).set(
                counts.get((kind, status), 0)
            )

    # --- training jobs' metrics ----------------------------------------------------------------------

    def _training_metrics(self, now: float) -> None:
        running = {r["name"] for s in RUNNING for r in self.store.list_training_jobs(status=s, max_results=10_000)}
        for name in running:
            self._training[name] = now
        # A job that began and ended between two rounds was never seen running: its last change counts.
        for name, modified in self.store.connection().execute(
            "SELECT name, last_modified_time FROM training_jobs WHERE last_modified_time > ?", (now - self.retain_s,)
        ).fetchall():
            self._training.setdefault(name, float(modified))
        for name, last in list(self._training.items()):
            if name in running:
                values = self.store.latest_metrics(name)
            elif now - last > self.retain_s:
                del self._training[name]
                self._final_training.pop(name, None)
                continue
            else:  # ended: its final values, read once
                values = self._final_training.get(name)
                if values is None:
                    values = self._final_training[name] = self.store.latest_metrics(name)
            _set_algorithm_metrics(name, values)

    # --- tuning progress ---------------------------------------------------------------------------

    def _tuning_progress(self, now: float) -> None:
        kind = Kind.TUNING_JOB.value
        running = {r["name"] for s in RUNNING for r in self.resources.list(kind, status=s, max_results=10_000)}
        for name in running:
            self._tuning[name] = now
        for name, modified in self.store.connection().execute(
            "SELECT name, last_modified_time FROM resources WHERE kind = ? AND last_modified_time > ?",
            (kind, now - self.retain_s),
        ).fetchall():
            self._tuning.setdefault(name, float(modified))
        for name, last in list(self._tuning.items()):
            if name not in running and now - last > self.retain_s:
                del self._tuning[name]
                self._final_tuning.pop(name, None)
                continue
            described = self._final_tuning.get(name)
            if described is None:
                try:
                    described = describe_tuning_job(
                        self.resources, self.store, {"HyperParameterTuningJobName": name}
                    )
                except Exception:  # noqa: BLE001 - deleted meanwhile, say: nothing to show
                    del self._tuning[name]
                    continue
                if name not in running:
                    self._final_tuning[name] = described
            _set_tuning(name, described)


def _set_algorithm_metrics(job: str, values: Iterable[dict[str, Any]]) -> None:
    for m in values:
        bound(catalog.ALGORITHM_METRIC, {"TrainingJobName": job, "MetricName": m["MetricName"]}).set(
            float(m["Value"])
        )


def _set_tuning(name: str, described: dict[str, Any]) -> None:
    for status, n in described["TrainingJobStatusCounters"].items():
        bound(catalog.TUNING_TRAINING_JOBS, {"HyperParameterTuningJobName": name, "Status": status}).set(n)
    best = (described.get("BestTrainingJob") or {}).get("FinalHyperParameterTuningJobObjectiveMetric")
    if best:
        tags = {"HyperParameterTuningJobName": name, "MetricName": best["MetricName"]}
        bound(catalog.TUNING_BEST_OBJECTIVE, tags).set(float(best["Value"]))


_collectors: dict[str, Collector] = {}  # by database (repr names its location)
_lock = threading.Lock()


def ensure_collector(store: JobStore) -> Collector | None:
    """Start the collector thread for ``store`` in this process (the job service) unless it runs, or
    metrics are off (``RAYMAKER_METRICS=off``)."""
    if not catalog.enabled():
        return None
    with _lock:
        found = _collectors.get(repr(store))
        if found is None:
            found = _collectors[repr(store)] = Collector(store)
            threading.Thread(target=_collect_forever, args=(found,), daemon=True, name="raymaker-metrics").start()
    return found


def _collect_forever(collector: Collector) -> None:
    while True:
        try:
            collector.collect()
        except Exception:  # noqa: BLE001 - a database hiccup: the next round tries again
            logger.warning("raymaker metrics: a collection round failed", exc_info=True)
        time.sleep(COLLECT_S)
