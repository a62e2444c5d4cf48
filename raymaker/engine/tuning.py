"""Hyperparameter tuning jobs: records, the Describe / List shapes, and the run on Ray Tune.

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
import shutil
import tempfile
import time
from typing import Any

from raymaker.engine import states
from raymaker.protocol.errors import ValidationError
from raymaker.engine.hosting import _dt
from raymaker.engine.instance_types import load_instance_types
from raymaker.engine.resource_states import TuningJobStatus as TS
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore
from raymaker.engine.tuning_spec import TuningJobSpec, trial_request, validate_tuning_job
from raymaker.engine.validation import validate_request
from raymaker.io.channels import Channel, list_objects
from raymaker.io.storage import S3Settings

KIND = "hyper-parameter-tuning-job"  # also the ARN resource type, as SageMaker names it
POLL_S = 0.1


def create_tuning_job(res: ResourceStore, params: dict[str, Any], settings: S3Settings) -> dict[str, Any]:
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
    record = res.create(KIND, spec.name, params, status=TS.IN_PROGRESS)
    return {"HyperParameterTuningJobArn": record["arn"]}


def stop_tuning_job(res: ResourceStore, params: dict[str, Any]) -> dict[str, Any]:
    validate_request("StopHyperParameterTuningJob", params)
    name = params["HyperParameterTuningJobName"]
    if res.get(KIND, name)["status"] != TS.STOPPING:
        res.update(KIND, name, status=TS.STOPPING)
    return {}


def _trials(store: JobStore, arn: str) -> list[dict[str, Any]]:
    rows = store._conn().execute(
        "SELECT * FROM training_jobs WHERE tuning_job_arn = ? ORDER BY creation_time, name", (arn,)
    )
    from raymaker.engine.store import _decode

    return [_decode(r) for r in rows]


def trial_summary(record: dict[str, Any], metric: str, objective_type: str) -> dict[str, Any]:
    """HyperParameterTrainingJobSummary for a trial's training job record."""
    hp = record["request"].get("HyperParameters") or {}
    names = record.get("_tuned_names")
    tuned = {k: v for k, v in hp.items() if names is None or k in names}
    out: dict[str, Any] = {
        "TrainingJobName": record["name"],
        "TrainingJobArn": record["arn"],
        "CreationTime": _dt(record["creation_time"]),
        "TrainingJobStatus": record["status"],
        "TunedHyperParameters": tuned,
    }
    if record.get("training_start_time"):
        out["TrainingStartTime"] = _dt(record["training_start_time"])
    if record.get("training_end_time"):
        out["TrainingEndTime"] = _dt(record["training_end_time"])
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
    for trial in _trials(store, record["arn"]):
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
    validate_request("DescribeHyperParameterTuningJob", params)
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
        "CreationTime": _dt(record["creation_time"]),
        "LastModifiedTime": _dt(record["last_modified_time"]),
        "TrainingJobStatusCounters": counts,
        "ObjectiveStatusCounters": objective_counts,
    }
    for key in ("TrainingJobDefinition", "WarmStartConfig"):
        if key in request:
            out[key] = request[key]
    if record.get("end_time"):
        out["HyperParameterTuningEndTime"] = _dt(record["end_time"])
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
    validate_request("ListTrainingJobsForHyperParameterTuningJob", params)
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
        "CreationTime": _dt(record["creation_time"]),
        "LastModifiedTime": _dt(record["last_modified_time"]),
        "TrainingJobStatusCounters": {},
        "ObjectiveStatusCounters": {},
        "ResourceLimits": limits,
        **({"HyperParameterTuningEndTime": _dt(record["end_time"])} if record.get("end_time") else {}),
    }


# --- the run (in the job service) ----------------------------------------------------------------


def _space(spec: TuningJobSpec) -> dict[str, Any]:
    """Ray Tune's search space for the ranges. ReverseLogarithmic samples 1 - x log-uniformly."""
    from ray import tune

    space: dict[str, Any] = {}
    for r in spec.ranges:
        if r.kind == "categorical":
            space[r.name] = (
                tune.grid_search(list(r.values)) if spec.strategy == "Grid" else tune.choice(list(r.values))
            )
        elif r.kind == "integer":
            lo, hi = int(r.min_value), int(r.max_value)
            space[r.name] = (
                tune.lograndint(lo, hi + 1) if r.scaling == "Logarithmic" else tune.randint(lo, hi + 1)
            )
        elif r.scaling == "Logarithmic":
            space[r.name] = tune.loguniform(r.min_value, r.max_value)
        elif r.scaling == "ReverseLogarithmic":
            space[r.name] = tune.loguniform(1 - r.max_value, 1 - r.min_value)
        else:
            space[r.name] = tune.uniform(r.min_value, r.max_value)
    return space


