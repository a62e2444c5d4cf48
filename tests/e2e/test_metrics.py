"""raymaker's CloudWatch-named metrics in a real Prometheus scrape of Ray's metrics endpoints (issue 14):
after a training job, a tuning job and endpoint traffic (2xx and 4xx, sent over HTTP through Serve's
HAProxy ingress), every metric of ``metrics.catalog`` is there with CloudWatch's dimensions as labels,
the counts are the requests sent, the latency histograms hold them, and every query of the shipped
Grafana dashboards names a metric the scrape has.

Ray's exporters push every 10 s and drop a gauge ~20 s after its last value, so a scraper thread reads
every node's endpoint every 2 s for the whole module and keeps every series it saw."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from raymaker import Estimator, Session, TrainingInput
from raymaker.engine.database import database_ident
from raymaker.metrics import catalog
from raymaker.metrics.scrape import Series, endpoint_latency, scrape
from raymaker.sdk.serializers import CSVSerializer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "metrics-e2e"
TUNING = "metrics-tune"
GOOD, BAD_FEATURES, BAD_HEADER = 20, 5, 3  # requests sent: 200, 400 from the model, 400 before it

class Scraper:
    """Scrapes every 2 s in a thread; ``seen`` holds every series ever scraped (last value)."""

    def __init__(self) -> None:
        self.seen: dict[Series, float] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.update(scrape())
            except Exception as e:  # noqa: BLE001 - shown by the tests that find nothing
                self.errors.append(repr(e))
            self._stop.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def select(samples: dict[Series, float], name: str, **labels: str) -> dict[Series, float]:
    return {
        k: v for k, v in samples.items() if k[0] == name and all(dict(k[1]).get(a) == b for a, b in labels.items())
    }


def total(samples: dict[Series, float], name: str, **labels: str) -> float:
    """Summed over the series Ray tells apart by its own labels (WorkerId: one per replica)."""
    return sum(select(samples, name, **labels).values())


def wait_until(check: Any, timeout: float = 60.0) -> dict[Series, float]:
    """Scrape until ``check(samples)`` holds (exports are periodic); the last scrape either way."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape()
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(1.0)


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics-data")
    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (a, b) in {"train": (xt, yt), "validation": (xv, yv)}.items():
        (d / name).mkdir()
        np.savetxt(d / name / "part.csv", np.column_stack([b, a]), delimiter=",", fmt="%.7g")
    return d, xv


def _tuning_request(channels: Path) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": TUNING,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxParallelTrainingJobs": 1, "MaxNumberOfTrainingJobs": 2},
            "ParameterRanges": {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "5"}]},
            "TrainingJobEarlyStoppingType": "Off",
            "RandomSeed": 3,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"num_round": "10", "objective": "binary:logistic"},
            "AlgorithmSpecification": {"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
            "InputDataConfig": [
                {
                    "ChannelName": c,
                    "ContentType": "text/csv",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{channels}/{c}/"}},
                }
                for c in ("train", "validation")
            ],
            "OutputDataConfig": {"S3OutputPath": f"file://{channels}/output"},
            "ResourceConfig": {
                "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1, "KeepAlivePeriodInSeconds": 30,
            },  # fmt: skip
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }


