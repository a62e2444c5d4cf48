"""Hyperparameter tuning job operations: request checks, records and the Describe / List shapes;
``tuning_run`` runs the job on Ray Tune in the job service.

Each trial is a Tune function trial that launches a real training job (its own record, metrics,
artifacts and billing, named ``<tuning job>-<NNN>-<hash>``) through the engine, then reports the job's
objective metric to Tune as the algorithm emits it, step by step, so Tune's schedulers (HyperBand,
median stopping) can stop poor trials early; a trial stopped by Tune stops its training job.
Strategies: Random and Grid with Tune's own generators, Bayesian with Optuna's TPE (OptunaSearch),
Hyperband with Tune's asynchronous HyperBand (ASHA). A failed trial does not fail the tuning job; it fails only
when every trial failed.
"""

from __future__ import annotations

import math
from typing import Any

from raymaker.cluster.definition import load_instance_types
from raymaker.engine import states
from raymaker.engine.context import Engine
from raymaker.engine.hosting import list_resources
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import TuningJobStatus as TS
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore, as_datetime
from raymaker.engine.tuning_spec import TuningJobSpec, trial_resources, validate_tuning_job
from raymaker.io.channels import Channel, list_objects
from raymaker.io.storage import S3Settings
from raymaker.protocol.errors import ValidationError

KIND = Kind.TUNING_JOB


def check_tuning_job(res: ResourceStore, params: dict[str, Any], settings: S3Settings) -> TuningJobSpec:
    spec = validate_tuning_job(params, instance_types=load_instance_types())
    for channel in spec.training_definition.get("InputDataConfig") or []:
        if channel.get("ChannelName") == "model":
            continue
        try:
            list_objects(Channel.from_request(channel), settings)
        except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
            raise ValidationError(
                f"TrainingJobDefinition channel {channel.get('ChannelName')!r}: {e}"
            ) from None
    for parent in (spec.warm_start or {}).get("parents", []):
        record = res.get(KIND, parent)
        if record["status"] not in (TS.COMPLETED, TS.STOPPED, TS.FAILED):
            raise ValidationError(f"warm start parent {parent!r} is {record['status']}: wait until it ends")
    return spec


def stop_tuning_job(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    name = params["HyperParameterTuningJobName"]
    if res.get(KIND, name)["status"] != TS.STOPPING:
        res.update(KIND, name, status=TS.STOPPING)
    return {}


def trials(store: JobStore, arn: str) -> list[dict[str, Any]]:
    """The training jobs a tuning job launched, in launch order."""
    return store.list_training_jobs(
        tuning_job_arn=arn, max_results=1_000_000, sort_by="CreationTime", sort_order="Ascending"
    )


def trial_summary(record: dict[str, Any], metric: str, objective_type: str) -> dict[str, Any]:
    """HyperParameterTrainingJobSummary for a trial's training job record."""
    hp = record["request"].get("HyperParameters") or {}
    names = record.get("_tuned_names")
    tuned = {k: v for k, v in hp.items() if names is None or k in names}
    out: dict[str, Any] = {
        "TrainingJobName": record["name"],
        "TrainingJobArn": record["arn"],
        "CreationTime": as_datetime(record["creation_time"]),
        "TrainingJobStatus": record["status"],
        "TunedHyperParameters": tuned,
    }
    if record.get("training_start_time"):
        out["TrainingStartTime"] = as_datetime(record["training_start_time"])
    if record.get("training_end_time"):
        out["TrainingEndTime"] = as_datetime(record["training_end_time"])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    final = {m["MetricName"]: m["Value"] for m in record.get("final_metrics") or []}
    if metric in final:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": objective_type,
            "MetricName": metric,
            "Value": final[metric],
        }
        out["ObjectiveStatus"] = "Succeeded"
    else:
        out["ObjectiveStatus"] = "Failed" if states.is_terminal(record["secondary_status"]) else "Pending"
    return out


def _summaries(res: ResourceStore, store: JobStore, record: dict[str, Any]) -> list[dict[str, Any]]:
    request = record["request"]
    config = request["HyperParameterTuningJobConfig"]
    objective = config.get("HyperParameterTuningJobObjective") or request["TrainingJobDefinition"].get(
        "TuningObjective"
    )
    tuned = {r["Name"] for kind in (config.get("ParameterRanges") or {}).values() for r in kind}
    out = []
    for trial in trials(store, record["arn"]):
        trial["_tuned_names"] = tuned
        out.append(trial_summary(trial, objective["MetricName"], objective["Type"]))
    return out


