"""``Estimator`` and ``TrainingJob`` against a recording backend: the exact requests they send (fit,
wait with and without logs, attach, deploy, transformer, analytics), each validated as the engine
validates it, and what ``wait(logs=True)`` prints."""

from __future__ import annotations

import datetime
import io
import logging
import re
from typing import Any

import pytest

from raymaker.protocol.errors import ValidationError
from raymaker.sdk import Estimator, Session, TrainingInput, UnexpectedStatusException
from raymaker.sdk.analytics import TrainingJobAnalytics
from tests.sdk.helpers import (
    T0,
    RecordingBackend,
    created,
    endpoint_description,
    training_job_description,
    transform_job_description,
)

NAME = "xgb-job-1"
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
LONG_NAME_RE = re.compile(r"^(.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}$")


def estimator(backend: RecordingBackend, **kwargs: Any) -> Estimator:
    return Estimator(
        "xgboost",
        hyperparameters={"num_round": 10, "objective": "binary:logistic", "verbose": True},
        output_path="file:///out",
        session=Session(backend=backend),
        **kwargs,
    )


def started(backend: RecordingBackend, **kwargs: Any) -> Estimator:
    backend.answer(CreateTrainingJob=created("TrainingJob", "TrainingJobName"))
    est = estimator(backend, **kwargs)
    est.fit("file:///data/train/", wait=False, job_name=NAME)
    backend.calls.clear()
    return est


def test_fit_sends_the_create_training_job_request() -> None:
    backend = RecordingBackend(CreateTrainingJob=created("TrainingJob", "TrainingJobName"))
    est = estimator(
        backend,
        instance_count=2,
        max_run=600,
        keep_alive_period_in_seconds=300,
        checkpoint_s3_uri="file:///ckpt",
        max_retry_attempts=1,
        environment={"OMP_NUM_THREADS": "1"},
    )
    est.fit(
        {"train": TrainingInput("file:///data/train/", content_type="text/csv"), "validation": "file:///v/"},
        wait=False,
        job_name=NAME,
    )
    assert backend.calls == [
        (
            "CreateTrainingJob",
            {
                "TrainingJobName": NAME,
                "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
                "AlgorithmSpecification": {"TrainingInputMode": "File", "AlgorithmName": "xgboost"},
                "HyperParameters": {"num_round": "10", "objective": "binary:logistic", "verbose": "true"},
                "InputDataConfig": [
                    {
                        "ChannelName": "train",
                        "DataSource": {
                            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "file:///data/train/"}
                        },
                        "ContentType": "text/csv",
                    },
                    {
                        "ChannelName": "validation",
                        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "file:///v/"}},
                    },
                ],
                "OutputDataConfig": {"S3OutputPath": "file:///out"},
                "ResourceConfig": {
                    "InstanceType": "local",
                    "InstanceCount": 2,
                    "VolumeSizeInGB": 30,
                    "KeepAlivePeriodInSeconds": 300,
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": 600},
                "CheckpointConfig": {"S3Uri": "file:///ckpt"},
                "Environment": {"OMP_NUM_THREADS": "1"},
                "RetryStrategy": {"MaximumRetryAttempts": 1},
            },
        )
    ]
    assert est.latest_training_job is not None and est.latest_training_job.name == NAME


def test_default_job_names_follow_the_sagemaker_sdk() -> None:
    backend = RecordingBackend(CreateTrainingJob=created("TrainingJob", "TrainingJobName"))
    estimator(backend).fit("file:///data/", wait=False)
    Estimator(image_uri=XGB_IMAGE, session=Session(backend=backend)).fit("file:///data/", wait=False)
    estimator(backend, base_job_name="churn").fit("file:///data/", wait=False)
    names = [p["TrainingJobName"] for p in backend.requests("CreateTrainingJob")]
    bases = [LONG_NAME_RE.match(n).group(1) for n in names]  # type: ignore[union-attr]
    assert bases == ["xgboost", "sagemaker-xgboost", "churn"]
    assert all(len(n) <= 63 for n in names)


