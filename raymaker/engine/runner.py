"""Running training jobs: one long-lived job service per job database, one ``JobRun`` per job.

The service is a detached Ray actor pinned to the node that holds the job database, so jobs keep
running (and their records keep moving) after the submitting script exits, as SageMaker jobs do, and
no process is spawned per job. A ``JobRun`` executes the job's state machine; ``states`` says which
moves are legal and ``policies`` decide what a stop, the runtime limit or a failure means.

Where the job's code runs:
* one instance: an ``InstanceActor`` (SageMaker's ML instance). When the job asks for a warm pool
  (``KeepAlivePeriodInSeconds``), the actor stays up afterwards, with algorithms imported, and the next
  job on the same instance type starts in it at once. A lost instance is replaced and the job resumes
  from its checkpoint directory.
* several instances: Ray Train (XGBoostTrainer / TorchTrainer / DataParallelTrainer) with a stable run
  name, FailureConfig restarts from the latest checkpoint, and Ray Data shards for Pipe channels.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import ray

from raymaker.engine import metering, states
from raymaker.engine.instance_types import worker_resources
from raymaker.engine.policies import (
    FailureDecision,
    FailureKind,
    FailurePolicy,
    RuntimeDecision,
    RuntimePolicy,
)
from raymaker.engine.store import JobStore
from raymaker.engine.validation import TrainingJobSpec
from raymaker.engine.worker import JobEvents
from raymaker.io.storage import S3Settings

S = states.SecondaryStatus
_POLL_S = 0.5  # how often a running job checks for a stop or the runtime limit


def compute_threads(spec: TrainingJobSpec, total_cpus: float) -> dict[str, str]:
    """Environment giving a worker's math libraries the instance's cores. Ray sets OMP_NUM_THREADS to a
    worker's logical CPU reservation, which here is kept small on purpose (to leave CPUs for Ray Data),
    and XGBoost then runs single-threaded whatever ``nthread`` says."""
    cpus = spec.instance_type.cpus or total_cpus / spec.instance_count
    return {"OMP_NUM_THREADS": str(max(1, int(cpus)))}


def model_uri(spec: TrainingJobSpec) -> str:
    return f"{spec.output_path.rstrip('/')}/{spec.name}/output/model.tar.gz"


def job_config(spec: TrainingJobSpec) -> dict[str, Any]:
    """The picklable description of a job that the code running it receives."""
    request = spec.request
    hyperparameters = dict(request.get("HyperParameters") or {})
    return {
        "name": spec.name,
        "algorithm": spec.algorithm,
        "hyperparameters": hyperparameters,
        "channels": list(request.get("InputDataConfig") or []),
        "input_mode": spec.input_mode,
        "model_uri": model_uri(spec),
        "seed": int(hyperparameters.get("seed", 0) or 0),
    }


# --------------------------------------------------------------------------------------- instances


def _preload(modules: tuple[str, ...]) -> None:
    import importlib
    import sys

    for name in modules:
        try:
            if name == "xgboost" and "xgboost" not in sys.modules:
                _import_xgboost_without_sklearn()
            importlib.import_module(name)
        except ImportError:  # the job itself will report it
            pass


def _import_xgboost_without_sklearn() -> None:
    """Import xgboost without its scikit-learn wrappers: 80% of xgboost's 1 s import is scikit-learn,
    and the built-in algorithm uses only xgboost's core API. scikit-learn stays importable afterwards."""
    import sys

    blocked = {k: sys.modules.get(k) for k in ("sklearn",) if k not in sys.modules}
    sys.modules.update(dict.fromkeys(blocked))  # a None entry makes "import sklearn" raise ImportError
    try:
        import xgboost  # noqa: F401
    finally:
        for k in blocked:
            sys.modules.pop(k, None)


_LIBRARIES = {"xgboost": ("xgboost",), "linear-learner": ("torch",)}


