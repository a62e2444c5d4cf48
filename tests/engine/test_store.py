"""Job records in SQLite: persistence across a new JobStore (a restart), uniqueness under concurrent
writers (threads and processes), compare-and-set updates, metrics, logs, audit, and the
DescribeTrainingJob response checked against botocore's output shape."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sqlite3
import threading
from pathlib import Path

import pytest
from botocore.validate import ParamValidator

from raymaker.cluster.definition import InstanceType
from raymaker.engine import metering
from raymaker.engine.kinds import Kind
from raymaker.engine.resources import ResourceStore
from raymaker.engine.states import IllegalTransition
from raymaker.engine.store import JobStore, default_db_path
from raymaker.engine.training_jobs import describe_training_job, training_job_summary
from raymaker.engine.validation import validate_training_job
from raymaker.protocol.errors import ConflictException, ResourceInUse, ResourceNotFound, ValidationError
from raymaker.protocol.service_model import output_shape
from tests.engine.helpers import training_request


@pytest.fixture
def store(job_store: JobStore) -> JobStore:
    return job_store  # every test here runs on SQLite and on PostgreSQL


def assert_valid_output(operation: str, response: dict) -> None:
    report = ParamValidator().validate(response, output_shape(operation))
    assert not report.has_errors(), report.generate_report()


def test_default_path_is_under_raymaker_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAYMAKER_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "raymaker.db"
    s = JobStore()
    assert s.path == default_db_path() and s.path.exists()
    mode = sqlite3.connect(s.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s.close()


def test_create_get_and_survive_a_restart(store: JobStore) -> None:
    record = store.create_training_job(training_request(TrainingJobName="Job-A"), now=1000.0)
    assert record["name"] == "Job-A"
    assert record["arn"] == "arn:aws:sagemaker:us-east-1:000000000000:training-job/job-a"
    assert record["status"] == "InProgress" and record["secondary_status"] == "Starting"
    assert record["transitions"] == [
        {"Status": "Starting", "StartTime": 1000.0, "StatusMessage": "Starting the training job"}
    ]
    assert record["creation_time"] == record["last_modified_time"] == 1000.0
    assert record["attempt"] == 1 and record["restart_count"] == 0
    assert record["request"]["HyperParameters"] == {"num_round": "10", "eta": "0.1"}

    store.close()
    again = JobStore(store.url)  # a new process would do the same
    assert again.get_training_job("Job-A") == record
    assert again.get_training_job("job-a")["name"] == "Job-A"  # names are case-insensitive
    again.close()


def test_create_from_a_spec(store: JobStore, fake_algorithms: None) -> None:
    types = {"ml.m5.large": InstanceType("ml.m5.large", cpus=0.5)}
    spec = validate_training_job(training_request(TrainingJobName="from-spec"), instance_types=types)
    assert store.create_training_job(spec)["request"] == spec.request


def test_duplicate_name_is_resource_in_use(store: JobStore) -> None:
    store.create_training_job(training_request())
    with pytest.raises(ResourceInUse) as info:
        store.create_training_job(training_request())
    assert info.value.to_wire()["__type"] == "ResourceInUse"
    assert "already exists" in info.value.message
    with pytest.raises(ResourceInUse):
        store.create_training_job(training_request(TrainingJobName="JOB-1"))


def test_unknown_job_is_resource_not_found(store: JobStore) -> None:
    with pytest.raises(ResourceNotFound) as info:
        store.get_training_job("nope")
    assert info.value.code == "ResourceNotFound" and "nope" in info.value.message
    with pytest.raises(ResourceNotFound):
        store.update_training_job("nope", failure_reason="x")
    with pytest.raises(ResourceNotFound):
        store.transition_training_job("nope", "Downloading")


def test_concurrent_threads_creating_one_name_exactly_one_wins(store: JobStore) -> None:
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            store.create_training_job(training_request(TrainingJobName="race"))
            outcomes.append("won")
        except ResourceInUse:
            outcomes.append("in-use")

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["in-use"] * (n - 1) + ["won"]
    assert len(store.list_training_jobs()) == 1


def _create_in_child(path: str, barrier, results) -> None:
    store = JobStore(path)
    barrier.wait()
    try:
        store.create_training_job(training_request(TrainingJobName="proc-race"))
        results.put("won")
    except ResourceInUse:
        results.put("in-use")
    store.append_logs("shared", [f"line from a child {i}" for i in range(20)])


def test_concurrent_processes_creating_one_name_exactly_one_wins(store: JobStore) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_create_in_child, args=(store.url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in range(n))
    assert outcomes == ["in-use"] * (n - 1) + ["won"]
    # Log sequence numbers stay dense and unique with several writing processes.
    assert [r["seq"] for r in store.logs("shared")] == list(range(1, 20 * n + 1))


def _write_in_child(location: str, barrier, numbers, k: int) -> None:
    store = JobStore(location)
    resources = ResourceStore(store)
    barrier.wait()
    for i in range(k):
        name = f"w{os.getpid()}-{i}"
        store.create_training_job(training_request(TrainingJobName=name))
        store.transition_training_job(name, "Downloading")
        store.add_metrics(name, [("train:rmse", 1.0 / (i + 1), i)])
        store.append_logs("shared", [name])
        store.record_api_calls([{"event_name": "DescribeTrainingJob", "params": {"TrainingJobName": name}}] * 5)
        store.set_owner(f"arn:test:{name}", "writer")
        numbers.put(resources.next_number(Kind.MODEL, "counter", "n"))  # a read-then-write in one move


def test_concurrent_writers_in_several_processes_lose_nothing(store: JobStore) -> None:
    """Service processes sharing one database: every write of every kind lands, once."""
    ResourceStore(store).create(Kind.MODEL, "counter", {})
    ctx = multiprocessing.get_context("fork")
    n, k = 4, 25
    barrier, numbers = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_write_in_child, args=(store.url, barrier, numbers, k)) for _ in range(n)]
    for p in procs:
        p.start()
    got = sorted(numbers.get(timeout=120) for _ in range(n * k))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert got == list(range(1, n * k + 1))  # each number handed out once: no lost update
    jobs = store.list_training_jobs(max_results=1000)
    assert len(jobs) == n * k and {j["secondary_status"] for j in jobs} == {"Downloading"}
    assert sum(len(store.metric_history(j["name"])) for j in jobs) == n * k
    assert [r["seq"] for r in store.logs("shared")] == list(range(1, n * k + 1))
    assert len(store.audit_events(limit=10_000)) == 5 * n * k
    assert len(store.owners([f"arn:test:{j['name']}" for j in jobs])) == n * k


def test_owners_of_jobs_trials_and_many_arns(store: JobStore) -> None:
    """A maker recorded for the resource itself; a tuning job's trial belongs to the tuning job's maker
    unless it has one of its own; nothing recorded, nothing answered; past one query's 400 ARNs too."""
    from raymaker.engine.arns import training_job_arn

    tuning = "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/tune-1"
    store.set_owner(tuning, "alice")
    store.create_training_job(training_request(TrainingJobName="Tune-1-001-abc"), tuning_job_arn=tuning)
    store.create_training_job(training_request(TrainingJobName="tune-1-002-def"), tuning_job_arn=tuning)
    store.set_owner(training_job_arn("tune-1-002-def"), "bob")
    store.create_training_job(training_request(TrainingJobName="plain"))
    trial, own, plain = (training_job_arn(n) for n in ("Tune-1-001-abc", "tune-1-002-def", "plain"))
    assert store.owners([trial, own, plain, tuning]) == {trial: "alice", own: "bob", tuning: "alice"}
    many = [f"arn:test:{i}" for i in range(900)]
    for arn in many[::100]:
        store.set_owner(arn, "carol")
    assert store.owners([*many, trial]) == {**{a: "carol" for a in many[::100]}, trial: "alice"}


