"""The training job runner: one detached Ray actor per job that executes the job's state machine.

The runner only executes; ``states`` says which moves are legal and ``policies`` decide what a stop,
the runtime limit or a failure means. The actor is detached and pinned to the node that holds the job
database, so a job keeps running (and its record keeps moving) after the submitting script exits, as a
SageMaker job does. Ray Train runs inside a separate task (``_fit``): cancelling that task tears down
the Train controller and its workers, which is how a stop or the runtime limit ends a job.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import ray

from raymaker.engine import metering, states
from raymaker.engine.instance_types import worker_resources
from raymaker.engine.policies import FailureKind, FailurePolicy, RuntimeDecision, RuntimePolicy
from raymaker.engine.store import JobStore
from raymaker.engine.validation import TrainingJobSpec
from raymaker.io.storage import S3Settings

S = states.SecondaryStatus
_POLL_S = 0.2


def model_uri(spec: TrainingJobSpec) -> str:
    return f"{spec.output_path.rstrip('/')}/{spec.name}/output/model.tar.gz"


def job_config(spec: TrainingJobSpec) -> dict[str, Any]:
    """The picklable description of a job that each Train worker receives."""
    request = spec.request
    return {
        "name": spec.name,
        "algorithm": spec.algorithm,
        "hyperparameters": dict(request.get("HyperParameters") or {}),
        "channels": list(request.get("InputDataConfig") or []),
        "input_mode": spec.input_mode,
        "model_uri": model_uri(spec),
        "seed": int((request.get("HyperParameters") or {}).get("seed", 0) or 0),
    }


@ray.remote(num_cpus=0)
def _fit(spec: TrainingJobSpec, settings: S3Settings, runner: Any, storage_path: str) -> dict[str, float]:
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
        train_loop_config={"job": job_config(spec), "runner": runner, "settings": settings},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.instance_count,
            resources_per_worker=worker_resources(spec.instance_type, spec.instance_count, total_cpus),
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,  # a stable name: a rerun of the job resumes from its checkpoints
            storage_path=storage_path,
            # Worker losses restart the worker group from the latest checkpoint, as often as the policy allows.
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
    result = _abortable(trainer_cls, runner)(train_loop_per_worker, **kwargs).fit()
    return dict(result.return_value or {})


def _abortable(trainer_cls: type, runner: Any) -> type:
    """The trainer class, handing its Train controller to the runner so that a stop can abort the run
    gracefully: the controller then removes its placement group. (Killing the run instead leaves the
    placement group's CPUs reserved when Ray runs without its dashboard, which Train's own cleaner needs.)"""

    class Abortable(trainer_cls):
        def _register_sigint_handler(self, controller: Any) -> None:
            runner.set_controller.remote(controller)
            super()._register_sigint_handler(controller)

    return Abortable


@ray.remote(num_cpus=0, concurrency_groups={"events": 1})
class TrainingJobRunner:
    """Runs one training job; workers call ``report_metrics``/``append_logs``/``set_phase`` on it.

    ``run`` holds the default thread for the whole job; the workers' calls run one at a time on the
    "events" thread, so each caller's log lines and metrics are stored in the order sent."""

    def __init__(self, spec: TrainingJobSpec, settings: S3Settings, store_path: str):
        self.spec = spec
        self.settings = settings
        self.store = JobStore(store_path)
        self.name = spec.name
        self._controller: Any = None  # the Ray Train controller of the running fit, once known

    # --- called by the Train workers -------------------------------------------------------------

    @ray.method(concurrency_group="events")
    def report_metrics(self, metrics: dict[str, float], step: int | None, timestamp: float) -> None:
        self.store.add_metrics(self.name, [(k, v, step, timestamp) for k, v in metrics.items()])

    @ray.method(concurrency_group="events")
    def append_logs(self, lines: list[str]) -> None:
        self.store.append_logs(self.name, lines)

    @ray.method(concurrency_group="events")
    def set_controller(self, controller: Any) -> None:
        self._controller = controller

    @ray.method(concurrency_group="events")
    def set_phase(self, phase: str, restarted: bool = False) -> None:
        if restarted:  # one call, so the two moves cannot be reordered by the threaded actor
            record = self.store.get_training_job(self.name)
            self.store.update_training_job(self.name, restart_count=(record.get("restart_count") or 0) + 1)
            self._move(S.RESTARTING, "Restarting from the latest checkpoint after a worker failure")
            self.store.append_logs(self.name, ["A worker failed: resuming from the latest checkpoint"])
        self._move(S(phase))

    # --- the job ---------------------------------------------------------------------------------

    def _move(self, new: states.SecondaryStatus, message: str | None = None, **fields: Any) -> bool:
        """Transition if the state machine allows it from where the job is now (a stop may have won)."""
        current = self.store.get_training_job(self.name)["secondary_status"]
        if current == new or not states.can_transition(states.SecondaryStatus(current), new):
            return False
        try:
            self.store.transition_training_job(self.name, new, message, **fields)
        except states.IllegalTransition:  # another thread moved the job in between
            return False
        return True

    def run(self) -> str:
        """Run the job to a terminal state, then end this (detached) actor."""
        try:
            return self._run()
        finally:
            ray.actor.exit_actor()

    def _run(self) -> str:
        spec = self.spec
        store = self.store
        policy = RuntimePolicy(spec.max_runtime_seconds)
        start = time.time()
        store.update_training_job(
            self.name, training_start_time=start, runner_id=ray.get_runtime_context().get_actor_id()
        )
        self._move(S.DOWNLOADING)
        storage_path = spec.checkpoint_uri or os.path.join(str(store.path.parent), "checkpoints")
        me = ray.get_runtime_context().current_actor
        fit_ref = _fit.remote(spec, self.settings, me, storage_path)
        decision = RuntimeDecision.CONTINUE
        while True:
            ready, _ = ray.wait([fit_ref], timeout=_POLL_S)
            if ready:
                break
            record = store.get_training_job(self.name)
            decision = policy.decide(
                time.time() - start, stop_requested=record["secondary_status"] == S.STOPPING
            )
            if decision != RuntimeDecision.CONTINUE:
                self._abort(fit_ref)
                break
        end = time.time()
        billing = self._billing(start, end)
        final = store.latest_metrics(self.name)
        if decision != RuntimeDecision.CONTINUE:
            if decision == RuntimeDecision.MAX_RUNTIME:
                self._move(S.STOPPING, "Stopping the job: MaxRuntimeInSeconds reached")
                self._move(S.MAX_RUNTIME_EXCEEDED, training_end_time=end, final_metrics=final, **billing)
            else:
                self._move(S.STOPPED, training_end_time=end, final_metrics=final, **billing)
            return str(store.get_training_job(self.name)["status"])
        try:
            ray.get(fit_ref)
        except Exception as e:  # noqa: BLE001 - every failure becomes the job's FailureReason
            reason = _failure_reason(e)
            store.append_logs(self.name, [f"Training failed: {reason}", traceback.format_exc()])
            self._move(
                S.FAILED, reason, failure_reason=reason, training_end_time=end, final_metrics=final, **billing
            )
            return "Failed"
        self._move(S.TRAINING)
        self._move(S.UPLOADING)
        self._move(
            S.COMPLETED,
            model_artifacts=model_uri(spec),
            training_end_time=end,
            final_metrics=store.latest_metrics(self.name),
            **billing,
        )
        return "Completed"

    def _abort(self, fit_ref: Any) -> None:
        """End the Train run: a graceful abort (workers and placement group released), then make sure."""
        if self._controller is not None:
            try:
                ray.get(self._controller.abort.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - abort ends the controller actor, which raises here
                pass
        ray.cancel(fit_ref, force=True, recursive=True)

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
    # Ray's errors end with the user's exception line
    return (lines[-1] if lines else type(exc).__name__)[:1024]


def start_runner(spec: TrainingJobSpec, settings: S3Settings, store_path: str) -> Any:
    """Start the job's runner actor (detached, on this node, where the job database is)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = TrainingJobRunner.options(
        name=f"raymaker-training-job-{spec.name}",
        namespace="raymaker",
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(spec, settings, store_path)
    actor.run.remote()
    return actor
