"""Transform jobs: request checks, records, the Describe shape, and the run.

The run streams ``WorkUnit``s to a pool of ``TransformWorker`` actors (one per instance, each holding
the model, two units in flight so reading overlaps compute) and writes each object's ``.out`` once all
its units succeeded; the first failure fails the job with the object and line named, and no ``.out``
is written for that object. Why actors of our own rather than Ray Data's ``map_batches`` actor pool:
Ray Data starts a new pool for every execution, and a new actor (process, imports, model load) costs
about 2 s here, as long as transforming a million CSV rows; these actors stay warm between jobs.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

from raymaker.protocol.errors import ValidationError
from raymaker.engine.hosting import _check_name, _dt, model_spec
from raymaker.engine.instance_types import get_instance_type, load_instance_types, worker_resources
from raymaker.engine.resource_states import TransformJobStatus as T
from raymaker.engine.resources import ResourceStore
from raymaker.engine.validation import validate_request
from raymaker.io.channels import Channel, list_objects
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.transform import TransformPlan, work_units

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
    from raymaker.protocol.service_model import output_shape

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

DEFAULT_KEEP_ALIVE_S = 30.0  # idle model actors wait this long for the next job on the same model
IN_FLIGHT_PER_ACTOR = 2  # one unit read while another is transformed


class TransformPool:
    """Model actors kept warm between transform jobs, keyed by model and shape: a second job on the
    same model starts at once instead of paying a process start, imports and the model load (~2 s
    here, as long as transforming a million rows)."""

    def __init__(self) -> None:
        self.idle: dict[tuple, list[tuple[Any, float]]] = defaultdict(list)
        self.lock = threading.Lock()

    def acquire(self, key: tuple, count: int, make: Any, cpus_each: float) -> list[Any]:
        self.reap()
        with self.lock:
            warm = [self.idle[key].pop()[0] for _ in range(min(count, len(self.idle[key])))]
        if count > len(warm):
            self.make_room(cpus_each * (count - len(warm)))
        return warm + [make() for _ in range(count - len(warm))]

    def make_room(self, cpus: float) -> None:
        """Stop idle actors (oldest first) until ``cpus`` are free: warm actors must not hold back
        new work."""
        import ray

        while ray.available_resources().get("CPU", 0.0) < cpus - 1e-9:
            with self.lock:
                entries = [(t, k, i) for k, v in self.idle.items() for i, (_, t) in enumerate(v)]
                if not entries:
                    return
                _, key, i = min(entries)
                actor, _ = self.idle[key].pop(i)
            ray_kill(actor)
            time.sleep(0.2)  # let the raylet see the freed resources

    def clear(self) -> None:
        with self.lock:
            actors = [a for entries in self.idle.values() for a, _ in entries]
            self.idle.clear()
        for a in actors:
            ray_kill(a)

    def release(self, key: tuple, actors: list[Any], keep_alive_s: float) -> None:
        if keep_alive_s <= 0:
            for a in actors:
                ray_kill(a)
            return
        with self.lock:
            self.idle[key] += [(a, time.time() + keep_alive_s) for a in actors]

    def reap(self) -> None:
        now = time.time()
        with self.lock:
            expired = [a for entries in self.idle.values() for a, t in entries if t <= now]
            for key in list(self.idle):
                self.idle[key] = [(a, t) for a, t in self.idle[key] if t > now]
        for a in expired:
            ray_kill(a)


def ray_kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already gone
        pass


def run_transform_job(
    res: ResourceStore, name: str, settings: S3Settings | None, pool: TransformPool | None = None
) -> str:
    import ray

    from raymaker.serve.transform import TransformWorker

    pool = pool or TransformPool()
    record = res.get("transform-job", name)
    request = record["request"]
    start = time.time()
    res.update("transform-job", name, start_time=start)
    resources = request["TransformResources"]
    itype = get_instance_type(resources["InstanceType"], load_instance_types())
    count = int(resources["InstanceCount"])
    env = request.get("Environment") or {}
    written = records = 0
    stopped = False
    try:
        keep_alive = float(env.get("RAYMAKER_TRANSFORM_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S))
        plan = transform_plan(res, request)
        objects = list_objects(_input_channel(request), settings)
        units = work_units(objects, plan, plan.unit_bytes, instances=count)
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        cpu = worker_resources(itype, count, total_cpus)["CPU"]
        # Ray caps a worker's OpenMP threads at its logical CPUs (xgboost then predicts on one): an
        # instance may use the node's cores, as the process it stands for would.
        threads = str(max(1, int(total_cpus)))
        actor_cls = ray.remote(TransformWorker).options(
            num_cpus=cpu,
            num_gpus=float(itype.gpus) or None,
            max_concurrency=IN_FLIGHT_PER_ACTOR,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": threads}},
        )
        key = (plan.model, plan.data_processing_key(), cpu, itype.gpus)
        actors = pool.acquire(key, min(count, len(units)), lambda: actor_cls.remote(plan, settings), cpu)
        out_prefix = request["TransformOutput"]["S3OutputPath"].rstrip("/")
        pending: dict[str, dict[int, bytes]] = defaultdict(dict)
        queue = list(reversed(units))
        in_flight: dict[Any, tuple[Any, Any]] = {}  # ref -> (actor, unit)
        ok = False
        try:
            free = [a for a in actors for _ in range(IN_FLIGHT_PER_ACTOR)]
            while queue or in_flight:
                while queue and free:
                    actor, unit = free.pop(0), queue.pop()
                    in_flight[actor.run.remote(unit, plan)] = (actor, unit)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                actor, unit = in_flight.pop(done[0])
                free.append(actor)
                data, n = ray.get(done[0])
                records += n
                parts = pending[unit.uri]
                parts[unit.index] = data
                if len(parts) == unit.count:
                    uri = f"{out_prefix}/{unit.relative}.out"
                    storage_for(uri, settings).put_bytes(uri, b"".join(parts[i] for i in range(unit.count)))
                    del pending[unit.uri]
                    written += 1
                if res.get("transform-job", name)["status"] == T.STOPPING and (queue or in_flight):
                    stopped = True
                    break
            ok = not stopped
        finally:
            for ref in in_flight:
                ray.cancel(ref)
            if ok:
                pool.release(key, actors, keep_alive)
            else:  # a failed or stopped job's actors may be mid-unit: never reuse them
                for a in actors:
                    ray_kill(a)
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        status, reason = T.FAILED, _reason(e)
    else:
        status, reason = (T.STOPPED if stopped else T.COMPLETED), None
    end = time.time()
    billable = max(1, round(end - start)) * count
    state = {
        "ObjectsWritten": written,
        "RecordsTransformed": records,
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