@ray.remote
class InstanceActor:
    """One ML instance: runs single-instance jobs, one at a time, and may stay warm between them."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = ()) -> None:
        # Set before the math libraries load (their thread pools read it once). Passing it as a
        # runtime_env instead would make Ray start a new worker process rather than use a prestarted one.
        os.environ.update(env)
        import raymaker.engine.worker  # noqa: F401
        import raymaker.io.recordio  # noqa: F401

        # The algorithm's libraries (xgboost takes a second to import) load in the background while the
        # first job fetches and decodes its data; a warm instance has them already.
        threading.Thread(target=_preload, args=(preload,), daemon=True, name="raymaker-preload").start()

    def ping(self) -> int:
        return os.getpid()

    def run_job(
        self,
        job: dict[str, Any],
        settings: S3Settings,
        events: JobEvents,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
    ) -> dict:
        from raymaker.engine.worker import InstanceContext, run_training
        from raymaker.io.channels import Channel

        os.makedirs(checkpoint_dir, exist_ok=True)
        ctx = InstanceContext(events, int(job.get("seed", 0)), checkpoint_dir, checkpoint_uri, settings)
        channels = {c["ChannelName"]: c for c in job["channels"]}

        def shard_for(name: str) -> Any:
            from raymaker.io.modes.pipe import pipe_dataset

            channel = Channel.from_request(channels[name], default_input_mode=job["input_mode"])
            return pipe_dataset(channel, settings=settings).iterator()

        return run_training(
            job, ctx, settings, shard_for=shard_for, resumed=ctx.load_checkpoint() is not None
        )


@dataclass
class _Idle:
    actor: Any
    expires: float
    job: str


@dataclass
class WarmPool:
    """Idle instances kept for ``KeepAlivePeriodInSeconds`` after their job, keyed by instance shape."""

    store: JobStore
    idle: dict[tuple, list[_Idle]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, key: tuple, job: str) -> Any | None:
        self.reap()
        with self.lock:
            entries = self.idle.get(key) or []
            entry = entries.pop() if entries else None
        if entry is None:
            return None
        self.store.update_training_job(entry.job, warm_pool_status={"Status": "Reused", "ReusedByJob": job})
        return entry.actor

    def release(self, key: tuple, actor: Any, keep_alive_s: int, job: str) -> None:
        with self.lock:
            self.idle.setdefault(key, []).append(_Idle(actor, time.time() + keep_alive_s, job))
        self.store.update_training_job(
            job,
            warm_pool_status={"Status": "Available", "ResourceRetainedBillableTimeInSeconds": keep_alive_s},
        )

    def make_room(self, cpus: float) -> None:
        """Give idle instances' CPUs back until ``cpus`` are free: a warm pool must not starve new work."""
        while ray.available_resources().get("CPU", 0.0) < cpus - 1e-9:
            with self.lock:
                entries = [(k, e) for k, v in self.idle.items() for e in v]
                if not entries:
                    return
                key, entry = min(entries, key=lambda ke: ke[1].expires)
                self.idle[key].remove(entry)
            ray.kill(entry.actor)
            self.store.update_training_job(entry.job, warm_pool_status={"Status": "Terminated"})
            time.sleep(0.2)  # let the raylet see the freed resources

    def reap(self) -> None:
        now = time.time()
        with self.lock:
            expired = [e for entries in self.idle.values() for e in entries if e.expires <= now]
            for key in list(self.idle):
                self.idle[key] = [e for e in self.idle[key] if e.expires > now]
        for e in expired:
            ray.kill(e.actor)
            self.store.update_training_job(e.job, warm_pool_status={"Status": "Terminated"})


# ------------------------------------------------------------------------------------ Ray Train path


