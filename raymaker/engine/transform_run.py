"""A transform job's run, in the job service: stream ``WorkUnit``s to model actors (one per instance, two
units in flight each so reading overlaps compute; idle ones kept warm in the service's ``ActorPool``),
and write each object's ``.out`` once all its units succeeded."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import ray

from raymaker.cluster.capacity import custom_resources, waiting_message, worker_resources
from raymaker.cluster.definition import get_instance_type, load_instance_types
from raymaker.engine import metering
from raymaker.engine.failures import failure_reason
from raymaker.engine.instances import ActorPool, Idle, kill
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import TransformJobStatus as T
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import log_key
from raymaker.engine.transform_jobs import input_channel, transform_plan
from raymaker.io.channels import list_objects
from raymaker.io.storage import S3Settings, storage_for
from raymaker.serve.transform import TransformError, TransformWorker, safe_output_key, work_units

DEFAULT_KEEP_ALIVE_S = 30.0  # idle model actors wait this long for the next job on the same model
IN_FLIGHT_PER_ACTOR = 2  # one unit read while another is transformed
PROGRESS_EVERY_S = 0.5  # how often a running job's record says how far it got


def run_transform_job(res: ResourceStore, name: str, settings: S3Settings | None, pool: ActorPool) -> str:
    record = res.get(Kind.TRANSFORM_JOB, name)
    request = record["request"]
    start = time.time()
    res.update(Kind.TRANSFORM_JOB, name, start_time=start)
    resources = request["TransformResources"]
    itype = get_instance_type(resources["InstanceType"], load_instance_types())
    count = int(resources["InstanceCount"])
    env = request.get("Environment") or {}
    written = records = 0
    stopped = False
    try:
        keep_alive = float(env.get("RAYMAKER_TRANSFORM_KEEP_ALIVE_S", DEFAULT_KEEP_ALIVE_S))
        plan = transform_plan(res, request)
        objects = list_objects(input_channel(request), settings)
        units = work_units(objects, plan, plan.unit_bytes, instances=count)
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        each = worker_resources(itype, count, total_cpus)
        cpu = each["CPU"]
        # Ray caps a worker's OpenMP threads at its logical CPUs (xgboost then predicts on one): an
        # instance may use the node's cores, as the process it stands for would.
        threads = str(max(1, int(total_cpus)))
        actor_cls = ray.remote(TransformWorker).options(
            num_cpus=cpu,
            num_gpus=float(itype.gpus) or None,
            resources=custom_resources(each),
            max_concurrency=IN_FLIGHT_PER_ACTOR,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": threads}},
        )
        key = (plan.model, plan.data_processing_key(), cpu, itype.gpus)
        wanted = min(count, len(units))
        actors = [e.actor for e in pool.take(key, wanted)]
        if len(actors) < wanted:
            missing = wanted - len(actors)
            pool.make_room({k: v * missing for k, v in each.items()})
            message = waiting_message(itype, missing, each)
            if message:  # the actors wait for them; say so where the user can read it (GetResourceLogs)
                res.store.append_logs(log_key(Kind.TRANSFORM_JOB, name), [message])
            actors += [actor_cls.remote(plan, settings) for _ in range(wanted - len(actors))]
        out_prefix = request["TransformOutput"]["S3OutputPath"].rstrip("/")
        pending: dict[str, dict[int, bytes]] = defaultdict(dict)
        queue = list(reversed(units))
        next_report = time.monotonic() + PROGRESS_EVERY_S
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
                    uri = safe_output_key(out_prefix, unit.relative, unit.uri)
                    storage_for(uri, settings).put_bytes(uri, b"".join(parts[i] for i in range(unit.count)))
                    del pending[unit.uri]
                    written += 1
                if time.monotonic() >= next_report:  # GetTransformJobProgress answers while it runs
                    res.update(
                        Kind.TRANSFORM_JOB,
                        name,
                        state={"ObjectsWritten": written, "RecordsTransformed": records},
                    )
                    next_report = time.monotonic() + PROGRESS_EVERY_S
                if res.get(Kind.TRANSFORM_JOB, name)["status"] == T.STOPPING and (queue or in_flight):
                    stopped = True
                    break
            ok = not stopped
        finally:
            for ref in in_flight:
                ray.cancel(ref)
            if ok and keep_alive > 0:
                for a in actors:
                    pool.put(Idle(a, key, time.time() + keep_alive))
            else:  # a failed or stopped job's actors may be mid-unit: never reuse them
                for a in actors:
                    kill(a)
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        status, reason = T.FAILED, failure_reason(e, plain=(TransformError,))
    else:
        status, reason = (T.STOPPED if stopped else T.COMPLETED), None
    end = time.time()
    billable = metering.billable_seconds(count, start, end)  # per second, no minimum, as training jobs
    state = {
        "ObjectsWritten": written,
        "RecordsTransformed": records,
        "BillableInstanceSeconds": billable,
        "Cost": metering.cost(billable, itype.price_per_hour),
    }
    res.update(Kind.TRANSFORM_JOB, name, status=status, failure_reason=reason, end_time=end, state=state)
    return status
