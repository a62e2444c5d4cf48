"""Transform job operations: request checks, records, the Describe / List shapes and the plan that
``transform_run`` carries out in the job service.

The run streams ``WorkUnit``s to a pool of ``TransformWorker`` actors (one per instance, each holding
the model, two units in flight so reading overlaps compute) and writes each object's ``.out`` once all
its units succeeded; the first failure fails the job with the object and line named, and no ``.out``
is written for that object. Why actors of our own rather than Ray Data's ``map_batches`` actor pool:
Ray Data starts a new pool for every execution, and a new actor (process, imports, model load) costs
about 2 s here, as long as transforming a million CSV rows; these actors stay warm between jobs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from raymaker.cluster.definition import get_instance_type, load_instance_types
from raymaker.engine import metering
from raymaker.engine.context import Engine
from raymaker.engine.hosting import _check_name, _with_limits, list_resources, model_spec, model_storage
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import TransformJobStatus as T
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import as_datetime
from raymaker.io.channels import Channel, list_objects
from raymaker.io.storage import S3Settings, storage_for
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.service_model import output_shape
from raymaker.serve.model import ModelSpec
from raymaker.serve.transform import TransformPlan

MAX_PAYLOAD_MB = 100  # SageMaker's cap, also on MaxConcurrentTransforms x MaxPayloadInMB


def input_channel(request: dict[str, Any]) -> Channel:
    ti = request["TransformInput"]
    s3 = ti["DataSource"]["S3DataSource"]
    if s3["S3DataType"] not in ("S3Prefix", "ManifestFile"):
        raise ValidationError(f"TransformInput S3DataType {s3['S3DataType']!r}: use S3Prefix or ManifestFile")
    return Channel.from_request(
        {
            "ChannelName": "transform",
            "DataSource": {"S3DataSource": {"S3DataType": s3["S3DataType"], "S3Uri": s3["S3Uri"]}},
            "CompressionType": ti.get("CompressionType", "None"),
            **({"ContentType": ti["ContentType"]} if ti.get("ContentType") else {}),
        }
    )


EXECUTION_PARAMETERS = ("BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms")


def _batch_model(spec: ModelSpec, request: dict[str, Any]) -> ModelSpec:
    """A custom container serves a transform job with SageMaker's batch variables: SAGEMAKER_BATCH
    always, the other three only when the request sets them, then the job's Environment; and within
    its instance type's CPUs and memory."""
    if not spec.is_container:
        return spec
    env = dict(spec.environment)
    env.update(request.get("Environment") or {})
    env["SAGEMAKER_BATCH"] = "true"
    if request.get("MaxPayloadInMB") is not None:
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(request["MaxPayloadInMB"])
    if request.get("BatchStrategy"):
        env["SAGEMAKER_BATCH_STRATEGY"] = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}[
            request["BatchStrategy"]]
    if request.get("MaxConcurrentTransforms"):
        env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(request["MaxConcurrentTransforms"])
    itype = get_instance_type(request["TransformResources"]["InstanceType"], load_instance_types())
    return _with_limits(replace(spec, environment=tuple(sorted(env.items()))), itype)


def transform_plan(res: ResourceStore, request: dict[str, Any]) -> TransformPlan:
    ti, to = request["TransformInput"], request["TransformOutput"]
    split = ti.get("SplitType", "None")
    if split == "TFRecord":
        raise ValidationError(
            "TransformInput.SplitType TFRecord is not supported: use None, Line or RecordIO"
        )
    payload_mb = request.get("MaxPayloadInMB", 6)
    if payload_mb > MAX_PAYLOAD_MB:
        raise ValidationError(f"MaxPayloadInMB is {payload_mb}; the most is {MAX_PAYLOAD_MB}")
    concurrent = request.get("MaxConcurrentTransforms", 0) or 1
    if concurrent * payload_mb > MAX_PAYLOAD_MB:
        raise ValidationError(
            f"MaxConcurrentTransforms x MaxPayloadInMB is {concurrent * payload_mb}; it must be at most {MAX_PAYLOAD_MB}"
        )
    dp = request.get("DataProcessing") or {}
    plan = TransformPlan(
        model=_batch_model(model_spec(res, request["ModelName"]), request),
        given=frozenset(k for k in EXECUTION_PARAMETERS if request.get(k) is not None),
        content_type=ti.get("ContentType"),
        accept=to.get("Accept"),
        split_type=split,
        strategy=request.get("BatchStrategy") or ("MultiRecord" if split != "None" else "SingleRecord"),
        max_payload_bytes=int(payload_mb * (1 << 20)),
        assemble_with=to.get("AssembleWith", "None"),
        compression=ti.get("CompressionType", "None"),
        input_filter=dp.get("InputFilter", "$"),
        join_source=dp.get("JoinSource", "None"),
        output_filter=dp.get("OutputFilter", "$"),
    )
    unit = (request.get("Environment") or {}).get("RAYMAKER_TRANSFORM_UNIT_BYTES")
    if unit is not None:
        if not unit.isdigit() or int(unit) < 1:
            raise ValidationError(
                f"Environment RAYMAKER_TRANSFORM_UNIT_BYTES {unit!r} must be a positive integer"
            )
        plan = replace(plan, unit_bytes=int(unit))
    try:
        plan.data_processing()
    except ValueError as e:
        raise ValidationError(f"DataProcessing: {e}") from None
    return plan