def best_of(summaries: list[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    scored = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
    if not scored:
        return None
    key = lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]  # noqa: E731
    return max(scored, key=key) if maximize else min(scored, key=key)


def describe_tuning_job(res: ResourceStore, store: JobStore, params: dict[str, Any]) -> dict[str, Any]:
    record = res.get(KIND, params["HyperParameterTuningJobName"])
    request = record["request"]
    summaries = _summaries(res, store, record)
    counts = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    objective_counts = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for s in summaries:
        status = s["TrainingJobStatus"]
        key = "NonRetryableError" if status == "Failed" else "InProgress" if status == "Stopping" else status
        counts[key] += 1
        objective_counts[s["ObjectiveStatus"]] += 1
    out: dict[str, Any] = {
        "HyperParameterTuningJobName": record["name"],
        "HyperParameterTuningJobArn": record["arn"],
        "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
        "HyperParameterTuningJobStatus": record["status"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
        "TrainingJobStatusCounters": counts,
        "ObjectiveStatusCounters": objective_counts,
    }
    for key in ("TrainingJobDefinition", "WarmStartConfig"):
        if key in request:
            out[key] = request[key]
    if record.get("end_time"):
        out["HyperParameterTuningEndTime"] = as_datetime(record["end_time"])
    if record.get("failure_reason"):
        out["FailureReason"] = record["failure_reason"]
    objective = request["HyperParameterTuningJobConfig"].get("HyperParameterTuningJobObjective") or {}
    maximize = objective.get("Type", "Maximize") == "Maximize"
    best = best_of(summaries, maximize)
    if best:
        out["BestTrainingJob"] = best
    parents = [
        p["HyperParameterTuningJobName"]
        for p in (request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs", [])
    ]
    if parents:
        inherited = [s for p in parents for s in _summaries(res, store, res.get(KIND, p))]
        overall = best_of(summaries + inherited, maximize)
        if overall:
            out["OverallBestTrainingJob"] = overall
    return out


def parent_results(
    res: ResourceStore, store: JobStore, spec: TuningJobSpec
) -> tuple[list[dict], list[float]]:
    """The warm-start parents' evaluated points (in this job's search space) and their objective
    values, for the searcher to learn from without running them again."""
    points, rewards = [], []
    for parent in (spec.warm_start or {}).get("parents", []):
        for s in _summaries(res, store, res.get(KIND, parent)):
            metric = s.get("FinalHyperParameterTuningJobObjectiveMetric")
            tuned = s["TunedHyperParameters"]
            if metric is None or any(r.name not in tuned for r in spec.ranges):
                continue
            point = {}
            for r in spec.ranges:
                value = tuned[r.name]
                if r.kind == "categorical":
                    if value not in r.values:
                        break
                    point[r.name] = value
                else:
                    number = float(value)
                    if not (r.min_value <= number <= r.max_value):
                        break
                    if r.kind == "integer":
                        point[r.name] = int(round(number))
                    else:
                        point[r.name] = 1 - number if r.scaling == "ReverseLogarithmic" else number
            else:
                points.append(point)
                rewards.append(float(metric["Value"]))
    return points, rewards


def list_training_jobs_for_tuning_job(
    res: ResourceStore, store: JobStore, params: dict[str, Any]
) -> dict[str, Any]:
    record = res.get(KIND, params["HyperParameterTuningJobName"])
    summaries = _summaries(res, store, record)
    if params.get("StatusEquals"):
        summaries = [s for s in summaries if s["TrainingJobStatus"] == params["StatusEquals"]]
    if params.get("SortBy") == "FinalObjectiveMetricValue":
        summaries.sort(
            key=lambda s: s.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value", -math.inf),
            reverse=params.get("SortOrder", "Descending") == "Descending",
        )
    start = int(params.get("NextToken") or 0)
    size = int(params.get("MaxResults", 100))
    page = summaries[start : start + size]
    out: dict[str, Any] = {"TrainingJobSummaries": page}
    if start + size < len(summaries):
        out["NextToken"] = str(start + size)
    return out


def tuning_job_summary(record: dict[str, Any]) -> dict[str, Any]:
    config = record["request"]["HyperParameterTuningJobConfig"]
    limits = config.get("ResourceLimits") or {}
    return {
        "HyperParameterTuningJobName": record["name"],
        "HyperParameterTuningJobArn": record["arn"],
        "HyperParameterTuningJobStatus": record["status"],
        "Strategy": config["Strategy"],
        "CreationTime": as_datetime(record["creation_time"]),
        "LastModifiedTime": as_datetime(record["last_modified_time"]),
        "TrainingJobStatusCounters": {},
        "ObjectiveStatusCounters": {},
        "ResourceLimits": limits,
        **(
            {"HyperParameterTuningEndTime": as_datetime(record["end_time"])} if record.get("end_time") else {}
        ),
    }


# --- the operations ----------------------------------------------------------------------------------


def create_tuning_job(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    spec = check_tuning_job(engine.resources, params, engine.settings)
    service = engine.service()
    trial = trial_resources(spec)
    cluster = engine.cluster()
    cluster.require_capacity(trial["InstanceType"], int(trial["InstanceCount"]), "training job")
    definition = spec.training_definition
    cluster.require_shared_storage(
        {
            "TrainingJobDefinition.OutputDataConfig.S3OutputPath": definition["OutputDataConfig"]["S3OutputPath"],
            **{
                f"TrainingJobDefinition.InputDataConfig[{c['ChannelName']}].S3Uri": Channel.from_request(c).s3_uri
                for c in definition.get("InputDataConfig") or []
            },
        }
    )
    record = engine.resources.create(
        KIND, params["HyperParameterTuningJobName"], params, status=TS.IN_PROGRESS
    )
    service.run_tuning.remote(params["HyperParameterTuningJobName"], engine.settings)
    return {"HyperParameterTuningJobArn": record["arn"]}


OPERATIONS = {
    "CreateHyperParameterTuningJob": create_tuning_job,
    "DescribeHyperParameterTuningJob": lambda engine, p: describe_tuning_job(
        engine.resources, engine.store, p
    ),
    "StopHyperParameterTuningJob": lambda engine, p: stop_tuning_job(engine.resources, p),
    "ListHyperParameterTuningJobs": lambda engine, p: {
        "HyperParameterTuningJobSummaries": [tuning_job_summary(r) for r in list_resources(engine, KIND, p)]
    },
    "ListTrainingJobsForHyperParameterTuningJob": lambda engine, p: list_training_jobs_for_tuning_job(
        engine.resources, engine.store, p
    ),
}
