"""One training job's run, in the job service: executes the job's state machine (``states`` says which
moves are legal; ``policies`` decide what a stop, the runtime limit or a failure means) on an instance
actor (one instance) or an instance group (several), either warm from the pool or started for it, and
meters it."""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

import ray

from raymaker.cluster.capacity import custom_resources, waiting_message, worker_resources
from raymaker.engine import metering, states
from raymaker.engine.failures import failure_reason
from raymaker.engine.instance_group import (
    GroupRun,
    InstanceGroup,
    checkpoint_location,
    collective_kind,
    group_key,
    group_libraries,
)
from raymaker.engine.instances import LIBRARIES, ActorPool, Idle, InstanceActor, kill
from raymaker.engine.job_metrics import ensure_collector
from raymaker.engine.policies import FailureDecision, FailurePolicy, RuntimeDecision, RuntimePolicy
from raymaker.engine.store import JobStore
from raymaker.engine.train_launch import model_uri, worker_job
from raymaker.engine.validation import TrainingJobSpec
from raymaker.engine.worker import JobEvents
from raymaker.io.storage import S3Settings

S = states.SecondaryStatus
POLL_S = 0.5  # how often a running job checks for a stop or the runtime limit
STOP_GRACE_S = 120.0  # SageMaker: SIGTERM, then SIGKILL 120 s later (docker stop -t 120)


def job_collective(spec: TrainingJobSpec) -> str | None:
    """What rank 0 prepares for a multi-instance job: the algorithm's collective, or for a script with a
    torch distribution torchrun's rendezvous (the script calls ``init_process_group`` itself)."""
    if spec.container is not None:  # every host's address, for its algo-N name
        return "hosts" if spec.instance_count > 1 else None
    if spec.script is not None:
        return "torchrun" if spec.script.distribution else None
    return collective_kind(spec.trainer)


def compute_threads(spec: TrainingJobSpec, total_cpus: float) -> dict[str, str]:
    """Environment giving a worker's math libraries the instance's cores. Ray sets OMP_NUM_THREADS to a
    worker's logical CPU reservation, which here is kept small on purpose (to leave CPUs for Ray Data),
    and XGBoost then runs single-threaded whatever ``nthread`` says."""
    cpus = spec.instance_type.cpus or total_cpus / spec.instance_count
    return {"OMP_NUM_THREADS": str(max(1, int(cpus)))}