def _post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> int:
    conn.request("POST", f"/endpoints/{ENDPOINT}/invocations", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.fixture(scope="module")
def workload(session, channels):
    """A training job (kept warm, so its instance exports its last usage sample), a tuning job of two
    trials, an endpoint of its model and requests to it; what the scraper saw meanwhile."""
    data, x_val = channels
    scraper = Scraper()
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 30, "max_depth": 3, "eval_metric": "auc"},
        output_path=f"file://{data}/output",
        instance_type="ml.m5.large",
        keep_alive_period_in_seconds=30,
        session=session,
    )
    est.fit(
        {
            "train": TrainingInput(f"file://{data}/train/", content_type="text/csv"),
            "validation": TrainingInput(f"file://{data}/validation/", content_type="text/csv"),
        },
        logs=False,
    )
    job = est.latest_training_job.name
    session.call("CreateHyperParameterTuningJob", _tuning_request(data))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        tuning = session.call("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": TUNING})
        if tuning["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.5)
    predictor = est.deploy(1, "local", endpoint_name=ENDPOINT, serializer=CSVSerializer())
    url = urlsplit(session.runtime_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    statuses = []
    for row in x_val[:GOOD]:
        statuses.append(_post(conn, ",".join(f"{v:.9g}" for v in row).encode(), {"Content-Type": "text/csv"}))
    for row in x_val[:BAD_FEATURES]:  # 29 of 30 features: the model answers 400
        statuses.append(_post(conn, ",".join(f"{v:.9g}" for v in row[1:]).encode(), {"Content-Type": "text/csv"}))
    for _ in range(BAD_HEADER):  # a Content-Type over InvokeEndpoint's 1024 characters: 400 before the model
        statuses.append(_post(conn, b"1,2", {"Content-Type": "text/csv;" + "x" * 1100}))
    conn.close()
    try:
        yield {"job": job, "tuning": tuning, "statuses": statuses, "scraper": scraper, "session": session}
    finally:
        scraper.stop()
        predictor.delete_endpoint()


def _endpoint_done(samples: dict[Series, float]) -> bool:
    want = GOOD + BAD_FEATURES + BAD_HEADER
    return (
        total(samples, "ray_sagemaker_invocations_total", EndpointName=ENDPOINT) >= want
        and total(samples, "ray_sagemaker_overheadlatency_count", EndpointName=ENDPOINT) >= want
        and total(samples, "ray_sagemaker_modellatency_count", EndpointName=ENDPOINT) >= GOOD + BAD_FEATURES
    )


def _tuning_done(samples: dict[Series, float]) -> bool:
    # The collector reads the database every 5 s and Ray exports every 10 s: the tuning job's final
    # counters may reach the scrape after the endpoint's requests do.
    return total(samples, "ray_raymaker_tuning_training_jobs", HyperParameterTuningJobName=TUNING, Status="Completed") == 2


@pytest.fixture(scope="module")
def final(workload) -> dict[Series, float]:
    """A scrape once every request sent and the tuning job's end are exported (then everything the
    scraper saw, merged under it)."""
    samples = wait_until(lambda s: _endpoint_done(s) and _tuning_done(s), timeout=60)
    time.sleep(2.5)  # one more round of the scraper, which runs throughout
    return {**workload["scraper"].seen, **samples}


def test_the_requests_sent_were_answered_as_planned(workload):
    statuses = workload["statuses"]
    assert statuses == [200] * GOOD + [400] * (BAD_FEATURES + BAD_HEADER)


def test_endpoint_counts_match_the_requests_sent(final):
    labels = {"EndpointName": ENDPOINT, "VariantName": "AllTraffic"}
    sent = GOOD + BAD_FEATURES + BAD_HEADER
    assert total(final, "ray_sagemaker_invocations_total", **labels) == sent
    assert total(final, "ray_sagemaker_invocation4xxerrors_total", **labels) == BAD_FEATURES + BAD_HEADER
    # None was a 5xx: the series is there (CloudWatch's 0 for every other request), at 0.
    assert select(final, "ray_sagemaker_invocation5xxerrors_total", **labels)
    assert total(final, "ray_sagemaker_invocation5xxerrors_total", **labels) == 0
    # The model ran for the good rows and the 29-feature rows, not for the refused headers.
    assert total(final, "ray_sagemaker_invocationsperinstance_total", **labels) == GOOD + BAD_FEATURES
    assert total(final, "ray_sagemaker_modellatency_count", **labels) == GOOD + BAD_FEATURES
    assert total(final, "ray_sagemaker_overheadlatency_count", **labels) == sent


def test_latency_histograms_hold_the_requests(final):
    labels = {"EndpointName": ENDPOINT, "VariantName": "AllTraffic"}
    for name, count in (("ModelLatency", GOOD + BAD_FEATURES), ("OverheadLatency", GOOD + BAD_FEATURES + BAD_HEADER)):
        base = f"ray_sagemaker_{name.lower()}"
        total_us = total(final, base + "_sum", **labels)
        assert 0 < total_us < count * 5_000_000, (name, total_us)  # microseconds: none near 5 s
        infinite = total(final, base + "_bucket", le="+Inf", **labels)
        assert infinite == count
        # Cumulative buckets: non-decreasing up to +Inf, and the requests fall in finite ones.
        bounds = sorted(
            (float(dict(k[1])["le"]), v) for k, v in select(final, base + "_bucket", **labels).items()
        )
        values = [v for _, v in bounds]
        assert values == sorted(values)
        assert select(final, base + "_bucket", le="60000000.0", **labels), "the 60 s bucket is missing"
        assert total(final, base + "_bucket", le="60000000.0", **labels) == count
        # The reader the web console uses sums the replicas' series into one histogram.
        latency = endpoint_latency(ENDPOINT, final)[(name, "AllTraffic")]
        assert latency.count == count and latency.total == total_us
        assert 0 < latency.quantile(0.5) <= latency.quantile(0.99) <= 60_000_000
        assert latency.cumulative()[-1] == (60_000_000.0, 1.0)


def test_endpoint_instance_usage(final):
    for name in ("ray_sagemaker_endpoints_cpuutilization", "ray_sagemaker_endpoints_memoryutilization"):
        found = select(final, name, EndpointName=ENDPOINT, VariantName="AllTraffic")
        assert found, f"no {name} for the endpoint's replica"
        assert all(0 <= v < 100 * 64 for v in found.values())
    memory = select(final, "ray_sagemaker_endpoints_memoryutilization", EndpointName=ENDPOINT)
    assert all(0 < v <= 100 for v in memory.values())


def test_training_job_metrics_and_instance_usage(workload, final):
    job, session = workload["job"], workload["session"]
    described = session.call("DescribeTrainingJob", {"TrainingJobName": job})
    finals = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}
    assert "validation:auc" in finals and "train:auc" in finals, finals
    for metric, value in finals.items():  # every metric the algorithm emitted, its final value
        found = select(final, "ray_sagemaker_trainingjobs_algorithmmetric", TrainingJobName=job, MetricName=metric)
        assert found, f"{metric} of {job} missing"
        assert all(v == pytest.approx(value) for v in found.values())
    host = f"{job}/algo-1"
    for name in ("ray_sagemaker_trainingjobs_cpuutilization", "ray_sagemaker_trainingjobs_memoryutilization"):
        found = select(final, name, Host=host)
        assert found, f"no {name} for {host}; seen hosts: {_hosts(final)}"
    assert any(v > 0 for v in select(final, "ray_sagemaker_trainingjobs_memoryutilization", Host=host).values())


def _hosts(samples: dict[Series, float]) -> set[str]:
    return {dict(k[1]).get("Host", "") for k in samples if "Host" in dict(k[1])}


def test_tuning_progress(workload, final):
    tuning = workload["tuning"]
    assert tuning["HyperParameterTuningJobStatus"] == "Completed", tuning.get("FailureReason")
    counters = tuning["TrainingJobStatusCounters"]
    for status, n in counters.items():
        assert total(final, "ray_raymaker_tuning_training_jobs", HyperParameterTuningJobName=TUNING, Status=status) == n
    assert counters["Completed"] == 2
    best = tuning["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]
    found = select(final, "ray_raymaker_tuning_best_objective", HyperParameterTuningJobName=TUNING, MetricName="validation:auc")
    assert found and all(v == pytest.approx(best["Value"]) for v in found.values())


def test_jobs_by_kind_and_status(workload):
    session = workload["session"]
    # This session's job database: other tests' databases (their own job services) count theirs.
    mine = {"JobDatabase": database_ident(session.backend.store.location)}
    completed = len(session.call("ListTrainingJobs", {"StatusEquals": "Completed", "MaxResults": 100})["TrainingJobSummaries"])
    assert completed >= 3  # the job and the two trials

    def counted(samples: dict[Series, float]) -> bool:
        return (
            total(samples, "ray_raymaker_jobs", Kind="TrainingJob", Status="Completed", **mine) == completed
            and total(samples, "ray_raymaker_jobs", Kind="Endpoint", Status="InService", **mine) >= 1
        )

    samples = wait_until(counted, timeout=30)
    assert total(samples, "ray_raymaker_jobs", Kind="TrainingJob", Status="Completed", **mine) == completed
    tunings = session.call("ListHyperParameterTuningJobs", {"StatusEquals": "Completed", "MaxResults": 100})
    assert total(samples, "ray_raymaker_jobs", Kind="HyperParameterTuningJob", Status="Completed", **mine) == len(
        tunings["HyperParameterTuningJobSummaries"]
    )
    assert total(samples, "ray_raymaker_jobs", Kind="Endpoint", Status="InService", **mine) >= 1


def test_every_catalog_metric_is_scraped_with_its_dimensions(final):
    missing, unlabelled = [], []
    for metric in catalog.CATALOG:
        if metric.name in catalog.GPU_ONLY:
            continue  # this machine has no GPU: no instance exports them (checked on a GPU machine)
        for name in metric.series():
            found = [dict(k[1]) for k in final if k[0] == name]
            if not found:
                missing.append(name)
            elif not all(set(metric.labels) <= set(labels) for labels in found):
                unlabelled.append(name)
    assert not missing, f"not in the scrape: {missing}"
    assert not unlabelled, f"without CloudWatch's dimensions: {unlabelled}"


def _queries(dashboard: dict[str, Any]) -> list[str]:
    out = []
    for panel in dashboard["panels"]:
        out += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        for inner in panel.get("panels", []):  # collapsed rows
            out += [t["expr"] for t in inner.get("targets", []) if "expr" in t]
    out += [v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]  # fmt: skip
    return [q for q in out if q]


def test_every_dashboard_query_names_an_exported_metric(final):
    import re

    dashboards = sorted((ROOT / "dashboards" / "grafana").glob("*.json"))
    assert len(dashboards) >= 3, dashboards
    scraped = {k[0] for k in final}
    known = catalog.by_exported_name()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        queries = _queries(dashboard)
        assert queries, f"{path.name} has no queries"
        for query in queries:
            names = set(re.findall(r"\bray_(?:sagemaker|raymaker)_[A-Za-z0-9_]+", query))
            assert names, f"{path.name}: {query!r} names no raymaker metric"
            for name in names:
                assert name in known, f"{path.name}: {name} is not in metrics.catalog"
                if known[name].name in catalog.GPU_ONLY:
                    continue  # exported only by instances with GPUs; none here
                assert name in scraped, f"{path.name}: {name} is not in the live scrape"
