"""Multi-instance training jobs in instance groups: one instance actor per instance, the job's collective
set up inside the group, and the whole group kept warm for the next job (SageMaker's warm pools)."""

import io
import os
import re
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

pytestmark = pytest.mark.e2e

REC = "application/x-recordio-protobuf"


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(
        x.astype(np.float32), y.astype(np.float32), test_size=0.25, random_state=0, stratify=y
    )


@pytest.fixture(scope="module")
def bucket(s3_server, cancer):
    """Breast cancer data: RecordIO train in 4 objects, validation in one."""
    x_train, x_test, y_train, y_test = cancer
    name = s3_server.new_bucket()
    for i, rows in enumerate(np.array_split(np.arange(len(y_train)), 4)):
        buf = io.BytesIO()
        recordio.write_numpy_to_dense_tensor(buf, x_train[rows], y_train[rows])
        s3_server.client.put_object(Bucket=name, Key=f"train/part-{i}.rec", Body=buf.getvalue())
    buf = io.BytesIO()
    recordio.write_numpy_to_dense_tensor(buf, x_test, y_test)
    s3_server.client.put_object(Bucket=name, Key="validation/part-0.rec", Body=buf.getvalue())
    return name


@pytest.fixture
def session(ray_session):
    return Session()


def _channels(bucket: str) -> dict:
    return {
        "train": TrainingInput(f"s3://{bucket}/train/", content_type=REC, distribution="ShardedByS3Key"),
        "validation": TrainingInput(f"s3://{bucket}/validation/", content_type=REC),
    }


def _worker_pids(session, job: str) -> dict[int, int]:
    """Each rank's process id, from the line every instance logs as it starts training."""
    pids = {}
    for entry in session.backend.store.logs(job):
        m = re.match(r"raymaker worker (\d+) of \d+: pid (\d+),", entry["line"])
        if m:
            pids[int(m.group(1))] = int(m.group(2))
    return pids


def _final(desc: dict) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}


def _model(s3_server, uri: str, algorithm: str, tmp_path):
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(tmp_path, filter="data")
    algo = get_algorithm(algorithm)()
    return algo, algo.load(str(tmp_path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_two_instances_run_in_a_group_that_stays_warm(session, s3_server, bucket, cancer, tmp_path):
    def linear_learner(count: int, keep: int) -> Estimator:
        return Estimator(
            "linear-learner",
            hyperparameters={"predictor_type": "binary_classifier", "epochs": 4, "mini_batch_size": 32},
            instance_count=count,
            keep_alive_period_in_seconds=keep,
            output_path=f"s3://{bucket}/output",
            session=session,
        )

    first = linear_learner(2, 120)
    first.fit(_channels(bucket), logs=False)
    a = first.latest_training_job
    desc_a = a.describe()
    assert desc_a["TrainingJobStatus"] == "Completed", desc_a.get("FailureReason")
    assert desc_a["WarmPoolStatus"]["Status"] == "Available"
    # Two instances, two processes: ranks 0 and 1 both started training.
    pids = _worker_pids(session, a.name)
    assert sorted(pids) == [0, 1] and pids[0] != pids[1], pids

    # The next job of the same kind runs in the same group: the same processes, at once.
    second = linear_learner(2, 2)
    t0 = time.time()
    second.fit(_channels(bucket), logs=False)
    warm_wall = time.time() - t0
    b = second.latest_training_job
    desc_b = b.describe()
    assert desc_b["TrainingJobStatus"] == "Completed", desc_b.get("FailureReason")
    assert a.describe()["WarmPoolStatus"] == {"Status": "Reused", "ReusedByJob": b.name}
    assert _worker_pids(session, b.name) == pids
    lines = [e["line"] for e in session.backend.store.logs(b.name)]
    assert any(f"warm instance group of training job {a.name}" in ln for ln in lines), lines
    assert warm_wall < 30  # Ray Train took 23-25 s for such a job here, warm or not

    # Both converge, as the same job on one instance does.
    single = linear_learner(1, 0)
    single.fit(_channels(bucket), logs=False)
    accuracy = "validation:binary_classification_accuracy"
    one = _final(single.latest_training_job.describe())[accuracy]
    for desc in (desc_a, desc_b):
        assert _final(desc)[accuracy] > 0.93
        assert abs(_final(desc)[accuracy] - one) < 0.04
    algo, model = _model(s3_server, second.model_data, "linear-learner", tmp_path)
    assert (algo.predict(model, Batch(cancer[1]))["predicted_label"] == cancer[3]).mean() > 0.93

    # Its keep-alive period over, the group ends: every instance's process stops.
    _wait_for(lambda: (b.describe().get("WarmPoolStatus") or {}).get("Status") == "Terminated")
    _wait_for(lambda: not any(_alive(p) for p in pids.values()), timeout=30)


def test_xgboost_on_two_instances_matches_one(session, s3_server, bucket, cancer, tmp_path):
    """xgboost's collective grows the same trees from two shards as from all rows in one process."""
    models = {}
    for count in (1, 2):
        est = Estimator(
            "xgboost",
            hyperparameters={"objective": "binary:logistic", "num_round": 20, "eval_metric": "auc"},
            instance_count=count,
            output_path=f"s3://{bucket}/output",
            session=session,
        )
        est.fit(_channels(bucket), logs=False)
        desc = est.latest_training_job.describe()
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        assert _final(desc)["validation:auc"] > 0.97
        if count == 2:
            assert sorted(_worker_pids(session, desc["TrainingJobName"])) == [0, 1]
        models[count] = _model(s3_server, est.model_data, "xgboost", tmp_path / str(count))
    x_test = Batch(cancer[1])
    p1 = models[1][0].predict(models[1][1], x_test)["score"]
    p2 = models[2][0].predict(models[2][1], x_test)["score"]
    assert np.abs(p1 - p2).max() < 0.05, np.abs(p1 - p2).max()
    assert (np.round(p1) == np.round(p2)).mean() > 0.97


@pytest.mark.parametrize("how", ["stop", "max_runtime"])
def test_a_stopped_group_ends_with_its_job(session, bucket, how):
    """Stopping a multi-instance job (or its runtime limit) ends every instance of its group, even with
    KeepAlivePeriodInSeconds: a group is kept only after a job that completed."""
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 1_000_000, "max_depth": 2},
        instance_count=2,
        keep_alive_period_in_seconds=120,
        output_path=f"s3://{bucket}/output",
        session=session,
        **({"max_run": 10} if how == "max_runtime" else {}),
    )
    est.fit(_channels(bucket), wait=False)
    job = est.latest_training_job
    _wait_for(lambda: len(_worker_pids(session, job.name)) == 2)
    pids = _worker_pids(session, job.name)
    if how == "stop":
        job.stop()
    desc = job.wait(logs=False)
    expected = ("Stopped", "Stopped") if how == "stop" else ("Stopped", "MaxRuntimeExceeded")
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == expected
    assert "WarmPoolStatus" not in job.describe()
    _wait_for(lambda: not any(_alive(p) for p in pids.values()), timeout=30)
