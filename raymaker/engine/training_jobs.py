"""Training job operations: CreateTrainingJob, DescribeTrainingJob, StopTrainingJob, ListTrainingJobs,
raymaker's own WaitForTrainingJob, GetTrainingJobLogs, GetTrainingJobMetrics and GetResourceCost (for
training jobs), and the Describe / List shapes built from a job record.

Requests arrive already checked against the service model (``api`` does that for every operation);
these handlers apply raymaker's rules, write records, and hand the job to the job service."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from raymaker.cluster.definition import load_instance_types
from raymaker.engine import metering, states
from raymaker.engine.container_job import require_image
from raymaker.engine.context import Engine
from raymaker.engine.store import JobStore, as_datetime
from raymaker.engine.validation import TrainingJobSpec, validate_training_job
from raymaker.io.channels import list_objects
from raymaker.io.storage import S3Settings, storage_for
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.service_model import output_shape


def check_channels_exist(spec: TrainingJobSpec, settings: S3Settings) -> None:
    """The data must be there before any Ray work starts: a missing bucket or an empty prefix is the
    user's to fix, and says so now rather than from inside a worker."""
    for channel in spec.channels:
        if channel.name == "model":
            continue
        try:
            list_objects(channel, settings)
        except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
            raise ValidationError(f"channel {channel.name!r}: {e}") from None


def check_source_exists(spec: TrainingJobSpec, settings: S3Settings) -> None:
    """A script's code must be there before any Ray work starts (the SDK uploads it at fit())."""
    if spec.script is None:
        return
    uri = spec.script.submit_directory
    try:
        storage_for(uri, settings).stat(uri)
    except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
        raise ValidationError(
            f"HyperParameters['sagemaker_submit_directory'] is {uri}, which cannot be read ({e}): upload the "
            "source directory there as sourcedir.tar.gz (the SDK does, from source_dir)"
        ) from None


def create_training_job(
    engine: Engine, params: dict[str, Any], *, tuning_job_arn: str | None = None
) -> dict[str, Any]:
    spec = validate_training_job(params, instance_types=load_instance_types())
    check_channels_exist(spec, engine.settings)
    check_source_exists(spec, engine.settings)
    if spec.container is not None:
        require_image(spec.container.image, gpus=spec.instance_type.gpus)
    service = engine.service()  # Ray is up before the record exists: no record waits for a cluster
    cluster = engine.cluster()
    cluster.require_capacity(spec.instance_type.name, spec.instance_count, "training job")
    cluster.require_shared_storage(
        {
            "OutputDataConfig.S3OutputPath": spec.output_path,
            "CheckpointConfig.S3Uri": spec.checkpoint_uri,
            "HyperParameters[sagemaker_submit_directory]": spec.script and spec.script.submit_directory,
            **{f"InputDataConfig[{c.name}].S3Uri": c.s3_uri for c in spec.channels},
        }
    )
    if spec.checkpoint_uri is None and cluster.spans_nodes:
        # An instance restarted on another node resumes from S3, not from a disk it cannot see.
        spec = replace(spec, checkpoint_uri=f"{spec.output_path.rstrip('/')}/{spec.name}/checkpoints")
    record = engine.store.create_training_job(spec, tuning_job_arn=tuning_job_arn)
    service.run_job.remote(spec, engine.settings)
    return {"TrainingJobArn": record["arn"]}