def test_update_and_compare_and_set(store: JobStore) -> None:
    store.create_training_job(training_request(), now=1.0)
    rec = store.update_training_job(
        "job-1", training_start_time=5.0, runner_id="r1", final_metrics=[{"MetricName": "m", "Value": 1.0}]
    )
    assert rec["training_start_time"] == 5.0 and rec["runner_id"] == "r1"
    assert rec["final_metrics"] == [{"MetricName": "m", "Value": 1.0}]
    assert rec["last_modified_time"] > 1.0
    rec = store.update_training_job(
        "job-1", expected_status="InProgress", failure_reason="r", last_modified_time=9.0
    )
    assert rec["failure_reason"] == "r" and rec["last_modified_time"] == 9.0
    with pytest.raises(ConflictException, match="not Stopping"):
        store.update_training_job("job-1", expected_status="Stopping", failure_reason="lost")
    with pytest.raises(ConflictException):
        store.update_training_job("job-1", expected_secondary_status="Training", failure_reason="lost")
    assert store.get_training_job("job-1")["failure_reason"] == "r"
    with pytest.raises(ValueError, match="cannot update"):
        store.update_training_job("job-1", name="other")


def test_transitions_are_recorded(store: JobStore) -> None:
    store.create_training_job(training_request(), now=10.0)
    store.transition_training_job("job-1", "Downloading", now=11.0, training_start_time=11.0)
    store.transition_training_job("job-1", "Training", now=12.0)
    rec = store.transition_training_job("job-1", "Stopping", now=13.0)
    assert rec["status"] == "Stopping" and rec["last_modified_time"] == 13.0
    rec = store.transition_training_job("job-1", "Stopped", now=14.0, training_end_time=14.0)
    assert (rec["status"], rec["secondary_status"]) == ("Stopped", "Stopped")
    assert [(t["Status"], t["StartTime"], t.get("EndTime")) for t in rec["transitions"]] == [
        ("Starting", 10.0, 11.0),
        ("Downloading", 11.0, 12.0),
        ("Training", 12.0, 13.0),
        ("Stopping", 13.0, 14.0),
        ("Stopped", 14.0, 14.0),
    ]
    with pytest.raises(IllegalTransition, match="already ended") as info:
        store.transition_training_job("job-1", "Stopping")
    assert isinstance(info.value, ValidationError)
    assert store.get_training_job("job-1") == rec  # the refused move changed nothing


