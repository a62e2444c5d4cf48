"""Instance groups: the N instances of a multi-instance training job, as N ``InstanceActor``s that stay
together between jobs.

Ray Train spends 8-13 s here spawning a controller and a worker group on every ``fit()``, and cannot
reuse a worker group across runs; SageMaker's warm pools keep whole clusters. So a multi-instance job
runs in a group of instance actors of its own:

* ``InstanceGroup.start`` reserves one placement-group bundle per instance (the instance type's
  ``worker_resources``: CPUs, GPUs, and on a node-type cluster one unit of the type's own resource, so
  the instances land on distinct nodes of that type) and starts one actor in each. The placement group
  gives the group all its resources at once or not at all, so two waiting jobs never each hold part
  of what they need.
* ``InstanceGroup.run`` runs one job: rank 0 prepares it (the job's collective: xgboost's Rabit tracker
  or a gloo rendezvous address; the checkpoint every rank starts from), and every rank runs it with
  that, in the order Ray delivers calls to each actor, without waiting on the job service in between.
* ``GroupRun`` watches the ranks: the job's result is rank 0's; when a rank fails, the others usually
  fail soon after in their collective, so it waits ``FAILURE_GRACE_S`` for them and reports a lost
  instance (``RayActorError``) over the errors it caused elsewhere.
* With ``KeepAlivePeriodInSeconds`` the group goes into the ``ActorPool`` as one entry
  (``group_key``: instance type, count, libraries) and the next matching job runs in it at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from raymaker.cluster.capacity import custom_resources
from raymaker.engine.instances import COLLECTIVE_LIBRARIES, LIBRARIES, InstanceActor, kill
from raymaker.engine.worker import JobEvents, WorkerJob
from raymaker.io.storage import S3Settings

# After a rank fails, how long the others get to end too (a dead peer breaks their collective at
# once), before the group is stopped and the failure judged.
FAILURE_GRACE_S = 5.0


def collective_kind(trainer: str) -> str | None:
    """The collective an algorithm's ``trainer`` kind trains with: "xgboost", "torch" or None."""
    return trainer if trainer in ("xgboost", "torch") else None


def group_libraries(algorithm: str, trainer: str) -> tuple[str, ...]:
    """What a group's instances preload: the algorithm's libraries and its collective's."""
    kind = collective_kind(trainer)
    libs = LIBRARIES.get(algorithm, ()) + (COLLECTIVE_LIBRARIES.get(kind, ()) if kind else ())
    return tuple(dict.fromkeys(libs))


def group_key(instance_type: Any, count: int, libraries: Sequence[str]) -> tuple:
    """The warm pool's key for a group: jobs with the same instance type, count and libraries share it."""
    return ("group", instance_type.name, instance_type.cpus, instance_type.gpus, count, tuple(libraries))


def checkpoint_location(storage_path: str, job_name: str, local_root: str) -> tuple[str, str | None]:
    """(rank 0's checkpoint directory, the URI its archive goes to) for a multi-instance job whose
    checkpoints live under ``storage_path``: ``<storage_path>/<job>/`` as a directory for a local path,
    or ``<storage_path>/<job>/raymaker-checkpoint.tar.gz`` (beside a local working copy under
    ``local_root``) for S3. A local path must be one every instance's node sees (on several nodes:
    give the job a CheckpointConfig.S3Uri), as for Ray Train's storage_path."""
    if "://" in storage_path and not storage_path.startswith("file://"):
        return f"{local_root.rstrip('/')}/{job_name}", f"{storage_path.rstrip('/')}/{job_name}"
    return f"{storage_path.removeprefix('file://').rstrip('/')}/{job_name}", None


