"""A tuning job's run on Ray Tune, in the job service.

Each trial is a Tune function trial that launches a real training job through the ``Submitter`` the
service injects, then reports the job's objective metric to Tune step by step as the algorithm emits
it, so Tune's schedulers (ASHA for Hyperband, median stopping) can stop poor trials early; a trial
stopped by Tune stops its training job. Random and Grid use Tune's own generators, Bayesian Optuna's
TPE. After a job service restart the run continues with the trials still to run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Protocol

from raymaker.cluster.definition import load_instance_types
from raymaker.engine import states
from raymaker.engine.failures import failure_reason
from raymaker.engine.job_metrics import ensure_collector
from raymaker.engine.resource_states import TuningJobStatus as TS
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore
from raymaker.engine.tuning_jobs import KIND, parent_results, trials
from raymaker.engine.tuning_spec import TuningJobSpec, trial_request, validate_tuning_job
from raymaker.io.storage import S3Settings

POLL_S = 0.1


class Submitter(Protocol):
    """How the service creates and stops trials' training jobs (``training_jobs.TrainingJobSubmitter``)."""

    def submit(self, request: dict[str, Any], *, tuning_job_arn: str, caller: str) -> None: ...

    def stop(self, name: str, *, caller: str) -> None: ...


@dataclass(frozen=True)
class TrialClient:
    """What a Tune trial asks of the job service. Trials may run on any node of the cluster, and only
    the service opens the job database, so they go through its actor (``start_trial``,
    ``trial_progress``, ``stop_trial``)."""

    service: Any  # the job service's actor handle
    settings: S3Settings  # the tuning job's storage settings, for its training jobs

    def start(self, spec: TuningJobSpec, arn: str, hyperparameters: dict[str, str]) -> str:
        import ray

        return ray.get(self.service.start_trial.remote(spec, arn, hyperparameters, self.settings))

    def progress(self, job: str, metric: str, seen: int) -> dict[str, Any]:
        import ray

        return ray.get(self.service.trial_progress.remote(job, metric, seen))

    def stop(self, job: str, tuning_job: str) -> None:
        import ray

        ray.get(self.service.stop_trial.remote(job, tuning_job))


def caller_of(tuning_job: str) -> str:
    """Who the audit trail says made a trial's calls."""
    return f"hyper-parameter-tuning-job/{tuning_job}"


def start_trial(
    res: ResourceStore, submitter: Submitter, spec: TuningJobSpec, arn: str, hyperparameters: dict[str, str]
) -> str:
    """In the service: number the trial in launch order (whatever Tune's searcher calls it), build its
    CreateTrainingJob request and submit it; returns the training job's name."""
    index = res.next_number(KIND, spec.name, "trials_started")
    request = trial_request(spec, index, hyperparameters)
    submitter.submit(request, tuning_job_arn=arn, caller=caller_of(spec.name))
    return request["TrainingJobName"]


def trial_progress(store: JobStore, job: str, metric: str, seen: int) -> dict[str, Any]:
    """In the service: the objective values training job ``job`` emitted after the first ``seen``, and
    where the job is."""
    record = store.get_training_job(job)
    values = [m["value"] for m in store.metric_history(job, metric)]
    return {
        "values": values[seen:],
        "secondary_status": record["secondary_status"],
        "status": record["status"],
        "failure_reason": record.get("failure_reason"),
        "final_metrics": record.get("final_metrics") or [],
    }


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