def test_list_training_jobs(store: JobStore) -> None:
    for i, name in enumerate(["alpha-1", "beta-2", "Alpha-3"]):
        store.create_training_job(training_request(TrainingJobName=name), now=100.0 + i)
    store.transition_training_job("beta-2", "Failed", "boom")
    assert [r["name"] for r in store.list_training_jobs()] == ["Alpha-3", "beta-2", "alpha-1"]
    assert [r["name"] for r in store.list_training_jobs(sort_order="Ascending", max_results=2)] == [
        "alpha-1",
        "beta-2",
    ]
    assert [r["name"] for r in store.list_training_jobs(name_contains="ALPHA")] == ["Alpha-3", "alpha-1"]
    assert [r["name"] for r in store.list_training_jobs(status="Failed")] == ["beta-2"]
    assert [r["name"] for r in store.list_training_jobs(creation_time_after=100.5)] == ["Alpha-3", "beta-2"]
    assert store.list_training_jobs(name_contains="%") == []  # no LIKE wildcards
    summaries = [training_job_summary(r) for r in store.list_training_jobs()]
    assert_valid_output("ListTrainingJobs", {"TrainingJobSummaries": summaries})


def test_metrics(store: JobStore) -> None:
    store.create_training_job(training_request())
    assert (
        store.add_metrics(
            "job-1",
            [("train:loss", 0.9, 1, 10.0), ("train:loss", 0.5, 2, 11.0), ("validation:auc", 0.8, 2, 11.0)],
        )
        == 3
    )
    store.add_metrics("job-1", [("validation:auc", 0.85)])  # step and time optional
    history = store.metric_history("job-1", "train:loss")
    assert history == [
        {"metric": "train:loss", "value": 0.9, "step": 1, "timestamp": 10.0},
        {"metric": "train:loss", "value": 0.5, "step": 2, "timestamp": 11.0},
    ]
    assert len(store.metric_history("job-1")) == 4
    latest = {m["MetricName"]: m["Value"] for m in store.latest_metrics("job-1")}
    assert latest == {"train:loss": 0.5, "validation:auc": 0.85}


def test_logs(store: JobStore) -> None:
    assert store.append_logs("job-1", ["one\n", "two"], now=5.0) == 2
    assert store.append_logs("job-1", ["three"]) == 3
    assert [r["line"] for r in store.logs("job-1")] == ["one", "two", "three"]
    assert store.logs("job-1", after_seq=2)[0] == {
        "seq": 3,
        "time": store.logs("job-1")[2]["time"],
        "line": "three",
    }
    assert [r["seq"] for r in store.logs("job-1", limit=2)] == [1, 2]
    assert store.logs("other") == []


def test_audit_events(store: JobStore) -> None:
    store.record_api_call("CreateTrainingJob", {"TrainingJobName": "job-1"}, now=0.0)
    store.record_api_call(
        "CreateTrainingJob",
        {"TrainingJobName": "job-1"},
        ResourceInUse("taken"),
        caller="alice",
        source_ip="10.0.0.1",
    )
    store.record_api_call("DescribeTrainingJob", {"TrainingJobName": "x"}, RuntimeError("bug"))
    events = store.audit_events()
    assert [e["eventName"] for e in events] == [
        "CreateTrainingJob",
        "CreateTrainingJob",
        "DescribeTrainingJob",
    ]
    first = events[0]
    assert first["eventTime"] == "1970-01-01T00:00:00Z"
    assert first["eventSource"] == "sagemaker.amazonaws.com"
    assert first["requestParameters"] == {"TrainingJobName": "job-1"}
    assert first["userIdentity"]["type"] == "LocalUser" and "errorCode" not in first
    assert events[1]["errorCode"] == "ResourceInUse" and events[1]["errorMessage"] == "taken"
    assert events[1]["userIdentity"] == {"type": "IAMUser", "userName": "alice"}
    assert events[1]["sourceIPAddress"] == "10.0.0.1"
    assert events[2]["errorCode"] == "RuntimeError"
    assert len(store.audit_events("CreateTrainingJob")) == 2
    assert [e["errorCode"] for e in store.audit_events(errors_only=True)] == ["ResourceInUse", "RuntimeError"]
    assert len(store.audit_events(since=1.0)) == 2
    assert len({e["eventID"] for e in events}) == 3