def _wire(spec: TuningJobSpec, config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for r in spec.ranges:
        value = config[r.name]
        if r.kind == "continuous" and r.scaling == "ReverseLogarithmic":
            value = 1 - value
        out[r.name] = r.to_wire(value)
    return out


def run_tuning_job(res: ResourceStore, store_path: str, name: str, settings: S3Settings | None) -> str:
    from ray import tune

    record = res.get(KIND, name)
    spec = validate_tuning_job(record["request"], instance_types=load_instance_types())
    arn = record["arn"]
    mode = "max" if spec.maximize else "min"
    search_alg = None
    scheduler = None
    if spec.strategy == "Bayesian":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        points, rewards = parent_results(res, JobStore(store_path), spec)
        import optuna as optuna_lib

        # TPE's default is 10 random trials before the model is used: at a budget of 20 that is half
        # the budget. A quarter of it (at least 2) leaves the model most of the trials.
        sampler = optuna_lib.samplers.TPESampler(
            n_startup_trials=max(2, spec.max_jobs // 4), seed=spec.random_seed
        )
        optuna = OptunaSearch(
            sampler=sampler,
            points_to_evaluate=points or None,
            evaluated_rewards=rewards or None,  # warm start: learned from, not run again
        )
        search_alg = ConcurrencyLimiter(optuna, max_concurrent=spec.max_parallel)
    elif spec.strategy in ("Random", "Hyperband"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # max_concurrent here: Tune ignores max_concurrent_trials when given a search algorithm.
        search_alg = BasicVariantGenerator(random_state=spec.random_seed, max_concurrent=spec.max_parallel)
    if spec.strategy == "Hyperband":
        from ray.tune.schedulers import ASHAScheduler

        # Asynchronous successive halving (Hyperband's asynchronous form, as SageMaker runs it): a
        # trial below the top 1/3 at a rung stops there, without waiting for a whole bracket, and
        # without Tune's pause/resume (a training job cannot be paused).
        scheduler = ASHAScheduler(
            time_attr="iteration",
            max_t=spec.hyperband_max_resource or 100,
            grace_period=spec.hyperband_min_resource or 1,
            reduction_factor=3,
            stop_last_trials=False,  # a trial at MaxResource finishes its job (uploads its model)
        )
    elif spec.early_stopping == "Auto":
        from ray.tune.schedulers import MedianStoppingRule

        # SageMaker's automatic early stopping: stop a trial whose objective is worse than the median
        # of earlier trials' running averages at the same iteration.
        scheduler = MedianStoppingRule(time_attr="iteration", grace_period=1, min_samples_required=3)

    def trial(config: dict[str, Any]) -> None:
        _run_trial(config, spec, arn, store_path, settings)

    class _StopAll(tune.Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return res.get(KIND, name)["status"] == TS.STOPPING

    storage = tempfile.mkdtemp(prefix=f"raymaker-tune-{name}-")
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 0.01}),
        param_space=_space(spec),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode=mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=1 if spec.strategy == "Grid" else spec.max_jobs,
            max_concurrent_trials=spec.max_parallel,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            stop=_StopAll(),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        results = tuner.fit()
        errors = results.num_errors
        total = len(results)
        shutil.rmtree(storage, ignore_errors=True)  # Tune's own files: the records hold the results
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        res.update(
            KIND,
            name,
            status=TS.FAILED,
            failure_reason=f"raymaker internal error: {e}"[:1024],
            end_time=time.time(),
        )
        return TS.FAILED
    # Trials stopped early (by a scheduler or a stop) end their training jobs asynchronously: the
    # tuning job ends only when they have.
    deadline = time.monotonic() + 120
    store = JobStore(store_path)
    while time.monotonic() < deadline and any(
        not states.is_terminal(t["secondary_status"]) for t in _trials(store, arn)
    ):
        time.sleep(POLL_S)
    stopping = res.get(KIND, name)["status"] == TS.STOPPING
    if stopping:
        status, reason = TS.STOPPED, None
    elif total and errors == total:
        status = TS.FAILED
        reasons = {
            t.get("failure_reason") for t in _trials(JobStore(store_path), arn) if t.get("failure_reason")
        }
        if not reasons:  # no training job started: the trials' own errors say why
            reasons = {str(e).strip().splitlines()[-1] for e in results.errors if str(e).strip()}
        reason = ("Every training job failed: " + "; ".join(sorted(r for r in reasons if r)))[:1024]
    else:
        status, reason = TS.COMPLETED, None
    res.update(KIND, name, status=status, failure_reason=reason, end_time=time.time())
    return status


def _run_trial(
    config: dict[str, Any], spec: TuningJobSpec, arn: str, store_path: str, settings: S3Settings | None
) -> None:
    """One Tune trial: start the training job, report its objective as it is emitted, stop it if Tune
    stops the trial."""
    from ray import tune

    from raymaker.engine.api import SageMakerAPI

    store = JobStore(store_path)
    api = SageMakerAPI(store, settings)
    # Trial numbers in launch order, whatever Tune's searcher calls its trials.
    index = ResourceStore(store).next_number(KIND, spec.name, "trials_started")
    hyperparameters = _wire(spec, config)
    request = trial_request(spec, index, hyperparameters)
    job = request["TrainingJobName"]
    api.call("CreateTrainingJob", request, caller=f"hyper-parameter-tuning-job/{spec.name}")
    store.update_training_job(job, tuning_job_arn=arn)
    seen = 0
    try:
        while True:
            record = store.get_training_job(job)
            values = [m["value"] for m in store.metric_history(job, spec.objective_metric)]
            for value in values[seen:]:
                seen += 1
                tune.report({"objective": value, "iteration": seen, "training_job": job})
            if states.is_terminal(record["secondary_status"]):
                break
            time.sleep(POLL_S)
        if record["status"] != "Completed":
            raise RuntimeError(f"training job {job} {record['status']}: {record.get('failure_reason')}")
        if seen == 0:
            final = {m["MetricName"]: m["Value"] for m in record.get("final_metrics") or []}
            if spec.objective_metric not in final:
                raise RuntimeError(f"training job {job} emitted no {spec.objective_metric}")
            tune.report({"objective": final[spec.objective_metric], "iteration": 1, "training_job": job})
    finally:
        record = store.get_training_job(job)
        if not states.is_terminal(record["secondary_status"]):  # Tune stopped the trial early
            try:
                api.call(
                    "StopTrainingJob",
                    {"TrainingJobName": job},
                    caller=f"hyper-parameter-tuning-job/{spec.name}",
                )
            except ValidationError:
                pass
