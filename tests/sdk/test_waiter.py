"""The SDK's one wait loop (``raymaker.sdk.waiter.wait_for``) on canned status sequences: end
statuses, the SageMaker SDK's messages per resource kind, timeouts, long polls and deletions."""

from __future__ import annotations

from typing import Any

import pytest

from raymaker.protocol.errors import ResourceNotFound, ValidationError
from raymaker.sdk import UnexpectedStatusException, waiter
from raymaker.sdk.waiter import ENDPOINT, ENDPOINT_DELETED, TRAINING_JOB, TUNING_JOB, wait_for
from tests.sdk.helpers import RecordingBackend, endpoint_description, training_job_description


def test_polls_until_an_end_status_and_returns_the_last_description(sleeps: list[float]) -> None:
    backend = RecordingBackend(
        DescribeTrainingJob=[
            training_job_description("j", "InProgress"),
            training_job_description("j", "Stopping", "Stopping"),
            training_job_description("j", "Completed", "Completed"),
        ]
    )
    seen: list[str] = []
    desc = wait_for(
        backend, TRAINING_JOB, "j", poll=0.5, on_describe=lambda d: seen.append(d["SecondaryStatus"])
    )
    assert desc["TrainingJobStatus"] == "Completed"
    assert seen == ["Training", "Stopping", "Completed"]
    assert sleeps == [0.5, 0.5]


def test_pause_replaces_the_sleep(sleeps: list[float]) -> None:
    backend = RecordingBackend(
        DescribeTrainingJob=[
            training_job_description("j"),
            training_job_description("j", "Completed", "Completed"),
        ]
    )
    pauses: list[tuple[str, float]] = []
    wait_for(
        backend, TRAINING_JOB, "j", poll=2.0, pause=lambda d, s: pauses.append((d["SecondaryStatus"], s))
    )
    assert pauses == [("Training", 2.0)] and sleeps == []


@pytest.mark.parametrize(
    ("resource", "status", "message"),
    [
        (TRAINING_JOB, "Failed", "Error for Training job j: Failed. Reason: (No reason provided)"),
        (TUNING_JOB, "Failed", "Error for HyperParameterTuning job j: Failed. Reason: (No reason provided)"),
        (ENDPOINT, "OutOfService", "Error hosting endpoint j: OutOfService. Reason: None."),
    ],
)
def test_failure_messages_are_the_sagemaker_sdks(
    resource: waiter.Resource, status: str, message: str
) -> None:
    with pytest.raises(UnexpectedStatusException) as err:
        resource.check("j", {resource.status_key: status})
    assert str(err.value) == message and err.value.actual_status == status
    assert isinstance(err.value, ValueError)  # as the SageMaker SDK's


def test_check_false_returns_a_failed_end_without_raising() -> None:
    backend = RecordingBackend(DescribeTrainingJob=training_job_description("j", "Failed", "Failed"))
    assert wait_for(backend, TRAINING_JOB, "j", check=False)["TrainingJobStatus"] == "Failed"


def test_timeout_leaves_the_resource_and_says_so(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    clock = iter([100.0, 100.0, 103.0, 106.0])
    monkeypatch.setattr(waiter, "monotonic", lambda: next(clock))
    backend = RecordingBackend(DescribeEndpoint=endpoint_description("ep", "Creating"))
    with pytest.raises(TimeoutError, match="endpoint ep is still Creating after 5 s"):
        wait_for(backend, ENDPOINT, "ep", poll=4.0, timeout=5.0)
    assert sleeps == [4.0, 2.0]  # the last pause stops at the deadline
    assert backend.ops() == ["DescribeEndpoint"] * 3


def test_not_found_ends_only_a_deletion() -> None:
    gone = RecordingBackend(DescribeEndpoint=ValidationError("Could not find endpoint ep"))
    assert wait_for(gone, ENDPOINT_DELETED, "ep") == {}
    with pytest.raises(ValidationError):
        wait_for(gone, ENDPOINT, "ep")
    missing_job = RecordingBackend(DescribeTrainingJob=ResourceNotFound("Requested resource not found"))
    with pytest.raises(ResourceNotFound):
        wait_for(missing_job, TRAINING_JOB, "j")


def test_every_sdk_wait_goes_through_wait_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training job, transform job, tuning job and endpoint waits all call ``waiter.wait_for``."""
    import raymaker.sdk.predictor as predictor
    import raymaker.sdk.training_job as training_job
    import raymaker.sdk.transformer as transformer
    import raymaker.sdk.tuner as tuner

    used: list[str] = []

    def fake(session: Any, resource: waiter.Resource, name: str, **kwargs: Any) -> dict[str, Any]:
        used.append(resource.describe)
        return {"EndpointConfigName": "c"}

    for module in (predictor, training_job, transformer, tuner):
        monkeypatch.setattr(module, "wait_for", fake)
    backend = RecordingBackend()
    training_job.TrainingJob("j", backend).wait(logs=False)  # type: ignore[arg-type]
    t = transformer.Transformer("m", session=backend)  # type: ignore[arg-type]
    t.latest_transform_job = "t"
    t.wait()
    tuner._TuningJob(backend, "h").wait()  # type: ignore[arg-type]
    predictor.wait_for_endpoint(backend, "e")  # type: ignore[arg-type]
    predictor.wait_for_deleted(backend, "e")  # type: ignore[arg-type]
    assert used == [
        "DescribeTrainingJob",
        "DescribeTransformJob",
        "DescribeHyperParameterTuningJob",
        "DescribeEndpoint",
        "DescribeEndpoint",
    ]
