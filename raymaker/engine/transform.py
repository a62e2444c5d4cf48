"""Transform jobs: request checks, records, the Describe shape, and the run on Ray Data.

The run streams ``WorkUnit``s through Ray Data into a pool of ``TransformWorker`` actors (one per
instance, each holding the model) and writes each object's ``.out`` once all its units succeeded; the
first failure fails the job with the object and line named, and no ``.out`` is written for that object.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, replace
from typing import Any

from raymaker.engine.errors import ValidationError
from raymaker.engine.hosting import _check_name, _dt, model_spec
from raymaker.engine.instance_types import get_instance_type, load_instance_types, worker_resources
from raymaker.engine.resource_states import TransformJobStatus as T
from raymaker.engine.resources import ResourceStore
from raymaker.engine.validation import validate_request
from raymaker.io.channels import Channel, list_objects
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.transform import TransformPlan, TransformWorker, work_units

MAX_PAYLOAD_MB = 100  # SageMaker's cap, also on MaxConcurrentTransforms x MaxPayloadInMB


def _input_channel(request: dict[str, Any]) -> Channel:
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
        model=model_spec(res, request["ModelName"]),
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
            raise ValidationError(f"Environment RAYMAKER_TRANSFORM_UNIT_BYTES {unit!r} must be a positive integer")
        plan = replace(plan, unit_bytes=int(unit))
    try:
        plan.data_processing()
    except ValueError as e:
        raise ValidationError(f"DataProcessing: {e}") from None
    return plan


def create_transform_job(res: ResourceStore, params: dict[str, Any], settings: S3Settings) -> dict[str, Any]:
    validate_request("CreateTransformJob", params)
    _check_name(params["TransformJobName"], "TransformJobName")
    transform_plan(res, params)
    get_instance_type(params["TransformResources"]["InstanceType"], load_instance_types())
    try:
        list_objects(_input_channel(params), settings)
        storage_for(params["TransformOutput"]["S3OutputPath"], settings)
    except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
        raise ValidationError(f"TransformInput: {e}") from None
    record = res.create("transform-job", params["TransformJobName"], params, status=T.IN_PROGRESS)
    return {"TransformJobArn": record["arn"]}


def describe_transform_job(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    from raymaker.engine.api_model import output_shape

    validate_request("DescribeTransformJob", params)
    record = res.get("transform-job", params["TransformJobName"])
    members = output_shape("DescribeTransformJob").members
    out = {k: v for k, v in record["request"].items() if k in members}
    out.update(
        TransformJobName=record["name"],
        TransformJobArn=record["arn"],
        TransformJobStatus=record["status"],
        CreationTime=_dt(record["creation_time"]),
    )
    for key, column in (("TransformStartTime", "start_time"), ("TransformEndTime", "end_time")):
        if record.get(column):
            out[key] = _dt(record[column])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    state = record["state"]
    for key in ("BillableTimeInSeconds", "Cost", "ObjectsWritten", "RecordsTransformed"):
        if key in state:
            out[f"raymaker:{key}"] = state[key]
    return out


def transform_job_summary(record: dict[str, Any]) -> dict[str, Any]:
    out = {
        "TransformJobName": record["name"],
        "TransformJobArn": record["arn"],
        "CreationTime": _dt(record["creation_time"]),
        "LastModifiedTime": _dt(record["last_modified_time"]),
        "TransformJobStatus": record["status"],
    }
    if record.get("end_time"):
        out["TransformEndTime"] = _dt(record["end_time"])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    return out


def stop_transform_job(res: ResourceStore, params: dict[str, Any]) -> None:
    validate_request("StopTransformJob", params)
    name = params["TransformJobName"]
    record = res.get("transform-job", name)
    if record["status"] != T.STOPPING:
        res.update("transform-job", name, status=T.STOPPING)


# --- the run (in the job service) ----------------------------------------------------------------


def run_transform_job(res: ResourceStore, name: str, settings: S3Settings | None) -> str:
    import ray

    record = res.get("transform-job", name)
    request = record["request"]
    start = time.time()
    res.update("transform-job", name, start_time=start)
    resources = request["TransformResources"]
    itype = get_instance_type(resources["InstanceType"], load_instance_types())
    count = int(resources["InstanceCount"])
    try:
        plan = transform_plan(res, request)
        objects = list_objects(_input_channel(request), settings)
        units = work_units(objects, plan, plan.unit_bytes)
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        cpu = worker_resources(itype, count, total_cpus)["CPU"]
        ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))
        ds = ds.map_batches(
            TransformWorker,
            fn_constructor_args=(plan, settings),
            batch_size=1,
            concurrency=min(count, len(units)),
            num_cpus=cpu,
            num_gpus=float(itype.gpus) or None,
        )
        out_prefix = request["TransformOutput"]["S3OutputPath"].rstrip("/")
        pending: dict[str, dict[int, bytes]] = defaultdict(dict)
        written = records = 0
        stopped = False
        for row in ds.iter_rows():
            pending[row["uri"]][int(row["index"])] = row["output"]
            records += int(row["records"])
            parts = pending[row["uri"]]
            if len(parts) == int(row["count"]):
                uri = f"{out_prefix}/{row['relative']}.out"
                storage_for(uri, settings).put_bytes(uri, b"".join(parts[i] for i in range(len(parts))))
                del pending[row["uri"]]
                written += 1
            if res.get("transform-job", name)["status"] == T.STOPPING:
                stopped = True
                break
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        status, reason = T.FAILED, _reason(e)
    else:
        status, reason = (T.STOPPED if stopped else T.COMPLETED), None
        if not stopped and res.get("transform-job", name)["status"] == T.STOPPING:
            status = T.COMPLETED  # the stop came after the last object: SageMaker reports Completed
    end = time.time()
    billable = max(1, round(end - start)) * count
    state = {
        "ObjectsWritten": locals().get("written", 0),
        "RecordsTransformed": locals().get("records", 0),
        "BillableTimeInSeconds": billable,
        "Cost": round(billable / 3600 * itype.price_per_hour, 6),
    }
    res.update("transform-job", name, status=status, failure_reason=reason, end_time=end, state=state)
    return status


def _reason(e: BaseException) -> str:
    """The user's problem from a Ray Data failure: the innermost TransformError's message."""
    from raymaker.serve.transform import TransformError

    seen, cur = set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, TransformError):
            return str(cur)[:1024]
        cur = cur.__cause__ or cur.__context__
    text = str(e)
    for line in reversed(text.splitlines()):
        if "TransformError:" in line:
            return line.split("TransformError:", 1)[1].strip()[:1024]
    return (f"{type(e).__name__}: {text}" if text else type(e).__name__)[:1024]
