"""Training jobs end to end: the SDK, the engine, instance actors and groups, the moto S3 server and the
SQLite records."""

import io
import os
import signal
import tarfile
import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from raymaker import Estimator, Session, TrainingInput
from raymaker.algorithms import get_algorithm
from raymaker.io import recordio
from raymaker.io.batch import Batch
from raymaker.protocol.errors import ResourceInUse, ValidationError
from raymaker.sdk import UnexpectedStatusException

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(
        x.astype(np.float32), y.astype(np.float32), test_size=0.25, random_state=0, stratify=y
    )


def _csv(x, y) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def data_bucket(s3_server, cancer):
    """Breast cancer data in the S3 server: CSV train/validation, and RecordIO train in 4 shards."""
    x_train, x_test, y_train, y_test = cancer
    bucket = s3_server.new_bucket()
    put = s3_server.client.put_object
    put(Bucket=bucket, Key="csv/train/part-0.csv", Body=_csv(x_train, y_train))
    put(Bucket=bucket, Key="csv/validation/part-0.csv", Body=_csv(x_test, y_test))
    for i, rows in enumerate(np.array_split(np.arange(len(y_train)), 4)):
        buf = io.BytesIO()
        recordio.write_numpy_to_dense_tensor(buf, x_train[rows], y_train[rows])
        put(Bucket=bucket, Key=f"recordio/train/part-{i}.rec", Body=buf.getvalue())
    buf = io.BytesIO()
    recordio.write_numpy_to_dense_tensor(buf, x_test, y_test)
    put(Bucket=bucket, Key="recordio/validation/part-0.rec", Body=buf.getvalue())
    return bucket


@pytest.fixture
def session(ray_session):
    return Session()


def _sharded_recordio(bucket: str) -> dict:
    """RecordIO train (4 objects, ShardedByS3Key) and validation channels."""
    rec = "application/x-recordio-protobuf"
    return {
        "train": TrainingInput(
            f"s3://{bucket}/recordio/train/", content_type=rec, distribution="ShardedByS3Key"
        ),
        "validation": TrainingInput(f"s3://{bucket}/recordio/validation/", content_type=rec),
    }


def _load_model(s3_server, uri: str, algorithm: str, tmp_path):
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(tmp_path, filter="data")
    algo = get_algorithm(algorithm)
    return algo(), algo().load(str(tmp_path))


def test_xgboost_csv_file_mode(session, s3_server, data_bucket, cancer, tmp_path, capsys):
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 20, "eval_metric": "auc"},
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    est.fit(
        {
            "train": TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"),
            "validation": TrainingInput(f"s3://{data_bucket}/csv/validation/", content_type="text/csv"),
        }
    )
    out = capsys.readouterr().out
    assert "validation:auc" in out and "Billable seconds:" in out
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed" and desc["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.97
    assert desc["BillableTimeInSeconds"] >= 1 and desc["TrainingTimeInSeconds"] >= 1
    assert est.model_data == f"s3://{data_bucket}/output/{est.latest_training_job.name}/output/model.tar.gz"
    algo, model = _load_model(s3_server, est.model_data, "xgboost", tmp_path)
    x_test, y_test = cancer[1], cancer[3]
    predicted = algo.predict(model, Batch(x_test))["predicted_label"]
    assert (predicted == y_test).mean() > 0.93


def test_xgboost_fastfile_mode(session, s3_server, data_bucket, cancer, tmp_path):
    """FastFile: objects are read on demand from S3, nothing is copied first."""
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 20, "eval_metric": "auc"},
        input_mode="FastFile",
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    est.fit(
        {
            "train": TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"),
            "validation": TrainingInput(f"s3://{data_bucket}/csv/validation/", content_type="text/csv"),
        },
        logs=False,
    )
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.97
    algo, model = _load_model(s3_server, est.model_data, "xgboost", tmp_path)
    assert (algo.predict(model, Batch(cancer[1]))["predicted_label"] == cancer[3]).mean() > 0.93