def test_describe_in_progress_matches_botocore_output_shape(store: JobStore) -> None:
    rec = store.create_training_job(training_request(StoppingCondition=None), now=1000.0)
    resp = describe_training_job(rec)
    assert_valid_output("DescribeTrainingJob", resp)
    assert resp["TrainingJobStatus"] == "InProgress" and resp["SecondaryStatus"] == "Starting"
    assert resp["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert resp["ModelArtifacts"] == {"S3ModelArtifacts": ""}
    assert resp["CreationTime"].timestamp() == 1000.0
    assert "BillableTimeInSeconds" not in resp and "TrainingEndTime" not in resp
    assert (
        resp["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3DataDistributionType"]
        == "FullyReplicated"
    )
    assert resp["HyperParameters"] == {"num_round": "10", "eta": "0.1"}
    assert resp["RoleArn"] == rec["request"]["RoleArn"]


def test_describe_completed_job(store: JobStore) -> None:
    request = training_request(
        CheckpointConfig={"S3Uri": "s3://bucket/ckpt"},
        Environment={"A": "1"},
        RetryStrategy={"MaximumRetryAttempts": 1},
    )
    store.create_training_job(request, now=1000.0)
    store.transition_training_job("job-1", "Downloading", now=1001.0, training_start_time=1001.0)
    store.transition_training_job("job-1", "Training", now=1002.0)
    store.add_metrics("job-1", [("validation:rmse", 0.25, 3, 1050.0)])
    store.transition_training_job("job-1", "Uploading", now=1060.0)
    count = request["ResourceConfig"]["InstanceCount"]
    billable = metering.billable_seconds(count, 1001.0, 1061.5)
    rec = store.transition_training_job(
        "job-1",
        "Completed",
        now=1061.5,
        training_end_time=1061.5,
        training_seconds=metering.running_seconds(1001.0, 1061.5),
        billable_seconds=billable,
        cost=metering.cost(billable, 0.115),
        model_artifacts="s3://bucket/output/job-1/output/model.tar.gz",
        final_metrics=store.latest_metrics("job-1"),
        warm_pool_status={"Status": "Available", "ResourceRetainedBillableTimeInSeconds": 0},
    )
    resp = describe_training_job(rec)
    assert_valid_output("DescribeTrainingJob", resp)
    assert resp["TrainingJobStatus"] == "Completed"
    assert resp["ModelArtifacts"]["S3ModelArtifacts"].endswith("job-1/output/model.tar.gz")
    assert resp["TrainingTimeInSeconds"] == 61
    assert resp["BillableTimeInSeconds"] == 61  # per instance; the record has instance-seconds
    assert rec["billable_seconds"] == 122 and rec["cost"] == pytest.approx(122 * 0.115 / 3600)
    assert resp["FinalMetricDataList"][0]["MetricName"] == "validation:rmse"
    assert resp["FinalMetricDataList"][0]["Timestamp"].timestamp() == 1050.0
    assert [t["Status"] for t in resp["SecondaryStatusTransitions"]][-1] == "Completed"
    assert resp["SecondaryStatusTransitions"][0]["EndTime"].timestamp() == 1001.0
    assert resp["CheckpointConfig"] == {"S3Uri": "s3://bucket/ckpt"}
    assert resp["Environment"] == {"A": "1"} and resp["RetryStrategy"] == {"MaximumRetryAttempts": 1}
    assert resp["WarmPoolStatus"]["Status"] == "Available"
    assert "Tags" not in resp  # request-only members are not echoed


def test_describe_failed_job(store: JobStore) -> None:
    store.create_training_job(training_request())
    rec = store.transition_training_job(
        "job-1", "Failed", "AlgorithmError: x", failure_reason="AlgorithmError: " + "x" * 2000
    )
    resp = describe_training_job(rec)
    assert_valid_output("DescribeTrainingJob", resp)
    assert resp["TrainingJobStatus"] == "Failed" and len(resp["FailureReason"]) == 1024


def test_store_pickles_as_its_location(store: JobStore) -> None:
    store.create_training_job(training_request())
    clone = pickle.loads(pickle.dumps(store))
    assert clone.location == store.location and clone.get_training_job("job-1")["name"] == "job-1"
    clone.close()