@ray.remote(num_cpus=0)
def _fit(
    spec: TrainingJobSpec, settings: S3Settings, events: JobEvents, storage_path: str
) -> dict[str, float]:
    """Build the Ray trainer for the job's algorithm and run it; returns rank 0's final metrics."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from raymaker.engine.worker import train_loop_per_worker
    from raymaker.io.modes.pipe import ChannelDataConfig

    algo = spec.algorithm_class
    pipe = {c.name: c for c in spec.channels if c.input_mode == "Pipe"}
    data_config = ChannelDataConfig(pipe, settings) if pipe else None
    total_cpus = float(ray.cluster_resources().get("CPU", 1))
    kwargs: dict[str, Any] = dict(
        train_loop_config={"job": job_config(spec), "events": events, "settings": settings},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.instance_count,
            resources_per_worker=worker_resources(spec.instance_type, spec.instance_count, total_cpus),
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,  # a stable name: a rerun of the job resumes from its checkpoints
            **_train_storage(storage_path, settings),
            # Worker losses restart the worker group from the latest checkpoint, as often as allowed.
            failure_config=ray.train.FailureConfig(
                max_failures=FailurePolicy.from_request(spec.request).retries_allowed(
                    FailureKind.INFRASTRUCTURE
                )
            ),
        ),
    )
    if data_config is not None:
        kwargs.update(datasets=data_config.datasets(), dataset_config=data_config)
    if algo.trainer == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as trainer_cls
    elif algo.trainer == "torch":
        from ray.train.torch import TorchTrainer as trainer_cls
    else:
        trainer_cls = DataParallelTrainer
    result = _abortable(trainer_cls, events)(train_loop_per_worker, **kwargs).fit()
    return dict(result.return_value or {})


def _train_storage(uri: str, settings: S3Settings) -> dict[str, Any]:
    """RunConfig storage arguments for a checkpoint location. S3 goes through the resolved settings'
    pyarrow filesystem, which is pickled to every Train process, so any S3 endpoint works there too."""
    if uri.startswith("s3://"):
        return {"storage_path": uri[len("s3://") :], "storage_filesystem": settings.arrow_filesystem()}
    return {"storage_path": uri[len("file://") :] if uri.startswith("file://") else uri}


def _abortable(trainer_cls: type, events: JobEvents) -> type:
    """The trainer class, handing its Train controller to the job service so that a stop can abort the
    run gracefully: the controller then removes its placement group. (Killing the run instead leaves
    the placement group's CPUs reserved when Ray runs without its dashboard, which Train's own cleaner
    needs.)"""

    class Abortable(trainer_cls):
        def _register_sigint_handler(self, controller: Any) -> None:
            events.controller(controller)
            super()._register_sigint_handler(controller)

    return Abortable


# ------------------------------------------------------------------------------------------ one job


class JobRun:
    def __init__(
        self, spec: TrainingJobSpec, settings: S3Settings, store: JobStore, service: Any, pool: WarmPool
    ):
        self.spec, self.settings, self.store, self.pool = spec, settings, store, pool
        self.name = spec.name
        self.events = JobEvents(service, spec.name)
        self.controller: Any = None  # Ray Train's controller (multi-instance), once known
        self.instance: Any = None  # the instance actor (single instance)
        self.lock = threading.Lock()

    def move(self, new: states.SecondaryStatus, message: str | None = None, **fields: Any) -> bool:
        """Transition if the state machine allows it from where the job is now (a stop may have won)."""
        with self.lock:
            current = self.store.get_training_job(self.name)["secondary_status"]
            if current == new or not states.can_transition(states.SecondaryStatus(current), new):
                return False
            try:
                self.store.transition_training_job(self.name, new, message, **fields)
            except states.IllegalTransition:  # the API moved the job in between (a stop)
                return False
            return True

    def run(self) -> str:
        spec, store = self.spec, self.store
        start = time.time()
        store.update_training_job(self.name, training_start_time=start)
        self.move(S.DOWNLOADING)
        if spec.instance_count == 1:
            decision, outcome = self._run_on_instance(start)
        else:
            decision, outcome = self._watch(self._launch_train(), start)
        end = time.time()
        done = dict(
            training_end_time=end, final_metrics=store.latest_metrics(self.name), **self._billing(start, end)
        )
        if decision == RuntimeDecision.MAX_RUNTIME:
            self.move(S.STOPPING, "Stopping the job: MaxRuntimeInSeconds reached")
            self.move(S.MAX_RUNTIME_EXCEEDED, **done)
        elif decision == RuntimeDecision.STOP:
            self.move(S.STOPPED, **done)
        elif isinstance(outcome, BaseException):
            reason = _failure_reason(outcome)
            store.append_logs(
                self.name, [f"Training failed: {reason}", "".join(traceback.format_exception(outcome))]
            )
            self.move(S.FAILED, reason, failure_reason=reason, **done)
        else:
            self.move(S.TRAINING)
            self.move(S.UPLOADING)
            self.move(S.COMPLETED, model_artifacts=model_uri(spec), **done)
        if store.get_training_job(self.name)["secondary_status"] == S.STOPPING:
            # A stop arrived as the code ended (too late to interrupt it): the stop still wins.
            self.move(S.STOPPED, **done)
        return str(store.get_training_job(self.name)["status"])

    # --- single instance ------------------------------------------------------------------------

    def _pool_key(self) -> tuple:
        t = self.spec.instance_type
        return (t.name, t.cpus, t.gpus)

    def _new_instance(self) -> Any:
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        res = worker_resources(self.spec.instance_type, 1, total_cpus)
        self.pool.make_room(res.get("CPU", 1))
        return InstanceActor.options(num_cpus=res.get("CPU", 1), num_gpus=res.get("GPU", 0)).remote(
            compute_threads(self.spec, total_cpus), _LIBRARIES.get(self.spec.algorithm, ())
        )

    def _run_on_instance(self, start: float) -> tuple[RuntimeDecision, Any]:
        spec = self.spec
        policy = FailurePolicy.from_request(spec.request)
        # A local checkpoint URI is the directory itself; an S3 one is an archive beside a local directory.
        uri = spec.checkpoint_uri or ""
        if uri and "://" not in uri or uri.startswith("file://"):
            checkpoint_dir = uri.removeprefix("file://")
        else:
            checkpoint_dir = os.path.join(str(self.store.path.parent), "checkpoints", spec.name)
        attempt = 1
        self.instance = self.pool.acquire(self._pool_key(), self.name) or self._new_instance()
        while True:
            ref = self.instance.run_job.remote(
                job_config(spec), self.settings, self.events, checkpoint_dir, spec.checkpoint_uri
            )
            decision, outcome = self._watch(ref, start)
            lost = isinstance(outcome, ray.exceptions.RayActorError)
            if decision != RuntimeDecision.CONTINUE or not lost:
                break
            # The instance died (not the algorithm): replace it and resume from the checkpoint.
            has_checkpoint = bool(spec.checkpoint_uri) or os.path.isdir(
                os.path.join(checkpoint_dir, "latest")
            )
            if policy.decide(attempt, has_checkpoint=has_checkpoint) == FailureDecision.FAIL:
                break
            attempt += 1
            self.store.append_logs(
                self.name, [f"The instance was lost ({outcome}); starting attempt {attempt}"]
            )
            self.instance = self._new_instance()
        keep = decision == RuntimeDecision.CONTINUE and not isinstance(outcome, BaseException)
        if keep and spec.keep_alive_seconds > 0:
            self.pool.release(self._pool_key(), self.instance, spec.keep_alive_seconds, self.name)
        else:
            ray.kill(self.instance)
        return decision, outcome

    # --- several instances: Ray Train -----------------------------------------------------------

    def _launch_train(self) -> Any:
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        per_worker = worker_resources(self.spec.instance_type, self.spec.instance_count, total_cpus)
        self.pool.make_room(per_worker.get("CPU", 1) * self.spec.instance_count)
        storage_path = self.spec.checkpoint_uri or os.path.join(str(self.store.path.parent), "checkpoints")
        return _fit.remote(self.spec, self.settings, self.events, storage_path)

    # --- watching -------------------------------------------------------------------------------

    def _watch(self, ref: Any, start: float) -> tuple[RuntimeDecision, Any]:
        """Wait for the job's code to finish, a stop request, or the runtime limit. Returns the
        decision and the result (or the exception it raised)."""
        policy = RuntimePolicy(self.spec.max_runtime_seconds)
        while True:
            ready, _ = ray.wait([ref], timeout=_POLL_S)
            if ready:
                try:
                    return RuntimeDecision.CONTINUE, ray.get(ref)
                except Exception as e:  # noqa: BLE001 - becomes FailureReason (or a retry)
                    return RuntimeDecision.CONTINUE, e
            record = self.store.get_training_job(self.name)
            decision = policy.decide(
                time.time() - start, stop_requested=record["secondary_status"] == S.STOPPING
            )
            if decision != RuntimeDecision.CONTINUE:
                self._abort(ref)
                return decision, None

    def _abort(self, ref: Any) -> None:
        if self.instance is not None:
            ray.kill(self.instance)  # nothing outlives the instance: no placement group, no workers
            return
        if self.controller is not None:
            try:  # graceful: workers and the placement group are released
                ray.get(self.controller.abort.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - abort ends the controller actor, which raises here
                pass
        ray.cancel(ref, force=True, recursive=True)

    def _billing(self, start: float, end: float) -> dict[str, Any]:
        seconds = metering.running_seconds(start, end)
        billable = metering.billable_seconds(self.spec.instance_count, start, end)
        return {
            "training_seconds": seconds,
            "billable_seconds": billable,
            "cost": metering.cost(billable, self.spec.instance_type.price_per_hour),
        }


def _failure_reason(exc: BaseException) -> str:
    """The most useful line of a failure: the algorithm's own error, not Ray's wrapping of it."""
    text = str(exc)
    for cause in (getattr(exc, "cause", None), exc.__cause__):
        if cause is not None:
            text = f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:1024]


# ------------------------------------------------------------------------------------- the service


@ray.remote(num_cpus=0, concurrency_groups={"events": 1, "jobs": 64, "hosting": 1})
class JobService:
    """Runs every job of one job database; job code reports to it through ``JobEvents``.

    Jobs each hold a thread of the "jobs" group for their lifetime; the jobs' events are handled one at
    a time on the "events" thread, so each sender's log lines and metrics are stored in order."""

    def __init__(self, store_path: str):
        self.store = JobStore(store_path)
        self.pool = WarmPool(self.store)
        from raymaker.engine.transform import TransformPool

        self.transform_pool = TransformPool()
        self.runs: dict[str, JobRun] = {}
        self.me = ray.get_runtime_context().current_actor
        self.id = ray.get_runtime_context().get_actor_id()
        self._fail_orphans()
        threading.Thread(target=self._reap_forever, daemon=True, name="warm-pool-reaper").start()

    def _fail_orphans(self) -> None:
        """Jobs still InProgress when a job service starts lost theirs (the Ray cluster they ran on shut
        down, e.g. a local-mode script exited while its job ran): end their records instead of leaving
        them InProgress forever."""
        reason = "The job's Ray cluster stopped while the job ran (its job service is gone); run it again"
        for status in ("InProgress", "Stopping"):
            for record in self.store.list_training_jobs(status=status, max_results=10_000):
                runner = record.get("runner_id")
                if not runner or runner == self.id:  # not picked up yet, or ours
                    continue
                stopping = record["secondary_status"] == S.STOPPING
                try:
                    self.store.transition_training_job(
                        record["name"],
                        S.STOPPED if stopping else S.FAILED,
                        None if stopping else reason,
                        training_end_time=time.time(),
                        **({} if stopping else {"failure_reason": reason}),
                    )
                    self.store.append_logs(record["name"], [reason])
                except states.IllegalTransition:
                    pass

    def _reap_forever(self) -> None:
        while True:
            time.sleep(2.0)
            try:
                self.pool.reap()
                self.transform_pool.reap()
            except Exception:  # noqa: BLE001 - keep reaping; a failed kill is retried next time
                traceback.print_exc()

    def ping(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="jobs")
    def run_job(self, spec: TrainingJobSpec, settings: S3Settings) -> str:
        self.transform_pool.clear()  # idle transform actors give their CPUs to the training job
        run = self.runs[spec.name] = JobRun(spec, settings, self.store, self.me, self.pool)
        self.store.update_training_job(spec.name, runner_id=self.id)
        try:
            return run.run()
        except Exception as e:  # noqa: BLE001 - never leave a record InProgress
            reason = f"raymaker internal error: {_failure_reason(e)}"
            self.store.append_logs(spec.name, [reason, traceback.format_exc()])
            run.move(S.FAILED, reason, failure_reason=reason, training_end_time=time.time())
            return "Failed"
        finally:
            self.runs.pop(spec.name, None)

    @ray.method(concurrency_group="events")
    def report(self, job: str, metrics: list[tuple], lines: list[str]) -> None:
        """A batch of a job's metric values ``(name, value, step, timestamp)`` and log lines."""
        if metrics:
            self.store.add_metrics(job, metrics)
        if lines:
            self.store.append_logs(job, lines)

    @ray.method(concurrency_group="events")
    def set_controller(self, job: str, controller: Any) -> None:
        run = self.runs.get(job)
        if run is not None:
            run.controller = controller

    @ray.method(concurrency_group="events")
    def set_phase(self, job: str, phase: str, restarted: bool = False) -> None:
        run = self.runs.get(job)
        if run is None:
            return
        if restarted:
            record = self.store.get_training_job(job)
            self.store.update_training_job(job, restart_count=(record.get("restart_count") or 0) + 1)
            run.move(S.RESTARTING, "Restarting from the latest checkpoint after a failure")
            self.store.append_logs(job, ["Resuming from the latest checkpoint"])
        run.move(S(phase))


    @ray.method(concurrency_group="jobs")
    def run_transform(self, name: str, settings: S3Settings) -> str:
        from raymaker.engine.resources import ResourceStore
        from raymaker.engine.transform import run_transform_job

        res = ResourceStore(self.store)
        try:
            return run_transform_job(res, name, settings, self.transform_pool)
        except Exception as e:  # noqa: BLE001 - never leave a record InProgress
            traceback.print_exc()
            reason = f"raymaker internal error: {_failure_reason(e)}"
            res.update("transform-job", name, status="Failed", failure_reason=reason, end_time=time.time())
            return "Failed"

    @ray.method(concurrency_group="jobs")
    def run_tuning(self, name: str, settings: S3Settings) -> str:
        from raymaker.engine.resources import ResourceStore
        from raymaker.engine.tuning import KIND, run_tuning_job

        res = ResourceStore(self.store)
        try:
            return run_tuning_job(res, str(self.store.path), name, settings)
        except Exception as e:  # noqa: BLE001 - never leave a record InProgress
            traceback.print_exc()
            reason = f"raymaker internal error: {_failure_reason(e)}"
            res.update(KIND, name, status="Failed", failure_reason=reason, end_time=time.time())
            return "Failed"

    @ray.method(concurrency_group="hosting")
    def apply_endpoint(self, name: str, settings: S3Settings) -> str:
        """Deploy, update or delete endpoint ``name`` as its record asks. One at a time: each change
        rewrites the runtime's routing table from all the records."""
        from raymaker.engine.hosting import apply_endpoint
        from raymaker.engine.resources import ResourceStore

        try:
            return apply_endpoint(ResourceStore(self.store), name, settings)
        except Exception as e:  # noqa: BLE001 - never leave an endpoint Creating/Updating forever
            traceback.print_exc()
            res = ResourceStore(self.store)
            record = res.find("endpoint", name)
            if record is not None and record["status"] in ("Creating", "Updating"):
                reason = f"raymaker internal error: {_failure_reason(e)}"
                res.update("endpoint", name, status="Failed", failure_reason=reason)
            raise


def job_service(store_path: str) -> Any:
    """The job service of this job database: found by name, or started (detached, on this node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    digest = hashlib.sha1(os.path.realpath(store_path).encode()).hexdigest()[:12]
    name = f"raymaker-job-service-{digest}"
    node = ray.get_runtime_context().get_node_id()
    return JobService.options(
        name=name,
        namespace="raymaker",
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(store_path)


def start_runner(spec: TrainingJobSpec, settings: S3Settings, store_path: str) -> None:
    """Hand the job to the job service; it runs the job to its end whether or not anyone waits."""
    job_service(store_path).run_job.remote(spec, settings)