def test_data_in_the_wrong_format_names_the_assumed_content_type(session, data_bucket):
    """No ContentType: xgboost assumes libsvm, and CSV data then fails saying so and how to change it."""
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 5},
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    with pytest.raises(UnexpectedStatusException) as info:
        est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/"), logs=False)
    reason = est.latest_training_job.describe()["FailureReason"]
    assert "text/libsvm" in reason and "ContentType" in reason and "content_type=" in reason, reason
    assert "Failed" in str(info.value)


def test_linear_learner_recordio_pipe_two_workers(session, s3_server, data_bucket, cancer, tmp_path):
    est = Estimator(
        "linear-learner",
        hyperparameters={"predictor_type": "binary_classifier", "epochs": 3, "mini_batch_size": 32},
        instance_count=2,
        input_mode="Pipe",
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    est.fit(
        _sharded_recordio(data_bucket),
        logs=False,
    )
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed"
    assert desc["ResourceConfig"]["InstanceCount"] == 2
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert metrics["validation:binary_classification_accuracy"] > 0.93
    algo, model = _load_model(s3_server, est.model_data, "linear-learner", tmp_path)
    predicted = algo.predict(model, Batch(cancer[1]))["predicted_label"]
    assert (predicted == cancer[3]).mean() > 0.93

    # The record outlives the session that made it: a new Session (a new process would read the same
    # database file) sees the job, and attach() rebuilds the estimator.
    attached = Estimator.attach(est.latest_training_job.name, session=Session())
    assert attached.model_data == est.model_data
    assert attached.instance_count == 2 and attached.input_mode == "Pipe"


def _long_job(session, bucket, **kw):
    # Many rounds on a small dataset: runs until stopped.
    return Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 1_000_000, "max_depth": 2},
        output_path=f"s3://{bucket}/output",
        session=session,
        **kw,
    )


def _wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_stop_a_running_job(session, data_bucket):
    est = _long_job(session, data_bucket)
    est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"), wait=False)
    job = est.latest_training_job
    _wait_for(lambda: job.describe()["SecondaryStatus"] == "Training")
    job.stop()
    # As the SageMaker SDK does, waiting on a stopped job warns and returns (it raises on Failed).
    assert job.wait(logs=False)["TrainingJobStatus"] == "Stopped"
    desc = job.describe()
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert desc["BillableTimeInSeconds"] >= 1
    with pytest.raises(ValidationError, match="already ended"):
        job.stop()


def test_max_runtime(session, data_bucket):
    est = _long_job(session, data_bucket, max_run=8)
    est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"), wait=False)
    job = est.latest_training_job
    assert job.wait(logs=False)["SecondaryStatus"] == "MaxRuntimeExceeded"
    desc = job.describe()
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert 8 <= desc["TrainingTimeInSeconds"] <= 20