@dataclass
class InstanceGroup:
    """N instance actors, rank r in ``actors[r]``, each in its own bundle of ``placement_group``."""

    actors: list[Any]
    placement_group: Any
    key: tuple
    # Filled in by the jobs it ran: each rank's process id and node address.
    pids: list[int | None] = field(default_factory=list)
    nodes: list[str | None] = field(default_factory=list)
    jobs_run: int = 0

    @classmethod
    def start(
        cls,
        count: int,
        resources: dict[str, float],
        env: dict[str, str],
        libraries: tuple[str, ...],
        key: tuple,
        *,
        spread: bool = False,
    ) -> InstanceGroup:
        """Reserve ``count`` bundles of ``resources`` (``worker_resources``) and start an actor in each;
        nothing waits here: the actors start once Ray can place the whole group. ``spread`` (node
        types) asks Ray to put the bundles on distinct nodes, as SageMaker's instances are."""
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {k: v for k, v in resources.items() if v}
        pg = placement_group([dict(bundle) for _ in range(count)], strategy="SPREAD" if spread else "PACK")
        actors = [
            InstanceActor.options(
                num_cpus=resources.get("CPU", 0),
                num_gpus=resources.get("GPU", 0),
                resources=custom_resources(resources),
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
            ).remote(env, libraries)
            for rank in range(count)
        ]
        return cls(actors, pg, key, [None] * count, [None] * count)

    @property
    def size(self) -> int:
        return len(self.actors)

    def describe(self) -> str:
        """Its instances as SageMaker names them (algo-1, algo-2...), with their processes."""
        return ", ".join(
            f"algo-{rank + 1} (rank {rank}): pid {pid} on {node}"
            for rank, (pid, node) in enumerate(zip(self.pids, self.nodes, strict=True))
        )

    def run(
        self,
        job: WorkerJob,
        settings: S3Settings,
        events: JobEvents,
        *,
        collective: str | None,
        checkpoint_dir: str,
        checkpoint_uri: str | None,
    ) -> GroupRun:
        """Start ``job`` on every rank; returns at once. Rank 0 first prepares the job (collective,
        starting checkpoint); the other ranks receive what it prepared as a Ray object, so they start
        as soon as it is ready."""
        n = self.size
        prepared = self.actors[0].prepare_group_job.remote(
            collective, n, checkpoint_dir, checkpoint_uri, settings
        )
        refs = [
            actor.run_rank.remote(job, settings, events, rank, n, prepared, checkpoint_dir, checkpoint_uri)
            for rank, actor in enumerate(self.actors)
        ]
        return GroupRun(self, refs)

    def kill(self) -> None:
        """Stop every instance and give back the group's reservation."""
        for actor in self.actors:
            kill(actor)
        try:
            ray.util.remove_placement_group(self.placement_group)
        except Exception:  # noqa: BLE001 - already removed
            pass


class GroupRun:
    """One job running on an instance group: ``poll`` until it is done."""

    def __init__(self, group: InstanceGroup, refs: list[Any]):
        self.group = group
        self.refs = refs
        # rank -> its return value or the exception it raised, in the order they came
        self.results: dict[int, Any] = {}
        self.first_failure: float | None = None

    def poll(self, timeout: float) -> tuple[bool, Any]:
        """(done, outcome) after waiting up to ``timeout`` s. The outcome is rank 0's metrics, or the
        failure: a lost instance (``RayActorError``) if any, else the first error a rank raised."""
        waiting = [(r, ref) for r, ref in enumerate(self.refs) if r not in self.results]
        if waiting:
            ready, _ = ray.wait([ref for _, ref in waiting], num_returns=len(waiting), timeout=timeout)
            ready_set = set(ready)
            for rank, ref in waiting:
                if ref in ready_set:
                    try:
                        self.results[rank] = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - judged below
                        self.results[rank] = e
                        self.first_failure = self.first_failure or time.time()
        failures = {r: v for r, v in self.results.items() if isinstance(v, BaseException)}
        everyone = len(self.results) == len(self.refs)
        if not failures:
            if not everyone:
                return False, None
            for rank, value in self.results.items():
                self.group.pids[rank], self.group.nodes[rank] = value["pid"], value["node"]
            self.group.jobs_run += 1
            return True, self.results[0]["metrics"]
        if not everyone and time.time() - (self.first_failure or 0) < FAILURE_GRACE_S:
            return False, None
        lost = [e for e in failures.values() if isinstance(e, ray.exceptions.RayActorError)]
        return True, (lost or list(failures.values()))[0]  # else the first to fail

    def cancel(self) -> None:
        self.group.kill()
