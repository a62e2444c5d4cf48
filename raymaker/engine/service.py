"""The job service: one long-lived, detached Ray actor per job database, pinned to the node that holds
the database. It runs every training job, tuning job, transform job and endpoint deployment, so they
go on (and their records keep moving) after the submitting script exits, as SageMaker's do.

It writes a heartbeat, and when a new service starts (the previous one was killed, or its Ray cluster
stopped) it finds every resource another service left in progress and resumes or ends it: nothing
stays InProgress. Operations reach it only through the handle the API injects (``Engine.service``).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

import ray

from raymaker.cluster.capacity import shortfall
from raymaker.cluster.definition import load_instance_types
from raymaker.cluster.runtime import head_node_id
from raymaker.engine import states
from raymaker.engine.billing import meter_endpoint
from raymaker.engine.context import Engine
from raymaker.engine.deployment import apply_endpoint
from raymaker.engine.dispatch import dispatch
from raymaker.engine.failures import failure_reason
from raymaker.engine.hosting import variant_plans
from raymaker.engine.instances import ActorPool, Idle
from raymaker.engine.job_metrics import ensure_collector
from raymaker.engine.job_run import JobRun
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import EndpointStatus as E
from raymaker.engine.resource_states import TransformJobStatus as T
from raymaker.engine.store import SERVICE_HEARTBEAT_S, JobStore, log_key, service_name
from raymaker.engine.training_jobs import TrainingJobSubmitter
from raymaker.engine.transform_run import run_transform_job
from raymaker.engine.tuning_run import TrialClient, caller_of, run_tuning_job, start_trial, trial_progress
from raymaker.engine.users import Directory, runtime_auth_required
from raymaker.engine.validation import TrainingJobSpec, validate_training_job
from raymaker.io.storage import S3Settings

S = states.SecondaryStatus
RECOVERY_DELAY_S = 3.0  # work handed to a new service as it starts arrives within this
RECOVERY_EVERY_S = 10.0  # how often the service looks for work nobody runs
METER_EVERY_S = 10.0  # how often autoscaled endpoints' replica counts are re-read for billing
HANDOFF_S = 30.0  # a record nobody picked up this long after it was created lost its hand-off
LOST_REASON = "The job's Ray cluster stopped while the job ran (its job service is gone); run it again"


@ray.remote(num_cpus=0, concurrency_groups={"events": 1, "jobs": 64, "hosting": 1, "api": 16})
class JobService:
    """Runs every job of one job database; job code reports to it through ``JobEvents``.

    Jobs each hold a thread of the "jobs" group for their lifetime; the jobs' events are handled one at
    a time on the "events" thread, so each sender's log lines and metrics are stored in order."""

    def __init__(self, store_path: str):
        self.store = JobStore(store_path)
        self.pool = ActorPool(on_evict=self._evicted)
        self.directory = Directory(self.store)
        self.runs: dict[str, JobRun] = {}
        self.me = ray.get_runtime_context().current_actor
        self.id = ray.get_runtime_context().get_actor_id()
        self.started = time.time()
        self.store.service_heartbeat(self.id, pid=os.getpid())
        ensure_collector(self.store)  # jobs by status, tuning progress: from the start, endpoints-only too
        threading.Thread(target=self._housekeeping, daemon=True, name="raymaker-housekeeping").start()

    def _evicted(self, entry: Idle, why: str) -> None:
        if entry.tag:  # a warm training instance: its job's warm pool ends
            self.store.update_training_job(entry.tag, warm_pool_status={"Status": "Terminated"})

    def _housekeeping(self) -> None:
        """Heartbeat and warm-pool expiry, forever; recovery of work nobody runs, first after a moment
        (what the previous service left), then every ``RECOVERY_EVERY_S`` (hand-offs that got lost)."""
        next_recovery = self.started + RECOVERY_DELAY_S
        next_meter = self.started + METER_EVERY_S
        first = True
        while True:
            time.sleep(SERVICE_HEARTBEAT_S)
            try:
                self.store.service_heartbeat(self.id, pid=os.getpid())
                self.pool.reap()
                if time.time() >= next_meter:  # autoscaled endpoints' replica counts, for billing
                    self.me.meter_autoscaled.remote()
                    next_meter = time.time() + METER_EVERY_S
                if time.time() >= next_recovery:
                    self._recover(first)
                    first, next_recovery = False, time.time() + RECOVERY_EVERY_S
            except Exception:  # noqa: BLE001 - keep going; the next round retries
                traceback.print_exc()

    # --- recovery ------------------------------------------------------------------------------

    def _engine(self, settings: S3Settings | None = None) -> Engine:
        return Engine(self.store, (settings or S3Settings()).resolve(), service=lambda: self.me)

    def _orphaned(self, runner: str | None, created: float) -> bool:
        """Nobody runs it: another (gone) service did, or it was never picked up — created before this
        service started, or its hand-off is long overdue."""
        if runner is not None:
            return runner != self.id
        return created < self.started - RECOVERY_DELAY_S or created < time.time() - HANDOFF_S

    def _recover(self, first: bool) -> None:
        """Resume or end everything in progress that no job service runs."""
        engine = self._engine()
        for status in ("InProgress", "Stopping"):
            for record in self.store.list_training_jobs(status=status, max_results=100_000):
                if record["name"] in self.runs or not self._orphaned(
                    record.get("runner_id"), record["creation_time"]
                ):
                    continue
                if record.get("runner_id") is None and status == "InProgress":
                    self._start_lost_training_job(record, engine.settings)  # it never started: run it
                else:
                    self._end_training_job(record)
        for record in engine.resources.active():
            if not self._orphaned(record.get("runner_id"), record["creation_time"]):
                continue
            kind, name, status = record["kind"], record["name"], record["status"]
            self.store.append_logs(
                f"{kind}/{name}", [f"A new job service took over {kind} {name} ({status})"]
            )
            if kind == Kind.ENDPOINT:
                self.me.apply_endpoint.remote(name, engine.settings)  # finishes the change, or fails it
            elif kind == Kind.TRANSFORM_JOB and status == T.STOPPING:
                engine.resources.update(kind, name, status=T.STOPPED, end_time=time.time())
            elif kind == Kind.TRANSFORM_JOB:
                self.me.run_transform.remote(name, engine.settings)  # outputs are per object: rerun whole
            elif kind == Kind.TUNING_JOB:
                self.me.run_tuning.remote(name, engine.settings)  # continues with the trials still to run
        if first:  # on the hosting thread: Serve's client API is not safe from two threads at once
            self.me.redeploy_lost_endpoints.remote(engine.settings)

    def _start_lost_training_job(self, record: dict[str, Any], settings: S3Settings) -> None:
        try:
            spec = validate_training_job(record["request"], instance_types=load_instance_types())
        except Exception as e:  # noqa: BLE001 - e.g. the cluster definition changed meanwhile
            self._end_training_job(record, failure_reason(e, prefix="The job could not be started: "))
            return
        self.store.update_training_job(record["name"], runner_id=self.id)  # not picked up twice
        self.me.run_job.remote(spec, settings)

    def _end_training_job(self, record: dict[str, Any], reason: str = LOST_REASON) -> None:
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

    @ray.method(concurrency_group="hosting")
    def redeploy_lost_endpoints(self, settings: S3Settings) -> None:
        """InService endpoints keep answering while Serve runs; if Serve lost their applications (the
        Ray cluster restarted), they are deployed again from their records."""
        engine = self._engine(settings)
        in_service = engine.resources.list(Kind.ENDPOINT, status=E.IN_SERVICE, max_results=100_000)
        if not in_service:
            return
        from raymaker.serve import hosting

        hosting.start_serve()
        apps = _serve_applications()
        for record in in_service:
            variants = record["state"].get("variants") or []
            if variants and all(v["app"] in apps for v in variants):
                continue
            config = record["state"].get("config") or record["request"]["EndpointConfigName"]
            state = dict(record["state"], pending_config=config)
            engine.resources.update(Kind.ENDPOINT, record["name"], status=E.UPDATING, state=state)
            self.me.apply_endpoint.remote(record["name"], engine.settings)

    # --- work ----------------------------------------------------------------------------------

    def ping(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="api")
    def call(self, operation: str, params: dict[str, Any], settings: S3Settings, **audit: Any) -> dict[str, Any]:
        """One API call from a process on another node than the job database (``SageMakerAPI``)."""
        return dispatch(self._engine(settings), operation, params, **audit)

    @ray.method(concurrency_group="hosting")
    def meter_autoscaled(self) -> None:
        """An autoscaled variant is billed for the replicas it runs: when Serve's count differs from the
        metered one, a new span starts (on the hosting thread: Serve's client is not thread-safe)."""
        spans = {(r["endpoint"].lower(), r["variant"]): r for r in self.store.meter_rows(running_only=True)}
        engine = self._engine()
        scaled = [
            (record, v)
            for record in engine.resources.list(Kind.ENDPOINT, max_results=100_000)
            if record["status"] == E.IN_SERVICE
            for v in record["state"].get("variants") or []
            if v.get("scaling") and (record["name"].lower(), v["name"]) in spans
        ]
        if not scaled:
            return
        from ray import serve

        applications = serve.status().applications
        for record, v in scaled:
            app = applications.get(v["app"])
            deployment = app.deployments.get("Variant") if app is not None else None
            running = int((deployment.replica_states or {}).get("RUNNING", 0)) if deployment is not None else 0
            span = spans[(record["name"].lower(), v["name"])]
            if running and running != span["instance_count"]:
                meter_endpoint(self.store, record["name"], [(v["name"], span["instance_type"], running)],
                               only=v["name"])

    # --- endpoint replicas checking signatures (serve.guard) ------------------------------------

    @ray.method(concurrency_group="api")
    def runtime_auth(self, endpoint_arn: str) -> tuple[bool, str | None]:
        """Whether endpoints take only signed invocations (``users.runtime_auth_required``), and who made
        the endpoint (a server's user, or None): its policies' ``aws:ResourceTag/raymaker:owner``."""
        return runtime_auth_required(self.store), self.store.owners([endpoint_arn]).get(endpoint_arn)

    @ray.method(concurrency_group="api")
    def access_key(self, access_key_id: str) -> tuple[str, dict[str, Any], tuple[dict[str, Any], ...]] | None:
        """(secret, userIdentity, policies) of an active access key, None for an unknown one."""
        found = self.directory.lookup(access_key_id)
        if found is None:
            return None
        secret, caller = found
        return secret, caller.identity(), caller.policies

    @ray.method(concurrency_group="events")
    def record_invocations(self, calls: list[dict[str, Any]]) -> None:
        """Endpoint replicas' audit events (``store.record_api_calls``'s dicts), a batch at a time."""
        self.store.record_api_calls(calls)

    @ray.method(concurrency_group="jobs")
    def run_job(self, spec: TrainingJobSpec, settings: S3Settings) -> str:
        run = self.runs[spec.name] = JobRun(spec, settings, self.store, self.me, self.pool)
        self.store.update_training_job(spec.name, runner_id=self.id)
        try:
            return run.run()
        except Exception as e:  # noqa: BLE001 - never leave a record InProgress
            reason = failure_reason(e, prefix="raymaker internal error: ")
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

    @ray.method(concurrency_group="api")
    def stop_requested(self, job: str) -> bool:
        """Asked by a script job's instances every ``STOP_POLL_S``: whether to SIGTERM the script (a
        stop, or MaxRuntime reached)."""
        run = self.runs.get(job)
        return run is not None and run.stopping

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

    def _run_resource(self, kind: Kind, name: str, settings: S3Settings, run: Any) -> str:
        """Run ``run(resources)`` for one resource as its runner; whatever it raises ends the record
        Failed with the reason: never left InProgress."""
        res = self._engine(settings).resources
        res.update(kind, name, runner_id=self.id)
        try:
            return run(res)
        except Exception as e:  # noqa: BLE001 - the reason goes to the record
            traceback.print_exc()
            reason = failure_reason(e, prefix="raymaker internal error: ")
            res.update(kind, name, status="Failed", failure_reason=reason, end_time=time.time())
            return "Failed"

    @ray.method(concurrency_group="jobs")
    def run_transform(self, name: str, settings: S3Settings) -> str:
        return self._run_resource(
            Kind.TRANSFORM_JOB, name, settings, lambda res: run_transform_job(res, name, settings, self.pool)
        )

    @ray.method(concurrency_group="jobs")
    def run_tuning(self, name: str, settings: S3Settings) -> str:
        client = TrialClient(self.me, settings)
        return self._run_resource(Kind.TUNING_JOB, name, settings, lambda res: run_tuning_job(res, name, client))

    # Tune trials run on any node and reach the job database only through these.

    @ray.method(concurrency_group="jobs")
    def start_trial(self, spec: Any, arn: str, hyperparameters: dict[str, str], settings: S3Settings) -> str:
        engine = self._engine(settings)
        return start_trial(engine.resources, TrainingJobSubmitter(engine), spec, arn, hyperparameters)

    @ray.method(concurrency_group="jobs")
    def trial_progress(self, job: str, metric: str, seen: int) -> dict[str, Any]:
        return trial_progress(self.store, job, metric, seen)

    @ray.method(concurrency_group="jobs")
    def stop_trial(self, job: str, tuning_job: str) -> None:
        TrainingJobSubmitter(self._engine()).stop(job, caller=caller_of(tuning_job))

    @ray.method(concurrency_group="hosting")
    def apply_endpoint(self, name: str, settings: S3Settings) -> str:
        """Deploy, update or delete endpoint ``name`` as its record asks. One at a time: each change
        rewrites the runtime's routing table from all the records."""
        res = self._engine(settings).resources
        record = res.find(Kind.ENDPOINT, name)
        if record is None:
            return "Deleted"
        res.update(Kind.ENDPOINT, name, runner_id=self.id)
        try:
            pending = record["state"].get("pending_config")
            if record["status"] in (E.CREATING, E.UPDATING) and pending:
                # Idle warm actors give their CPUs to the replicas first.
                plans = variant_plans(res, name, pending)
                needed: dict[str, float] = {}
                for p in plans:
                    each = {"CPU": p.num_cpus, "GPU": p.num_gpus, **dict(p.custom_resources)}
                    for k, v in each.items():
                        needed[k] = needed.get(k, 0.0) + v * p.instance_count
                self.pool.make_room(needed)
                short = shortfall(needed)
                if short:  # Serve's replicas wait for them; say so where the user can read it
                    self.store.append_logs(
                        log_key(Kind.ENDPOINT, name), [f"Waiting for resources: the replicas need {short}"]
                    )
            return apply_endpoint(res, name, settings)
        except Exception as e:  # noqa: BLE001 - never leave an endpoint Creating/Updating forever
            traceback.print_exc()
            record = res.find(Kind.ENDPOINT, name)
            if record is not None and record["status"] in (E.CREATING, E.UPDATING):
                reason = failure_reason(e, prefix="raymaker internal error: ")
                res.update(Kind.ENDPOINT, name, status=E.FAILED, failure_reason=reason)
            raise


def _serve_applications() -> set[str]:
    from ray import serve

    return set(serve.status().applications)


def job_service(store_path: str) -> Any:
    """The job service of this job database: found by name, or started (detached) on the head node,
    which holds the database."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = head_node_id()
    return JobService.options(
        name=service_name(store_path),
        namespace="raymaker",
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(store_path)