class JobRun:
    def __init__(
        self, spec: TrainingJobSpec, settings: S3Settings, store: JobStore, service: Any, pool: ActorPool
    ):
        self.spec, self.settings, self.store, self.pool = spec, settings, store, pool
        self.name = spec.name
        self.events = JobEvents(service, spec.name)
        ensure_collector(store)  # this service's job gauges (engine.job_metrics), from its first job on
        self.instance: Any = None  # the instance actor (single instance)
        self.group: InstanceGroup | None = None  # the instance group (several instances)
        self.stopping = False  # a script job being stopped: its instances SIGTERM the script
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
            decision, outcome = self._run_on_group(start)
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
            reason = failure_reason(outcome)
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

    def _instance_resources(self) -> dict[str, float]:
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        return worker_resources(self.spec.instance_type, 1, total_cpus)

    def _new_instance(self) -> Any:
        res = self._instance_resources()
        self._make_room(res, 1)
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        return InstanceActor.options(
            num_cpus=res["CPU"], num_gpus=res.get("GPU", 0), resources=custom_resources(res)
        ).remote(compute_threads(self.spec, total_cpus), LIBRARIES.get(self.spec.algorithm, ()))

    def _make_room(self, each: dict[str, float], count: int) -> None:
        """Idle actors give their resources back first; if the job must still wait, its status message
        and its log say for what (an autoscaler may be starting nodes, or other work holds them)."""
        self.pool.make_room({k: v * count for k, v in each.items()})
        message = waiting_message(self.spec.instance_type, count, each)
        if message:
            self.store.set_status_message(self.name, message)
            self.store.append_logs(self.name, [message])

    def _take_warm(self) -> Any | None:
        entries = self.pool.take(self._pool_key())
        if not entries:
            return None
        self.store.update_training_job(
            entries[0].tag, warm_pool_status={"Status": "Reused", "ReusedByJob": self.name}
        )
        return entries[0].actor

    def _keep_warm(self, actor: Any, key: tuple) -> None:
        """The instance (or group) waits in the pool for the next job of its kind."""
        keep = self.spec.keep_alive_seconds
        self.pool.put(Idle(actor, key, time.time() + keep, self.name))
        self.store.update_training_job(
            self.name,
            warm_pool_status={"Status": "Available", "ResourceRetainedBillableTimeInSeconds": keep},
        )

    def _run_on_instance(self, start: float) -> tuple[RuntimeDecision, Any]:
        spec = self.spec
        policy = FailurePolicy.from_request(spec.request)
        # A local checkpoint URI is the directory itself; an S3 one is an archive beside a local directory.
        uri = spec.checkpoint_uri or ""
        if uri and "://" not in uri or uri.startswith("file://"):
            checkpoint_dir = uri.removeprefix("file://")
        else:
            checkpoint_dir = os.path.join(str(self.store.home), "checkpoints", spec.name)
        attempt = 1
        self.instance = self._take_warm() or self._new_instance()
        while True:
            ref = self.instance.run_job.remote(
                worker_job(spec), self.settings, self.events, checkpoint_dir, spec.checkpoint_uri
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
            self._keep_warm(self.instance, self._pool_key())
        else:
            kill(self.instance)
        return decision, outcome

    # --- several instances: an instance group ---------------------------------------------------

    def _group_key(self) -> tuple:
        spec = self.spec
        return group_key(spec.instance_type, spec.instance_count, group_libraries(spec.algorithm, spec.trainer))

    def _take_warm_group(self) -> InstanceGroup | None:
        entries = self.pool.take(self._group_key())
        if not entries:
            return None
        group, kept_by = entries[0].actor, entries[0].tag
        self.store.update_training_job(
            kept_by, warm_pool_status={"Status": "Reused", "ReusedByJob": self.name}
        )
        self.store.append_logs(
            self.name,
            [f"Reusing the warm instance group of training job {kept_by}: {group.describe()}"],
        )
        return group

    def _launch_train(self) -> GroupRun:
        """Start the job on its instance group: the warm one taken from the pool, else a new one (idle
        actors make room first)."""
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        per_worker = worker_resources(self.spec.instance_type, self.spec.instance_count, total_cpus)
        storage_path = self.spec.checkpoint_uri or os.path.join(str(self.store.home), "checkpoints")
        spec = self.spec
        if self.group is None:
            self._make_room(per_worker, spec.instance_count)
            self.group = InstanceGroup.start(
                spec.instance_count,
                per_worker,
                compute_threads(spec, total_cpus),
                group_libraries(spec.algorithm, spec.trainer),
                self._group_key(),
                spread=spec.instance_type.node_type,
            )
        checkpoint_dir, checkpoint_uri = checkpoint_location(
            storage_path, spec.name, os.path.join(str(self.store.home), "checkpoints")
        )
        return self.group.run(
            worker_job(spec),
            self.settings,
            self.events,
            collective=job_collective(spec),
            checkpoint_dir=checkpoint_dir,
            checkpoint_uri=checkpoint_uri,
        )

    def _run_on_group(self, start: float) -> tuple[RuntimeDecision, Any]:
        """Run the job on an instance group; a lost instance restarts the whole group from the latest
        checkpoint (the other ranks' collective broke with it), as often as the FailurePolicy allows."""
        policy = FailurePolicy.from_request(self.spec.request)
        attempt = 1
        self.group = self._take_warm_group()
        try:
            while True:
                decision, outcome = self._watch(self._launch_train(), start)
                lost = isinstance(outcome, ray.exceptions.RayActorError)
                if decision != RuntimeDecision.CONTINUE or not lost:
                    break
                if policy.decide(attempt, has_checkpoint=True) == FailureDecision.FAIL:
                    break
                attempt += 1
                self.store.append_logs(
                    self.name, [f"An instance was lost ({outcome}); restarting the group, attempt {attempt}"]
                )
                self._release_group()
        except BaseException:
            self._release_group()
            raise
        ok = decision == RuntimeDecision.CONTINUE and not isinstance(outcome, BaseException)
        if ok and self.spec.keep_alive_seconds > 0 and self.group is not None:
            self._keep_warm(self.group, self._group_key())
        else:
            self._release_group()
        return decision, outcome

    def _release_group(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            group.kill()

    # --- watching -------------------------------------------------------------------------------

    def _watch(self, ref: Any, start: float) -> tuple[RuntimeDecision, Any]:
        """Wait for the job's code to finish (an ObjectRef, or a ``GroupRun``), a stop request, or the
        runtime limit. Returns the decision and the result (or the exception it raised)."""
        policy = RuntimePolicy(self.spec.max_runtime_seconds)
        while True:
            if isinstance(ref, GroupRun):
                done, outcome = ref.poll(POLL_S)
                if done:
                    return RuntimeDecision.CONTINUE, outcome
            else:
                ready, _ = ray.wait([ref], timeout=POLL_S)
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
        """Nothing outlives an instance (or a group): no placement group but the group's, no workers.
        A script first gets SIGTERM, and SageMaker's grace to end, before its instances go."""
        if self.spec.runs_process:
            self._stop_scripts(ref)
        if self.instance is not None:
            kill(self.instance)
        if self.group is not None:
            self._release_group()

    def _stop_scripts(self, ref: Any) -> None:
        self.stopping = True  # the script's instances ask (JobService.stop_requested) and SIGTERM it
        deadline = time.time() + STOP_GRACE_S + 5.0  # the toolkit SIGKILLs after STOP_GRACE_S
        while time.time() < deadline:
            if isinstance(ref, GroupRun):
                if ref.poll(POLL_S)[0]:
                    return
            elif ray.wait([ref], timeout=POLL_S)[0]:
                return

    def _billing(self, start: float, end: float) -> dict[str, Any]:
        seconds = metering.running_seconds(start, end)
        billable = metering.billable_seconds(self.spec.instance_count, start, end)
        return {
            "training_seconds": seconds,
            "billable_seconds": billable,
            "cost": metering.cost(billable, self.spec.instance_type.price_per_hour),
        }