def _log_events(*seq_and_lines: tuple[int, str]) -> dict[str, Any]:
    return {
        "Events": [
            {"SequenceNumber": seq, "Timestamp": T0 + datetime.timedelta(seconds=seq), "Message": line}
            for seq, line in seq_and_lines
        ]
    }


def test_wait_with_logs_prints_transitions_logs_and_seconds() -> None:
    backend = RecordingBackend()
    est = started(backend, instance_count=2)
    starting = [("Starting", "Starting the training job")]
    training = [*starting, ("Training", "Training image download completed. Training in progress.")]
    done = [
        *training,
        ("Uploading", "Uploading generated training model"),
        ("Completed", "Training job completed"),
    ]
    backend.answer(
        DescribeTrainingJob=[
            training_job_description(NAME, "InProgress", "Starting", instance_count=2, transitions=starting),
            training_job_description(NAME, "InProgress", "Training", instance_count=2, transitions=training),
            training_job_description(
                NAME,
                "Completed",
                "Completed",
                instance_count=2,
                transitions=done,
                FinalMetricDataList=[{"MetricName": "validation:auc", "Value": 0.9876543, "Timestamp": T0}],
                TrainingTimeInSeconds=12,
                BillableTimeInSeconds=11,
            ),
        ],
        WaitForTrainingJob=[
            {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
            {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
        ],
        GetTrainingJobLogs=[
            _log_events(),
            _log_events((1, "[0]\tvalidation-auc:0.9"), (2, "[1]\tvalidation-auc:0.95")),
            _log_events((3, "Uploaded model.tar.gz")),
        ],
    )
    out = io.StringIO()
    desc = est.latest_training_job.wait(logs=True, out=out)  # type: ignore[union-attr]

    assert desc["TrainingJobStatus"] == "Completed"
    assert backend.ops() == [
        "DescribeTrainingJob",
        "GetTrainingJobLogs",
        "WaitForTrainingJob",
        "DescribeTrainingJob",
        "GetTrainingJobLogs",
        "WaitForTrainingJob",
        "DescribeTrainingJob",
        "GetTrainingJobLogs",
    ]
    assert backend.requests("WaitForTrainingJob") == [
        {"TrainingJobName": NAME, "SinceSecondaryStatus": "Starting", "TimeoutSeconds": 1.0},
        {"TrainingJobName": NAME, "SinceSecondaryStatus": "Training", "TimeoutSeconds": 1.0},
    ]
    assert backend.requests("GetTrainingJobLogs") == [
        {"TrainingJobName": NAME, "AfterSequenceNumber": 0},
        {"TrainingJobName": NAME, "AfterSequenceNumber": 0},
        {"TrainingJobName": NAME, "AfterSequenceNumber": 2},
    ]
    assert backend.requests("DescribeTrainingJob") == [{"TrainingJobName": NAME}] * 3
    # BillableTimeInSeconds is per instance; the SageMaker SDK prints it times the instance count.
    assert out.getvalue().splitlines() == [
        "2025-01-02 03:04:05 Starting - Starting the training job",
        "2025-01-02 03:04:06 Training - Training image download completed. Training in progress.",
        "[0]\tvalidation-auc:0.9",
        "[1]\tvalidation-auc:0.95",
        "2025-01-02 03:04:07 Uploading - Uploading generated training model",
        "2025-01-02 03:04:08 Completed - Training job completed",
        "Uploaded model.tar.gz",
        "validation:auc: 0.987654",
        "Training seconds: 24",
        "Billable seconds: 22",
    ]


def test_wait_with_logs_single_instance_prints_the_billable_seconds() -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(
        DescribeTrainingJob=training_job_description(
            NAME, "Completed", "Completed", TrainingTimeInSeconds=5, BillableTimeInSeconds=4
        ),
        GetTrainingJobLogs=_log_events(),
    )
    out = io.StringIO()
    est.latest_training_job.wait(out=out)  # type: ignore[union-attr]
    assert out.getvalue().splitlines() == ["Training seconds: 5", "Billable seconds: 4"]
    assert backend.ops() == ["DescribeTrainingJob", "GetTrainingJobLogs"]


def test_wait_without_logs_long_polls_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(
        DescribeTrainingJob=[
            training_job_description(NAME, "InProgress", "Downloading"),
            training_job_description(NAME, "Completed", "Completed"),
        ],
        WaitForTrainingJob={"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
    )
    est.wait(logs=False)
    assert backend.ops() == ["DescribeTrainingJob", "WaitForTrainingJob", "DescribeTrainingJob"]
    assert backend.requests("WaitForTrainingJob") == [
        {"TrainingJobName": NAME, "SinceSecondaryStatus": "Downloading", "TimeoutSeconds": 10.0}
    ]
    assert capsys.readouterr().out == ""


def test_a_failed_job_raises_the_sagemaker_sdk_message() -> None:
    backend = RecordingBackend()
    est = started(backend)
    reason = "AlgorithmError: label column has 3 classes"
    backend.answer(
        DescribeTrainingJob=training_job_description(
            NAME, "Failed", "Failed", FailureReason=reason, BillableTimeInSeconds=3
        ),
        GetTrainingJobLogs=_log_events((1, "Traceback ...")),
    )
    out = io.StringIO()
    with pytest.raises(UnexpectedStatusException) as err:
        est.latest_training_job.wait(out=out)  # type: ignore[union-attr]
    assert str(err.value) == f"Error for Training job {NAME}: Failed. Reason: {reason}"
    assert (err.value.allowed_statuses, err.value.actual_status) == (["Completed", "Stopped"], "Failed")
    # As the SageMaker SDK: the status is checked before the seconds are printed.
    assert out.getvalue() == "Traceback ...\n"


def test_a_stopped_job_warns_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(DescribeTrainingJob=training_job_description(NAME, "Stopped", "MaxRuntimeExceeded"))
    with caplog.at_level(logging.WARNING, logger="raymaker.sdk"):
        desc = est.latest_training_job.wait(logs=False)  # type: ignore[union-attr]
    assert desc["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "Job ended with status 'Stopped' rather than 'Completed'" in caplog.text


def test_describe_and_stop() -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(DescribeTrainingJob=training_job_description(NAME), StopTrainingJob={})
    job = est.latest_training_job
    assert job is not None and job.describe()["TrainingJobName"] == NAME
    job.stop()
    assert backend.calls == [
        ("DescribeTrainingJob", {"TrainingJobName": NAME}),
        ("StopTrainingJob", {"TrainingJobName": NAME}),
    ]


def test_nothing_to_wait_for_before_fit() -> None:
    with pytest.raises(ValueError, match="call fit\\(\\) first"):
        estimator(RecordingBackend()).wait()


def test_attach_rebuilds_the_estimator() -> None:
    desc = training_job_description(NAME, "Completed", "Completed", instance_count=2)
    backend = RecordingBackend(DescribeTrainingJob=desc)
    est = Estimator.attach(NAME, Session(backend=backend))
    assert backend.calls == [("DescribeTrainingJob", {"TrainingJobName": NAME})]
    assert (est.algorithm, est.instance_count, est.instance_type, est.max_run) == ("xgboost", 2, "local", 600)
    assert est.hyperparameters() == desc["HyperParameters"] and est.output_path == "file:///out"
    assert est.latest_training_job is not None and est.latest_training_job.name == NAME
    assert est.model_data == "file:///out/xgb-job-1/output/model.tar.gz"


def test_deploy_creates_model_config_and_endpoint_then_waits() -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(
        DescribeTrainingJob=training_job_description(NAME, "Completed", "Completed"),
        DescribeModel=ValidationError(f"Could not find model {NAME}"),
        CreateModel=created("Model", "ModelName"),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        CreateEndpoint=created("Endpoint", "EndpointName"),
        DescribeEndpoint=[endpoint_description("churn", "Creating"), endpoint_description("churn")],
    )
    predictor = est.deploy(2, "local", endpoint_name="churn")
    assert predictor.endpoint_name == "churn" and predictor.session is est.session
    assert backend.calls == [
        ("DescribeTrainingJob", {"TrainingJobName": NAME}),
        ("DescribeModel", {"ModelName": NAME}),
        (
            "CreateModel",
            {
                "ModelName": NAME,
                "PrimaryContainer": {
                    "Image": "xgboost",
                    "ModelDataUrl": "file:///out/xgb-job-1/output/model.tar.gz",
                },
                "ExecutionRoleArn": "arn:aws:iam::000000000000:role/raymaker",
            },
        ),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": "churn",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": NAME,
                        "InitialInstanceCount": 2,
                        "InstanceType": "local",
                        "InitialVariantWeight": 1.0,
                    }
                ],
            },
        ),
        ("CreateEndpoint", {"EndpointName": "churn", "EndpointConfigName": "churn"}),
        ("DescribeEndpoint", {"EndpointName": "churn"}),
        ("DescribeEndpoint", {"EndpointName": "churn"}),
    ]