@pytest.mark.parametrize("instance_count", [1, 2])  # an instance actor; an instance group
def test_killed_worker_resumes_from_checkpoint(session, data_bucket, instance_count):
    est = Estimator(
        "xgboost",
        # Long enough that the kill lands mid-training on a busy machine (400 rounds sometimes ended first).
        hyperparameters={"objective": "binary:logistic", "num_round": 1200, "max_depth": 6, "eta": 0.01},
        instance_count=instance_count,
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"), wait=False)
    job = est.latest_training_job
    api = session.backend

    def pid_after_checkpoint():
        steps = [m["step"] for m in api.store.metric_history(job.name)]
        lines = [e["line"] for e in api.store.logs(job.name)]
        pids = [int(ln.split("pid ")[1].split(",")[0]) for ln in lines if "raymaker worker 0" in ln]
        return pids[-1] if pids and steps and max(steps) >= 25 else None

    os.kill(_wait_for(pid_after_checkpoint), signal.SIGKILL)
    job.wait(logs=False)
    desc = job.describe()
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert desc["TrainingJobStatus"] == "Completed"
    assert "Restarting" in statuses, statuses
    # The restarted workers resumed from a checkpoint (xgboost saves one every 10 rounds), not from
    # round 0: no round before the checkpoint was trained twice.
    resumed = [ln for ln in (e["line"] for e in api.store.logs(job.name)) if "resuming after round" in ln]
    assert resumed, "no resume from checkpoint in the logs"
    resumed_at = int(resumed[0].split("resuming after round ")[1].split()[0])
    assert resumed_at >= 19
    steps = [m["step"] for m in api.store.metric_history(job.name, "train:logloss")]
    assert steps.count(0) == 1 and max(steps) == 1199


@pytest.mark.parametrize(
    "kwargs, inputs, message",
    [
        ({"algorithm": "xgb"}, "csv/train/", "'xgb' is not a raymaker built-in algorithm"),
        ({"hyperparameters": {"objective": "binary:logistic"}}, "csv/train/", "num_round"),
        ({"hyperparameters": {"num_round": 5, "etaa": 1}}, "csv/train/", "'etaa'"),
        ({"hyperparameters": {"num_round": 0}}, "csv/train/", "num_round"),
        ({"instance_type": "ml.p5.48xlarge"}, "csv/train/", "ml.p5.48xlarge"),
        ({}, "no/such/prefix/", "no objects under"),
        ({}, {"train": "csv/train/", "extra": "csv/train/"}, "extra"),
        ({}, {"train": TrainingInput("csv/train/", content_type="image/png")}, "image/png"),
    ],
)
def test_bad_requests_fail_at_fit(session, data_bucket, kwargs, inputs, message):
    def uri(value):
        if isinstance(value, TrainingInput):
            src = value.config["DataSource"]["S3DataSource"]
            src["S3Uri"] = f"s3://{data_bucket}/{src['S3Uri']}"
            return value
        return f"s3://{data_bucket}/{value}"

    inputs = {k: uri(v) for k, v in inputs.items()} if isinstance(inputs, dict) else uri(inputs)
    args = {"algorithm": "xgboost", "hyperparameters": {"num_round": 5}, **kwargs}
    est = Estimator(args.pop("algorithm"), output_path=f"s3://{data_bucket}/output", session=session, **args)
    before = len(session.backend.store.list_training_jobs(max_results=1000))
    with pytest.raises(ValidationError, match=message):
        est.fit(inputs, job_name=f"bad-{abs(hash(message)) % 10**8}")
    assert len(session.backend.store.list_training_jobs(max_results=1000)) == before  # nothing stored


def test_missing_bucket_and_duplicate_name(session, data_bucket):
    est = Estimator(
        "xgboost", hyperparameters={"num_round": 2}, output_path=f"s3://{data_bucket}/o", session=session
    )
    with pytest.raises(ValidationError, match="does not exist"):
        est.fit("s3://no-such-bucket-here/train/", job_name="missing-bucket")
    train = TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv")
    est.fit(train, job_name="dup-name", logs=False)
    with pytest.raises(ResourceInUse):
        est.fit(train, job_name="dup-name", logs=False)
    assert est.latest_training_job.describe()["TrainingJobStatus"] == "Completed"  # the first is intact


@pytest.mark.parametrize("input_mode", ["File", "Pipe"])
def test_xgboost_two_workers_sharded(session, s3_server, data_bucket, cancer, tmp_path, input_mode):
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 20, "eval_metric": "auc"},
        instance_count=2,
        input_mode=input_mode,
        output_path=f"s3://{data_bucket}/output",
        checkpoint_s3_uri=f"s3://{data_bucket}/checkpoints/xgb-2-{input_mode}",
        session=session,
    )
    est.fit(
        _sharded_recordio(data_bucket),
        logs=False,
    )
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed"
    assert desc["BillableTimeInSeconds"] * 2 >= desc["TrainingTimeInSeconds"]
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.97
    algo, model = _load_model(s3_server, est.model_data, "xgboost", tmp_path)
    assert (algo.predict(model, Batch(cancer[1]))["predicted_label"] == cancer[3]).mean() > 0.93
    # rank 0 wrote the group's checkpoints under the job's CheckpointConfig.S3Uri
    listed = s3_server.client.list_objects_v2(Bucket=data_bucket, Prefix=f"checkpoints/xgb-2-{input_mode}/")
    assert listed.get("KeyCount", 0) > 0


