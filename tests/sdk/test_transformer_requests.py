"""``Transformer`` against a recording backend: the exact CreateTransformJob requests, and the wait
through the SDK's one waiter (SageMaker SDK semantics: Failed raises, Stopped warns)."""

from __future__ import annotations

import logging
import re

import pytest

from raymaker.sdk import Session, Transformer, UnexpectedStatusException
from tests.sdk.helpers import RecordingBackend, created, transform_job_description


def _backend(*statuses: str, **extra: str) -> RecordingBackend:
    backend = RecordingBackend(
        CreateTransformJob=created("TransformJob", "TransformJobName"), StopTransformJob={}
    )
    answers = [
        (lambda p, s=s: transform_job_description(backend.requests("CreateTransformJob")[-1], s, **extra))
        for s in statuses
    ]
    backend.answer(DescribeTransformJob=answers)
    return backend


def test_transform_sends_every_option_and_waits(sleeps: list[float]) -> None:
    backend = _backend("InProgress", "InProgress", "Completed")
    transformer = Transformer(
        "m-1",
        2,
        "local",
        strategy="MultiRecord",
        assemble_with="Line",
        output_path="s3://bucket/out/",
        accept="text/csv",
        max_concurrent_transforms=4,
        max_payload=6,
        env={"RAYMAKER_TRANSFORM_KEEP_ALIVE_S": "5"},
        session=Session(backend=backend),
    )
    transformer.transform(
        "s3://bucket/in/",
        content_type="text/csv",
        compression_type="Gzip",
        split_type="Line",
        job_name="batch-1",
        input_filter="$[1:]",
        output_filter="$[0,-1]",
        join_source="Input",
    )
    assert backend.calls[0] == (
        "CreateTransformJob",
        {
            "TransformJobName": "batch-1",
            "ModelName": "m-1",
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/in/"}},
                "ContentType": "text/csv",
                "CompressionType": "Gzip",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": "s3://bucket/out/",
                "Accept": "text/csv",
                "AssembleWith": "Line",
            },
            "TransformResources": {"InstanceType": "local", "InstanceCount": 2},
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": 6,
            "MaxConcurrentTransforms": 4,
            "Environment": {"RAYMAKER_TRANSFORM_KEEP_ALIVE_S": "5"},
            "DataProcessing": {"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]", "JoinSource": "Input"},
        },
    )
    assert backend.calls[1:] == [("DescribeTransformJob", {"TransformJobName": "batch-1"})] * 3
    assert sleeps == [0.1, 0.1]
    assert transformer.latest_transform_job == "batch-1"


def test_default_name_and_output_path() -> None:
    backend = _backend("Completed")
    session = Session(backend=backend, default_output_path="file:///home/out")
    transformer = Transformer("m-1", session=session)
    transformer.transform("file:///in/", wait=False)
    request = backend.requests("CreateTransformJob")[0]
    name = request["TransformJobName"]
    assert re.fullmatch(r"m-1-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}", name)
    assert request["TransformOutput"] == {"S3OutputPath": f"file:///home/out/{name}"}
    assert backend.ops() == ["CreateTransformJob"]


def test_a_failed_transform_raises_the_sagemaker_sdk_message() -> None:
    reason = "s3://bucket/in/rows.csv line 5: could not parse 'x'"
    backend = _backend("InProgress", "Failed", FailureReason=reason)
    transformer = Transformer("m-1", output_path="file:///o", session=Session(backend=backend))
    with pytest.raises(UnexpectedStatusException) as err:
        transformer.transform("file:///in/", job_name="batch-2")
    assert str(err.value) == f"Error for Transform job batch-2: Failed. Reason: {reason}"
    assert err.value.actual_status == "Failed"


def test_a_stopped_transform_warns(caplog: pytest.LogCaptureFixture) -> None:
    backend = _backend("Stopping", "Stopped")
    transformer = Transformer("m-1", output_path="file:///o", session=Session(backend=backend))
    transformer.transform("file:///in/", job_name="batch-3", wait=False)
    with caplog.at_level(logging.WARNING, logger="raymaker.sdk"):
        transformer.stop_transform_job()
    assert backend.ops() == [
        "CreateTransformJob",
        "StopTransformJob",
        "DescribeTransformJob",
        "DescribeTransformJob",
    ]
    assert backend.requests("StopTransformJob") == [{"TransformJobName": "batch-3"}]
    assert "rather than 'Completed'" in caplog.text


def test_describe_before_transform_says_what_to_do() -> None:
    transformer = Transformer("m-1", session=Session(backend=RecordingBackend()))
    with pytest.raises(ValueError, match="call transform\\(\\) first"):
        transformer.describe()
    with pytest.raises(ValueError, match="call transform\\(\\) first"):
        transformer.wait()