def test_transformer_runs_a_transform_job_on_the_model() -> None:
    backend = RecordingBackend()
    est = started(backend)
    backend.answer(
        DescribeTrainingJob=training_job_description(NAME, "Completed", "Completed"),
        DescribeModel={
            "ModelName": NAME,
            "ModelArn": f"arn:aws:sagemaker:x:model/{NAME}",
            "CreationTime": T0,
        },
        CreateTransformJob=created("TransformJob", "TransformJobName"),
    )
    transformer = est.transformer(
        1, "local", strategy="MultiRecord", assemble_with="Line", output_path="file:///p"
    )
    backend.answer(
        DescribeTransformJob=lambda p: transform_job_description(
            backend.requests("CreateTransformJob")[0], "Completed"
        )
    )
    transformer.transform("file:///in/", content_type="text/csv", split_type="Line", job_name="batch-1")
    assert backend.ops() == [
        "DescribeTrainingJob",
        "DescribeModel",  # the model exists: not created again
        "CreateTransformJob",
        "DescribeTransformJob",
    ]
    assert backend.requests("CreateTransformJob") == [
        {
            "TransformJobName": "batch-1",
            "ModelName": NAME,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "file:///in/"}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            "TransformOutput": {"S3OutputPath": "file:///p", "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
            "BatchStrategy": "MultiRecord",
        }
    ]


