"""Nothing is left InProgress: the job service is killed mid-run for each kind of resource, and the next
service resumes or ends it (training jobs: tests/e2e/test_training_jobs.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from sklearn.datasets import load_breast_cancer

from raymaker import Estimator, Model, Session, TrainingInput
from raymaker.engine.service import job_service

from .test_training_jobs import _wait_for as wait_for


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("recovery")
    x, y = load_breast_cancer(return_X_y=True)
    (d / "train").mkdir()
    np.savetxt(d / "train" / "part.csv", np.column_stack([y, x]), delimiter=",", fmt="%.7g")
    (d / "in").mkdir()
    rows = np.tile(x, (8, 1))  # ~4,500 rows: with tiny work units the transform runs for seconds
    np.savetxt(d / "in" / "rows.csv", rows, delimiter=",", fmt="%.7g")
    return d


@pytest.fixture(scope="module")
def model_data(session, data):
    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 10},
        output_path=f"file://{data}/output",
        session=session,
    )
    est.fit(TrainingInput(f"file://{data}/train/", content_type="text/csv"), logs=False)
    return est.model_data


def _wait_for(predicate, timeout=120.0):
    return wait_for(predicate, timeout)


def _settled(session, operation: str, params: dict, key: str, moving: str) -> dict:
    """Describe until ``key`` is no longer ``moving``."""

    def done():
        desc = session.call(operation, params)
        return desc if desc[key] != moving else None

    return _wait_for(done, timeout=300)


def _kill_service(session) -> None:
    """Kill the job service as a crash would, and start the next one."""
    path = str(session.backend.store.path)
    ray.kill(job_service(path), no_restart=True)
    time.sleep(0.3)
    ray.get(job_service(path).ping.remote())


def test_tuning_job_continues_its_remaining_trials(session, data):
    name = "recover-tuning"
    request = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "train:auc"},
            "ResourceLimits": {"MaxParallelTrainingJobs": 1, "MaxNumberOfTrainingJobs": 2},
            "ParameterRanges": {
                "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5"}]
            },
            "RandomSeed": 3,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                "num_round": "400",
                "objective": "binary:logistic",
                "eval_metric": "auc",
            },
            "AlgorithmSpecification": {"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "ContentType": "text/csv",
                    "DataSource": {
                        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{data}/train/"}
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": f"file://{data}/output"},
            "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }
    session.call("CreateHyperParameterTuningJob", request)
    trials = lambda: session.call(  # noqa: E731
        "ListTrainingJobsForHyperParameterTuningJob", {"HyperParameterTuningJobName": name}
    )["TrainingJobSummaries"]
    first = _wait_for(lambda: [t for t in trials() if t["TrainingJobStatus"] == "InProgress"])[0]
    _kill_service(session)
    desc = _settled(
        session,
        "DescribeHyperParameterTuningJob",
        {"HyperParameterTuningJobName": name},
        "HyperParameterTuningJobStatus",
        "InProgress",
    )
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    by_name = {t["TrainingJobName"]: t for t in trials()}
    assert len(by_name) == 2  # the lost trial counts against the budget; the other ran after it
    lost = by_name[first["TrainingJobName"]]
    assert lost["TrainingJobStatus"] == "Failed" and "job service is gone" in lost["FailureReason"]
    assert sum(t["TrainingJobStatus"] == "Completed" for t in by_name.values()) == 1
    assert desc["BestTrainingJob"]["TrainingJobName"] != first["TrainingJobName"]


def test_transform_job_runs_again(session, data, model_data):
    model = Model(model_data, algorithm="xgboost", session=session, name="recover-transform-model")
    transformer = model.transformer(
        1,
        "local",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="text/csv",
        output_path=f"file://{data}/out",
        env={"RAYMAKER_TRANSFORM_UNIT_BYTES": "400", "RAYMAKER_TRANSFORM_KEEP_ALIVE_S": "0"},
    )
    transformer.transform(f"file://{data}/in/", content_type="text/csv", split_type="Line", wait=False)
    job = transformer.latest_transform_job
    _wait_for(
        lambda: session.call("GetTransformJobProgress", {"TransformJobName": job})["RecordsTransformed"] > 0
    )
    assert (
        session.call("DescribeTransformJob", {"TransformJobName": job})["TransformJobStatus"] == "InProgress"
    )
    _kill_service(session)
    desc = _settled(
        session, "DescribeTransformJob", {"TransformJobName": job}, "TransformJobStatus", "InProgress"
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    out = (data / "out" / "rows.csv.out").read_text().splitlines()
    assert len(out) == 8 * 569  # every record, once: the rerun wrote the whole object again
    events = session.call("ListAuditEvents", {"EventName": "CreateTransformJob", "MaxResults": 1000})["Events"]
    ours = [e for e in events if f'"TransformJobName": "{job}"' in e["CloudTrailEvent"]]
    assert len(ours) == 1  # one request; the second run was the service's own


def test_endpoints_keep_answering_and_a_creation_finishes(session, model_data, data):
    runtime = session.runtime_client()
    body = ",".join(["1"] * 30)
    up = Model(model_data, algorithm="xgboost", session=session, name="recover-up").deploy(
        1, "local", endpoint_name="recover-up"
    )
    Model(model_data, algorithm="xgboost", session=session, name="recover-new").deploy(
        1, "local", endpoint_name="recover-new", wait=False
    )
    assert session.call("DescribeEndpoint", {"EndpointName": "recover-new"})["EndpointStatus"] == "Creating"
    _kill_service(session)
    # The InService endpoint answers all along: Serve runs apart from the job service.
    answer = runtime.invoke_endpoint(EndpointName="recover-up", ContentType="text/csv", Body=body)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    desc = _settled(
        session, "DescribeEndpoint", {"EndpointName": "recover-new"}, "EndpointStatus", "Creating"
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    answer = runtime.invoke_endpoint(EndpointName="recover-new", ContentType="text/csv", Body=body)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    for name in ("recover-up", "recover-new"):
        session.call("DeleteEndpoint", {"EndpointName": name})
    assert up.endpoint_name == "recover-up"