def check_transform_job(res: ResourceStore, params: dict[str, Any], settings: S3Settings) -> None:
    _check_name(params["TransformJobName"], "TransformJobName")
    transform_plan(res, params)
    get_instance_type(params["TransformResources"]["InstanceType"], load_instance_types())
    try:
        list_objects(input_channel(params), settings)
        storage_for(params["TransformOutput"]["S3OutputPath"], settings)
    except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
        raise ValidationError(f"TransformInput: {e}") from None


def describe_transform_job(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    record = res.get(Kind.TRANSFORM_JOB, params["TransformJobName"])
    members = output_shape("DescribeTransformJob").members
    out = {k: v for k, v in record["request"].items() if k in members}
    out.update(
        TransformJobName=record["name"],
        TransformJobArn=record["arn"],
        TransformJobStatus=record["status"],
        CreationTime=as_datetime(record["creation_time"]),
    )
    for key, column in (("TransformStartTime", "start_time"), ("TransformEndTime", "end_time")):
        if record.get(column):
            out[key] = as_datetime(record[column])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    return out


def transform_job_summary(record: dict[str, Any]) -> dict[str, Any]:
    out = {
        "TransformJobName": record["name"],
        "TransformJobArn": record["arn"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
        "TransformJobStatus": record["status"],
    }
    if record.get("end_time"):
        out["TransformEndTime"] = as_datetime(record["end_time"])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    return out


def stop_transform_job(res: ResourceStore, params: dict[str, Any]) -> None:
    name = params["TransformJobName"]
    record = res.get(Kind.TRANSFORM_JOB, name)
    if record["status"] != T.STOPPING:
        res.update(Kind.TRANSFORM_JOB, name, status=T.STOPPING)


def transform_job_cost(record: dict[str, Any]) -> dict[str, Any]:
    """GetResourceCost for a transform job (per second, no minimum, as training jobs)."""
    resources = record["request"]["TransformResources"]
    return metering.cost_report(
        record["arn"],
        resources["InstanceCount"],
        int(record["state"].get("BillableInstanceSeconds", 0)),
        resources["InstanceType"],
        record["state"].get("Cost", 0.0),
    )


# --- the operations ----------------------------------------------------------------------------------


def create_transform_job(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    check_transform_job(engine.resources, params, engine.settings)
    service = engine.service()
    resources = params["TransformResources"]
    cluster = engine.cluster()
    cluster.require_capacity(resources["InstanceType"], int(resources["InstanceCount"]), "transform job")
    cluster.require_shared_storage(
        {
            "TransformInput.DataSource.S3DataSource.S3Uri": input_channel(params).s3_uri,
            "TransformOutput.S3OutputPath": params["TransformOutput"]["S3OutputPath"],
            **model_storage(model_spec(engine.resources, params["ModelName"]), params["ModelName"]),
        }
    )
    record = engine.resources.create(
        Kind.TRANSFORM_JOB, params["TransformJobName"], params, status=T.IN_PROGRESS
    )
    service.run_transform.remote(params["TransformJobName"], engine.settings)
    return {"TransformJobArn": record["arn"]}


def get_transform_job_progress(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    state = engine.resources.get(Kind.TRANSFORM_JOB, params["TransformJobName"])["state"]
    return {
        "ObjectsWritten": int(state.get("ObjectsWritten", 0)),
        "RecordsTransformed": int(state.get("RecordsTransformed", 0)),
    }


OPERATIONS = {
    "CreateTransformJob": create_transform_job,
    "DescribeTransformJob": lambda engine, p: describe_transform_job(engine.resources, p),
    "StopTransformJob": lambda engine, p: stop_transform_job(engine.resources, p) or {},
    "ListTransformJobs": lambda engine, p: {
        "TransformJobSummaries": [
            transform_job_summary(r) for r in list_resources(engine, Kind.TRANSFORM_JOB, p)
        ]
    },
    "GetTransformJobProgress": get_transform_job_progress,
}