def test_training_job_analytics_reads_the_metrics() -> None:
    backend = RecordingBackend()
    est = started(backend)

    def point(name: str, value: float, seconds: int, step: int) -> dict[str, Any]:
        ts = T0 + datetime.timedelta(seconds=seconds)
        return {"MetricName": name, "Value": value, "Step": step, "Timestamp": ts}

    backend.answer(
        GetTrainingJobMetrics={
            "Metrics": [
                point("train:auc", 0.8, 1, 0),
                point("validation:auc", 0.7, 2, 0),
                point("train:auc", 0.9, 4, 1),
            ]
        }
    )
    analytics = est.training_job_analytics
    assert isinstance(analytics, TrainingJobAnalytics) and analytics.name == NAME
    df = analytics.dataframe()
    assert backend.calls == [("GetTrainingJobMetrics", {"TrainingJobName": NAME})]
    assert list(df.columns) == ["timestamp", "metric_name", "value"]
    assert df.values.tolist() == [
        [0.0, "train:auc", 0.8],
        [3.0, "train:auc", 0.9],
        [0.0, "validation:auc", 0.7],
    ]
    assert analytics.dataframe() is df  # cached

    backend.calls.clear()
    backend.answer(GetTrainingJobMetrics={"Metrics": [point("validation:auc", 0.7, 2, 0)]})
    one = TrainingJobAnalytics(NAME, ["validation:auc"], sagemaker_session=est.session).dataframe()
    assert backend.calls == [
        ("GetTrainingJobMetrics", {"TrainingJobName": NAME, "MetricName": "validation:auc"})
    ]
    assert one["value"].tolist() == [0.7]
