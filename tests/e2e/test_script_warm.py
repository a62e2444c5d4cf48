"""A warm instance keeps the framework imported for its next script-mode job (SageMaker's warm pools
keep the process environment): on real Ray with the moto S3 server, two scikit-learn jobs on one
instance type with KeepAlivePeriodInSeconds; the second one's script finds scikit-learn already in
``sys.modules`` at its first line, and both jobs' results are what a fresh process gives."""

from __future__ import annotations

import io
import tarfile
import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from raymaker import Session
from raymaker.sklearn import SKLearn
from raymaker.toolkit import zygote

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not zygote.supported(), reason="zygotes need Linux pidfds")]

TRAIN = '''
import sys
print(f"sklearn already imported: {'sklearn' in sys.modules}", flush=True)

import argparse
import os

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-estimators", type=int, default=10)
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
    args = parser.parse_args()
    data = np.loadtxt(os.path.join(args.train, "train.csv"), delimiter=",")
    y, x = data[:, 0], data[:, 1:]
    clf = RandomForestClassifier(n_estimators=args.n_estimators, max_depth=4, random_state=0).fit(x, y)
    print(f"trees={args.n_estimators}")
    print(f"train_accuracy={clf.score(x, y):.4f}")
    joblib.dump(clf, os.path.join(args.model_dir, "model.joblib"))
'''


@pytest.fixture(scope="module")
def bucket(s3_server):
    x, y = load_breast_cancer(return_X_y=True)
    name = s3_server.new_bucket()
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    s3_server.client.put_object(Bucket=name, Key="train/train.csv", Body=buf.getvalue().encode())
    return name


@pytest.fixture
def session(ray_session):
    return Session()


def test_the_second_job_on_a_warm_instance_starts_with_sklearn_imported(session, s3_server, bucket, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(textwrap.dedent(TRAIN))

    results = []
    for trees in (10, 20):
        est = SKLearn(
            entry_point="train.py",
            source_dir=str(source),
            framework_version="1.2-1",
            instance_type="local",
            hyperparameters={"n-estimators": trees},
            metric_definitions=[{"Name": "train:accuracy", "Regex": r"train_accuracy=([0-9.]+)"}],
            keep_alive_period_in_seconds=120,
            output_path=f"s3://{bucket}/output",
            session=session,
        )
        est.fit({"train": f"s3://{bucket}/train/"}, logs=False)
        desc = est.latest_training_job.describe()
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        lines = [e["line"] for e in session.backend.store.logs(desc["TrainingJobName"])]
        results.append((desc, lines))

    (first, first_lines), (second, second_lines) = results
    # One instance ran both (its pid is in each job's first line), kept warm between them.
    started = [[ln for ln in lines if ln.startswith("raymaker: running train.py")] for _, lines in results]
    assert started[0] and started[0] == started[1], started
    again = session.call("DescribeTrainingJob", {"TrainingJobName": first["TrainingJobName"]})
    assert again["WarmPoolStatus"] == {"Status": "Reused", "ReusedByJob": second["TrainingJobName"]}
    # The first job started a fresh python; the second, the instance's warm interpreter.
    assert "sklearn already imported: False" in first_lines, first_lines
    assert "sklearn already imported: True" in second_lines, second_lines
    for desc, lines, trees in ((first, first_lines, 10), (second, second_lines, 20)):
        assert f"trees={trees}" in lines  # the hyperparameter reached argparse as the toolkit renders it
        final = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
        assert final["train:accuracy"] > 0.9
        key = desc["ModelArtifacts"]["S3ModelArtifacts"].split(f"s3://{bucket}/", 1)[1]
        body = s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            assert tar.getnames() == ["model.joblib"]