def test_linear_learner_csv_file_mode(session, data_bucket):
    est = Estimator(
        "linear-learner",
        hyperparameters={"predictor_type": "binary_classifier", "epochs": 5},
        output_path=f"s3://{data_bucket}/output",
        session=session,
    )
    est.fit(
        {
            "train": TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"),
            "validation": TrainingInput(f"s3://{data_bucket}/csv/validation/", content_type="text/csv"),
        },
        logs=False,
    )
    desc = est.latest_training_job.describe()
    metrics = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert desc["TrainingJobStatus"] == "Completed"
    assert metrics["validation:binary_classification_accuracy"] > 0.93


def test_single_instance_checkpoints_go_to_the_checkpoint_uri(session, s3_server, data_bucket):
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 12},
        output_path=f"s3://{data_bucket}/output",
        checkpoint_s3_uri=f"s3://{data_bucket}/checkpoints/single",
        session=session,
    )
    est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"), logs=False)
    assert est.latest_training_job.describe()["TrainingJobStatus"] == "Completed"
    head = s3_server.client.head_object(
        Bucket=data_bucket, Key="checkpoints/single/raymaker-checkpoint.tar.gz"
    )
    assert head["ContentLength"] > 0
    # The working copy lives under RAYMAKER_HOME, never in a local folder named like the URI.
    assert not os.path.exists("s3:")


@pytest.mark.parametrize(
    "algorithm, hyperparameters, metric",
    [
        ("kmeans", {"k": 2, "feature_dim": 30, "epochs": 3, "mini_batch_size": 100}, "test:msd"),
        (
            "pca",
            {"num_components": 3, "feature_dim": 30, "mini_batch_size": 100},
            "test:explained_variance_ratio",
        ),
    ],
)
def test_unsupervised_builtins(session, data_bucket, algorithm, hyperparameters, metric):
    est = Estimator(
        algorithm, hyperparameters=hyperparameters, output_path=f"s3://{data_bucket}/output", session=session
    )
    rec = "application/x-recordio-protobuf"
    est.fit(
        {
            "train": TrainingInput(f"s3://{data_bucket}/recordio/train/", content_type=rec),
            "test": TrainingInput(f"s3://{data_bucket}/recordio/validation/", content_type=rec),
        },
        logs=False,
    )
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert metric in {m["MetricName"] for m in desc["FinalMetricDataList"]}


def test_jobs_of_a_lost_job_service_are_ended(session, data_bucket):
    """A job whose Ray cluster went away (here: its job service is killed) does not stay InProgress:
    the next job service on the same database ends its record."""
    import ray

    from raymaker.engine.service import job_service

    est = _long_job(session, data_bucket)
    est.fit(TrainingInput(f"s3://{data_bucket}/csv/train/", content_type="text/csv"), wait=False)
    job = est.latest_training_job
    _wait_for(lambda: job.describe()["SecondaryStatus"] == "Training")
    store_path = session.backend.store.url
    ray.kill(job_service(store_path))
    time.sleep(1)
    ray.get(job_service(store_path).ping.remote())  # a new service starts, and ends the orphan
    _wait_for(lambda: job.describe()["TrainingJobStatus"] != "InProgress")
    desc = job.describe()
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Failed", "Failed")
    assert "job service is gone" in desc["FailureReason"]