def describe(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    return describe_training_job(engine.store.get_training_job(params["TrainingJobName"]))


def stop_training_job(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    record = engine.store.get_training_job(name)
    if states.is_terminal(states.SecondaryStatus(record["secondary_status"])):
        raise ValidationError(
            f"training job {name!r} has already ended ({record['status']}): nothing to stop"
        )
    if record["secondary_status"] != states.SecondaryStatus.STOPPING:
        engine.store.transition_training_job(name, states.SecondaryStatus.STOPPING)
    return {}


def list_training_jobs(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    records = engine.store.list_training_jobs(
        status=params.get("StatusEquals"),
        name_contains=params.get("NameContains"),
        max_results=int(params.get("MaxResults", 100)),
        creation_time_after=metering.epoch_seconds(params.get("CreationTimeAfter")),
        creation_time_before=metering.epoch_seconds(params.get("CreationTimeBefore")),
        sort_by=params.get("SortBy", "CreationTime"),
        sort_order=params.get("SortOrder", "Descending"),
    )
    return {"TrainingJobSummaries": [training_job_summary(r) for r in records]}


# --- raymaker's own (service-model extension) ---------------------------------------------------


def wait_for_training_job(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Long poll: return once the job's SecondaryStatus differs from ``SinceSecondaryStatus`` (or it
    has ended), or after ``TimeoutSeconds``. Lets ``wait()`` see the end of a job within 50 ms
    without describing it over and over."""
    name = params["TrainingJobName"]
    since = params.get("SinceSecondaryStatus")
    deadline = time.time() + float(params.get("TimeoutSeconds", 10))
    while True:
        record = engine.store.get_training_job(name)
        status = states.SecondaryStatus(record["secondary_status"])
        if status != since or states.is_terminal(status) or time.time() >= deadline:
            return {"TrainingJobStatus": record["status"], "SecondaryStatus": record["secondary_status"]}
        time.sleep(0.05)


def get_training_job_logs(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    engine.store.get_training_job(name)
    return log_page(engine.store, name, params)


def log_page(store: JobStore, key: str, params: dict[str, Any]) -> dict[str, Any]:
    """A page of log lines after ``AfterSequenceNumber``, in the extension's LogEvent shape."""
    events = store.logs(key, after_seq=int(params.get("AfterSequenceNumber", 0)), limit=params.get("Limit"))
    return {
        "Events": [
            {"SequenceNumber": e["seq"], "Timestamp": as_datetime(e["time"]), "Message": e["line"]}
            for e in events
        ]
    }


def get_training_job_metrics(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    name = params["TrainingJobName"]
    engine.store.get_training_job(name)
    out = []
    for m in engine.store.metric_history(name, params.get("MetricName")):
        value = {"MetricName": m["metric"], "Value": m["value"], "Timestamp": as_datetime(m["timestamp"])}
        if m["step"] is not None:
            value["Step"] = int(m["step"])
        out.append(value)
    return {"Metrics": out}


def training_job_cost(record: Mapping[str, Any]) -> dict[str, Any]:
    """GetResourceCost for a training job."""
    resources = record["request"].get("ResourceConfig") or {}
    return metering.cost_report(
        record["arn"],
        resources.get("InstanceCount", 1),
        int(record.get("billable_seconds") or 0),
        resources.get("InstanceType"),
        record.get("cost") or 0.0,
    )


# --- for tuning trials ---------------------------------------------------------------------------


@dataclass
class TrainingJobSubmitter:
    """How a tuning job creates and stops its trials' training jobs, in the job service (Tune trials,
    which may run on any node, ask the service; only the service opens the job database). Injected
    into the tuning run, so tuning never imports the API. Each call is audited as the tuning job's own."""

    engine: Engine

    def submit(self, request: dict[str, Any], *, tuning_job_arn: str, caller: str) -> None:
        store = self.engine.store
        try:
            create_training_job(self.engine, request, tuning_job_arn=tuning_job_arn)
        except BaseException as e:
            store.record_api_call("CreateTrainingJob", request, error=e, caller=caller)
            raise
        store.record_api_call("CreateTrainingJob", request, caller=caller)

    def stop(self, name: str, *, caller: str) -> None:
        store = self.engine.store
        params = {"TrainingJobName": name}
        try:
            stop_training_job(self.engine, params)
        except ValidationError as e:  # it ended meanwhile
            store.record_api_call("StopTrainingJob", params, error=e, caller=caller)
            return
        store.record_api_call("StopTrainingJob", params, caller=caller)


OPERATIONS = {
    "CreateTrainingJob": create_training_job,
    "DescribeTrainingJob": describe,
    "StopTrainingJob": stop_training_job,
    "ListTrainingJobs": list_training_jobs,
    "WaitForTrainingJob": wait_for_training_job,
    "GetTrainingJobLogs": get_training_job_logs,
    "GetTrainingJobMetrics": get_training_job_metrics,
}


# --- shapes ----------------------------------------------------------------------------------------


def describe_training_job(record: Mapping[str, Any]) -> dict[str, Any]:
    """The DescribeTrainingJob response for a job record (datetimes for timestamps, as boto3 returns
    them; the HTTP layer writes them as epoch seconds). Request members that DescribeTrainingJob also
    returns are copied through, per botocore's output shape."""
    request = record["request"]
    members = output_shape("DescribeTrainingJob").members
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in request.items() if k in members}

    resources = request.get("ResourceConfig") or {}
    instance_count = max(int(resources.get("InstanceCount", 1)), 1)
    out.update(
        TrainingJobName=record["name"],
        TrainingJobArn=record["arn"],
        ModelArtifacts={"S3ModelArtifacts": record.get("model_artifacts") or ""},
        TrainingJobStatus=record["status"],
        SecondaryStatus=record["secondary_status"],
        StoppingCondition={"MaxRuntimeInSeconds": 86400, **(request.get("StoppingCondition") or {})},
        CreationTime=as_datetime(record["creation_time"]),
        LastModifiedTime=as_datetime(record["last_modified_time"]),
        SecondaryStatusTransitions=[
            {
                k: (as_datetime(v) if k in ("StartTime", "EndTime") else v)
                for k, v in t.items()
                if v is not None
            }
            for t in record.get("transitions") or []
        ],
        EnableNetworkIsolation=bool(request.get("EnableNetworkIsolation", False)),
        EnableInterContainerTrafficEncryption=bool(
            request.get("EnableInterContainerTrafficEncryption", False)
        ),
        EnableManagedSpotTraining=bool(request.get("EnableManagedSpotTraining", False)),
    )
    if "InputDataConfig" in out:  # SageMaker echoes channels with their defaults filled in
        for channel in out["InputDataConfig"]:
            s3 = channel.get("DataSource", {}).get("S3DataSource")
            if s3 is not None:
                s3.setdefault("S3DataDistributionType", "FullyReplicated")
            channel.setdefault("CompressionType", "None")
            channel.setdefault("RecordWrapperType", "None")
    optional = {
        "TuningJobArn": record.get("tuning_job_arn"),
        "FailureReason": (record.get("failure_reason") or "")[:1024] or None,
        "TrainingStartTime": as_datetime(record.get("training_start_time")),
        "TrainingEndTime": as_datetime(record.get("training_end_time")),
        "WarmPoolStatus": record.get("warm_pool_status"),
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if record.get("final_metrics"):
        out["FinalMetricDataList"] = [
            {**m, "Timestamp": as_datetime(m["Timestamp"])} if m.get("Timestamp") is not None else dict(m)
            for m in record["final_metrics"]
        ][:40]
    # Both are >= 1 in the model: absent until the job has run.
    if record.get("training_seconds"):
        out["TrainingTimeInSeconds"] = int(record["training_seconds"])
    if record.get("billable_seconds"):
        # Per instance, as SageMaker reports it; the record keeps instance-seconds for cost.
        out["BillableTimeInSeconds"] = math.ceil(record["billable_seconds"] / instance_count)
    return out


def training_job_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ListTrainingJobs ``TrainingJobSummaries`` entry."""
    out = {
        "TrainingJobName": record["name"],
        "TrainingJobArn": record["arn"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
        "TrainingJobStatus": record["status"],
        "SecondaryStatus": record["secondary_status"],
    }
    if record.get("training_end_time") is not None:
        out["TrainingEndTime"] = as_datetime(record["training_end_time"])
    if record.get("warm_pool_status"):
        out["WarmPoolStatus"] = record["warm_pool_status"]
    return out