def run_tuning_job(res: ResourceStore, name: str, client: TrialClient) -> str:
    """Run (or, after a job service restart, continue) tuning job ``name`` to its end; returns its
    status. Trials create, watch and stop their training jobs through ``client``."""
    from ray import tune

    record = res.get(KIND, name)
    spec = validate_tuning_job(record["request"], instance_types=load_instance_types())
    arn = record["arn"]
    store = res.store
    ensure_collector(store)  # its progress gauges (engine.job_metrics)
    started = len(trials(store, arn))
    remaining = spec.max_jobs - started
    if started and spec.strategy == "Grid":
        return _end(
            res,
            name,
            arn,
            TS.FAILED,
            "the job service restarted while the Grid search ran, and a "
            "Grid search cannot continue part-way: create the tuning job again",
        )
    if started and remaining <= 0:
        return _finish(res, name, arn, errors=None, total=None, tune_errors=())
    mode = "max" if spec.maximize else "min"
    search_alg = None
    scheduler = None
    if spec.strategy == "Bayesian":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        points, rewards = parent_results(res, store, spec)
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
        _run_trial(config, spec, arn, client)

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
            num_samples=1 if spec.strategy == "Grid" else remaining,
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
        shutil.rmtree(storage, ignore_errors=True)  # Tune's own files: the records hold the results
    except Exception as e:  # noqa: BLE001 - the reason goes to the record
        return _end(res, name, arn, TS.FAILED, failure_reason(e, prefix="raymaker internal error: "))
    return _finish(res, name, arn, errors=results.num_errors, total=len(results), tune_errors=results.errors)


def _finish(
    res: ResourceStore, name: str, arn: str, *, errors: int | None, total: int | None, tune_errors: Any
) -> str:
    """End the tuning job once its trials' training jobs have ended: Stopped if asked, Failed if every
    trial failed (with their reasons), else Completed."""
    # Trials stopped early (by a scheduler or a stop) end their training jobs asynchronously: the
    # tuning job ends only when they have.
    store = res.store
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
        not states.is_terminal(t["secondary_status"]) for t in trials(store, arn)
    ):
        time.sleep(POLL_S)
    done = trials(store, arn)
    if errors is None:  # resumed with nothing left to run: judge by the records
        total, errors = len(done), sum(t["status"] == "Failed" for t in done)
    if res.get(KIND, name)["status"] == TS.STOPPING:
        return _end(res, name, arn, TS.STOPPED, None)
    if total and errors == total:
        reasons = {t.get("failure_reason") for t in done if t.get("failure_reason")}
        if not reasons:  # no training job started: the trials' own errors say why
            reasons = {failure_reason(e) for e in tune_errors}
        reason = ("Every training job failed: " + "; ".join(sorted(r for r in reasons if r)))[:1024]
        return _end(res, name, arn, TS.FAILED, reason)
    return _end(res, name, arn, TS.COMPLETED, None)


def _end(res: ResourceStore, name: str, arn: str, status: str, reason: str | None) -> str:
    if res.get(KIND, name)["status"] == TS.STOPPING and status == TS.COMPLETED:
        status = TS.STOPPED
    res.update(KIND, name, status=status, failure_reason=reason, end_time=time.time())
    return status


def _run_trial(config: dict[str, Any], spec: TuningJobSpec, arn: str, client: TrialClient) -> None:
    """One Tune trial: start the training job, report its objective as it is emitted, stop it if Tune
    stops the trial."""
    from ray import tune

    job = client.start(spec, arn, _wire(spec, config))
    seen = 0
    try:
        while True:
            progress = client.progress(job, spec.objective_metric, seen)
            for value in progress["values"]:
                seen += 1
                tune.report({"objective": value, "iteration": seen, "training_job": job})
            if states.is_terminal(progress["secondary_status"]):
                break
            time.sleep(POLL_S)
        if progress["status"] != "Completed":
            raise RuntimeError(f"training job {job} {progress['status']}: {progress['failure_reason']}")
        if seen == 0:
            final = {m["MetricName"]: m["Value"] for m in progress["final_metrics"]}
            if spec.objective_metric not in final:
                raise RuntimeError(f"training job {job} emitted no {spec.objective_metric}")
            tune.report({"objective": final[spec.objective_metric], "iteration": 1, "training_job": job})
    finally:
        progress = client.progress(job, spec.objective_metric, seen)
        if not states.is_terminal(progress["secondary_status"]):  # Tune stopped the trial early
            client.stop(job, spec.name)
