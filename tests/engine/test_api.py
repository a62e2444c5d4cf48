"""The API seam without Ray: dispatch, service-model validation of raymaker's own operations, the audit
trail (every call, any exception), ListAuditEvents paging and retention, Describe when the job service
is gone, and GetResourceCost."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from raymaker.engine import api as api_module
from raymaker.engine.api import OPERATIONS, SageMakerAPI
from raymaker.engine.failures import failure_reason
from raymaker.engine.store import JobStore
from raymaker.protocol.errors import ResourceNotFound, ValidationError
from raymaker.protocol.service_model import extension_model, raymaker_operations, service_model

from .helpers import training_request


@pytest.fixture
def api(job_store: JobStore) -> SageMakerAPI:
    return SageMakerAPI(job_store)  # on SQLite and on PostgreSQL


def test_every_operation_is_in_a_service_model() -> None:
    sagemaker = set(service_model().operation_names)
    ours = raymaker_operations()
    assert not ours & sagemaker, "raymaker's operations must not shadow SageMaker's"
    unknown = [op for op in OPERATIONS if op not in sagemaker | ours]
    assert not unknown
    assert set(ours) <= set(OPERATIONS), "every declared raymaker operation is served"


def test_raymaker_operations_are_validated_like_sagemakers(api) -> None:
    with pytest.raises(ValidationError, match='Unknown parameter in input: "AfterSeq"'):
        api.call("GetTrainingJobLogs", {"TrainingJobName": "x", "AfterSeq": 3})
    with pytest.raises(ValidationError, match="TrainingJobName"):
        api.call("GetTrainingJobMetrics", {})
    assert extension_model().operation_model("ListAuditEvents").output_shape.members["Events"]


def test_unknown_operation_is_a_validation_error_and_audited(api) -> None:
    with pytest.raises(ValidationError, match="does not support the operation 'MakeCoffee'"):
        api.call("MakeCoffee", {})
    [event] = api.store.audit_events("MakeCoffee")
    assert event["errorCode"] == "ValidationException"


def test_every_call_is_audited_whatever_it_raised(api, monkeypatch) -> None:
    with pytest.raises(ResourceNotFound):
        api.call("DescribeTrainingJob", {"TrainingJobName": "nope"})

    def boom(engine, params):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(api_module.OPERATIONS, "ListTrainingJobs", boom)
    with pytest.raises(RuntimeError):
        api.call("ListTrainingJobs", {}, caller="alice", source_ip="10.1.2.3", user_agent="boto3/1.43")
    events = api.store.audit_events()
    assert [(e["eventName"], e.get("errorCode")) for e in events] == [
        ("DescribeTrainingJob", "ResourceNotFound"),
        ("ListTrainingJobs", "RuntimeError"),
    ]
    last = events[-1]
    assert last["errorMessage"] == "disk on fire"
    assert last["userIdentity"] == {"type": "IAMUser", "userName": "alice"}
    assert (last["sourceIPAddress"], last["userAgent"]) == ("10.1.2.3", "boto3/1.43")
    assert last["requestID"] and last["requestID"] != events[0]["requestID"]
    assert last["requestParameters"] == {}


def test_list_audit_events_pages_newest_first_as_cloudtrail(api) -> None:
    for i in range(7):
        api.store.record_api_call(
            "DescribeModel", {"ModelName": f"m{i}"}, error=("ValidationException", "x") if i % 2 else None
        )
    seen, token = [], None
    while True:
        page = api.call(
            "ListAuditEvents",
            {"EventName": "DescribeModel", "MaxResults": 3, **({"NextToken": token} if token else {})},
        )
        seen += [json.loads(e["CloudTrailEvent"])["requestParameters"]["ModelName"] for e in page["Events"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]
    errors = api.call("ListAuditEvents", {"EventName": "DescribeModel", "ErrorsOnly": True})["Events"]
    assert {e["ErrorCode"] for e in errors} == {"ValidationException"} and len(errors) == 3
    later = api.call("ListAuditEvents", {"StartTime": datetime.now(UTC) + timedelta(minutes=1)})
    assert later["Events"] == []
    with pytest.raises(ValidationError, match="NextToken"):
        api.call("ListAuditEvents", {"NextToken": "not-a-token"})


def test_audit_retention_drops_old_events(tmp_path, monkeypatch) -> None:
    store = JobStore(tmp_path / "db.sqlite")
    monkeypatch.setenv("RAYMAKER_AUDIT_RETENTION_DAYS", "1")
    store.record_api_call("Old", {}, now=time.time() - 3 * 86400)
    store.record_api_call("New", {})
    assert store.prune_audit_events() == 1
    assert [e["eventName"] for e in store.audit_events()] == ["New"]
    monkeypatch.setenv("RAYMAKER_AUDIT_RETENTION_DAYS", "forever")
    with pytest.raises(ValueError, match="RAYMAKER_AUDIT_RETENTION_DAYS"):
        store.prune_audit_events()


def test_describe_says_when_the_job_service_is_gone(api) -> None:
    api.store.create_training_job(training_request(TrainingJobName="orphan"))
    desc = api.call("DescribeTrainingJob", {"TrainingJobName": "orphan"})
    assert "job service" not in desc["SecondaryStatusTransitions"][-1]["StatusMessage"]  # none ever ran
    api.store.service_heartbeat("svc-1", now=time.time() - 60)
    desc = api.call("DescribeTrainingJob", {"TrainingJobName": "orphan"})
    assert (
        "job service has not been heard from since" in desc["SecondaryStatusTransitions"][-1]["StatusMessage"]
    )
    api.store.service_heartbeat("svc-1")
    desc = api.call("DescribeTrainingJob", {"TrainingJobName": "orphan"})
    assert "job service" not in desc["SecondaryStatusTransitions"][-1]["StatusMessage"]


def test_describe_carries_nothing_raymaker_adds(api) -> None:
    api.store.create_training_job(training_request(TrainingJobName="shape"))
    api.store.update_training_job("shape", billable_seconds=10, cost=0.5)
    desc = api.call("DescribeTrainingJob", {"TrainingJobName": "shape"})
    members = set(service_model().operation_model("DescribeTrainingJob").output_shape.members)
    assert set(desc) <= members, set(desc) - members
    cost = api.call("GetResourceCost", {"ResourceArn": desc["TrainingJobArn"]})
    # SageMaker's BillableTimeInSeconds is per instance; the cost covers both instances.
    assert (cost["BillableInstanceSeconds"], cost["BillableTimeInSeconds"], cost["InstanceCount"]) == (
        10,
        5,
        2,
    )
    assert cost["Cost"] == 0.5
    with pytest.raises(ValidationError, match="training jobs, transform jobs and endpoints"):
        api.call("GetResourceCost", {"ResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:model/m"})


def test_failure_reason_finds_the_users_error() -> None:
    try:
        try:
            raise ValueError("line 3: not a number\n")
        except ValueError as inner:
            raise RuntimeError("ray wrapped it\nTraceback ...\nValueError: line 3: not a number") from inner
    except RuntimeError as e:
        assert failure_reason(e) == "ValueError: line 3: not a number"
        assert failure_reason(e, prefix="Model failed: ") == "Model failed: ValueError: line 3: not a number"
        assert failure_reason(e, plain=(ValueError,)) == "line 3: not a number"
    assert failure_reason(KeyError()) == "KeyError"
    assert len(failure_reason(ValueError("x" * 5000))) == 1024


def test_resource_logs_by_arn(api) -> None:
    from raymaker.engine.kinds import Kind
    from raymaker.engine.store import log_key

    record = api.resources.create(Kind.TRANSFORM_JOB, "t1", {"TransformJobName": "t1"}, status="InProgress")
    api.store.append_logs(log_key(Kind.TRANSFORM_JOB, "t1"), ["Waiting for resources: 1 x local needs 1 CPU"])
    api.store.append_logs("t1", ["a training job's line, not the transform job's"])
    events = api.call("GetResourceLogs", {"ResourceArn": record["arn"]})["Events"]
    assert [e["Message"] for e in events] == ["Waiting for resources: 1 x local needs 1 CPU"]
    assert api.call("GetResourceLogs", {"ResourceArn": record["arn"], "AfterSequenceNumber": 1})["Events"] == []
    with pytest.raises(ValidationError, match="Could not find"):
        api.call("GetResourceLogs", {"ResourceArn": record["arn"].replace("t1", "t2")})
    with pytest.raises(ValidationError, match="names no kind"):
        api.call("GetResourceLogs", {"ResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:notebook/x"})
