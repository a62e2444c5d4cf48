"""Instances: the Ray actors that stand for SageMaker's ML instances, and the pool that keeps idle ones
warm.

* ``InstanceActor`` runs training jobs, one at a time: a single-instance job alone, or one rank of a
  multi-instance job in an ``instance_group.InstanceGroup`` (rank 0 also prepares each job's collective).
  With ``KeepAlivePeriodInSeconds`` it (or its whole group) stays up afterwards, with the algorithm's
  libraries imported, and the next job on the same instance type (and count) starts in it at once
  (SageMaker's managed warm pools).
* ``ActorPool`` holds idle actors of every kind (warm training instances and instance groups, transform
  model actors) for their keep-alive period. Anything about to ask Ray for CPUs first calls
  ``make_room``, so an idle actor never holds back waiting work: it is stopped at once, oldest first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from raymaker.engine.worker import GroupStart, JobEvents, WorkerJob
from raymaker.io.storage import S3Settings


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


# What an algorithm's instances import in the background as they start (a warm instance has them):
# linear-learner's first optimizer imports torch._dynamo (2 s here). Not scipy.stats (1.5 s, for its
# metrics): on 2 cores, importing it beside two starting instances delayed their first epoch by 4 s.
LIBRARIES = {
    "xgboost": ("xgboost",),
    "linear-learner": ("torch", "torch._dynamo"),
}
# What each kind of collective needs imported (a group's instances preload it too).
COLLECTIVE_LIBRARIES = {"xgboost": ("xgboost",), "torch": ("torch",)}


def _group_addresses(world_size: int) -> dict[str, str]:
    """``{"algo-1": ip, ...}``: the node address of each bundle (rank) of the caller's placement group."""
    from ray.util.placement_group import get_current_placement_group, placement_group_table

    pg = get_current_placement_group()
    if pg is None:
        return {"algo-1": ray.util.get_node_ip_address()}
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    bundles = placement_group_table(pg).get("bundles_to_node_id", {})
    return {f"algo-{rank + 1}": nodes.get(bundles.get(rank), "127.0.0.1") for rank in range(world_size)}


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@ray.remote
class InstanceActor:
    """One ML instance: runs jobs one at a time (alone, or as one rank of a group), and may stay warm
    between them."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = ()) -> None:
        # Set before the math libraries load (their thread pools read it once). Passing it as a
        # runtime_env instead would make Ray start a new worker process rather than use a prestarted one.
        os.environ.update(env)
        import raymaker.engine.worker  # noqa: F401
        import raymaker.io.recordio  # noqa: F401

        # The algorithm's libraries (xgboost takes a second to import) load in the background while the
        # first job fetches and decodes its data; a warm instance has them already.
        threading.Thread(target=_preload, args=(preload,), daemon=True, name="raymaker-preload").start()
        self._tracker: Any = None  # rank 0 of an xgboost group: the current job's Rabit tracker

    def ping(self) -> int:
        return os.getpid()

    def run_job(
        self,
        job: WorkerJob,
        settings: S3Settings,
        events: JobEvents,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
    ) -> dict:
        from raymaker.engine.worker import InstanceContext, run_training

        os.makedirs(checkpoint_dir, exist_ok=True)
        gpus = tuple(ray.get_gpu_ids())
        ctx = InstanceContext(events, job.seed, checkpoint_dir, checkpoint_uri, settings, gpus=gpus)
        channels = {c.name: c for c in job.channels}

        def shard_for(name: str) -> Any:
            from raymaker.io.modes.pipe import pipe_dataset

            return pipe_dataset(channels[name], settings=settings).iterator()

        return run_training(
            job, ctx, settings, shard_for=shard_for, resumed=ctx.load_checkpoint() is not None
        )

    # --- one rank of an instance group --------------------------------------------------------------

    def prepare_group_job(
        self,
        collective: str | None,
        world_size: int,
        checkpoint_dir: str,
        checkpoint_uri: str | None,
        settings: S3Settings,
    ) -> GroupStart:
        """Rank 0, before each job of its group: start the job's collective here, as Ray Train's
        backends do on their driver (xgboost: a Rabit tracker; torch: a free port for gloo's
        rendezvous, which rank 0 then hosts), and read the checkpoint every rank starts from."""
        from raymaker.engine.worker import checkpoint_archive

        ip = ray.util.get_node_ip_address()
        address: Any = None
        self._free_tracker()
        if collective == "xgboost":
            _preload(("xgboost",))
            from xgboost.tracker import RabitTracker

            # sortby="task": xgboost's ranks follow the task ids, which carry our ranks.
            tracker = RabitTracker(n_workers=world_size, host_ip=ip, sortby="task")
            tracker.start()
            threading.Thread(target=tracker.wait_for, daemon=True, name="raymaker-rabit").start()
            self._tracker = tracker
            address = dict(tracker.worker_args())
        elif collective == "torch":
            host = f"[{ip}]" if ":" in ip else ip
            address = f"tcp://{host}:{_free_port(ip)}"
        elif collective == "torchrun":  # a script's own torch.distributed: torchrun's variables
            address = {"MASTER_ADDR": ip, "MASTER_PORT": str(_free_port(ip))}
        elif collective == "hosts":  # a container's: every rank's node address, by its algo-N name
            address = _group_addresses(world_size)
        return GroupStart(collective, address, checkpoint_archive(checkpoint_dir, checkpoint_uri, settings))

    def _free_tracker(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.free()  # the previous job's workers have finalized: its thread has ended
            except Exception:  # noqa: BLE001 - a failed job's tracker: nothing left to free
                pass

    def run_rank(
        self,
        job: WorkerJob,
        settings: S3Settings,
        events: JobEvents,
        rank: int,
        world_size: int,
        start: GroupStart,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
    ) -> dict[str, Any]:
        """Run rank ``rank`` of a multi-instance job: join the job's collective, read this rank's share of
        each channel (Pipe: this rank's stream, as SageMaker's Pipe mode gives each instance its own),
        train, and leave the collective. Returns the final metrics, this process's id and its node."""
        from raymaker.engine.worker import InstanceContext, collective, run_training

        if rank == 0:
            os.makedirs(checkpoint_dir, exist_ok=True)
        ctx = InstanceContext(
            events,
            job.seed,
            checkpoint_dir,
            checkpoint_uri,
            settings,
            rank=rank,
            world_size=world_size,
            start_checkpoint=start.checkpoint,
            gpus=tuple(ray.get_gpu_ids()),
            rendezvous=start.address if start.collective in ("torchrun", "hosts") else None,
        )
        channels = {c.name: c for c in job.channels}

        def shard_for(name: str) -> Any:
            from raymaker.io.modes.pipe import pipe_dataset

            return pipe_dataset(
                channels[name], settings=settings, num_workers=world_size, rank=rank
            ).iterator()

        def join() -> Any:
            _preload(COLLECTIVE_LIBRARIES.get(start.collective or "", ()))  # xgboost without scikit-learn
            return collective(start, rank, world_size)

        metrics = run_training(
            job, ctx, settings, shard_for=shard_for, resumed=start.checkpoint is not None, join=join
        )
        return {"metrics": metrics, "pid": os.getpid(), "node": ray.util.get_node_ip_address()}


@dataclass
class Idle:
    """An idle actor: what it holds (``key``), until when it is kept, and ``tag`` (for a warm training
    instance, the job that last ran in it)."""

    actor: Any
    key: tuple
    expires: float
    tag: str | None = None


@dataclass
class ActorPool:
    """Idle actors kept warm for a while, keyed by what they hold. ``on_evict`` hears of each actor the
    pool stops (on expiry, or to make room), e.g. to mark a warm pool Terminated."""

    on_evict: Callable[[Idle, str], None] | None = None
    idle: list[Idle] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, entry: Idle) -> None:
        with self.lock:
            self.idle.append(entry)

    def take(self, key: tuple, count: int = 1) -> list[Idle]:
        """Up to ``count`` idle actors holding ``key`` (newest first), removed from the pool."""
        self.reap()
        with self.lock:
            found = [e for e in reversed(self.idle) if e.key == key][:count]
            for e in found:
                self.idle.remove(e)
        return found

    def make_room(self, needed: Mapping[str, float]) -> None:
        """Stop idle actors, soonest to expire first, until the ``needed`` resources (``{"CPU": 2,
        "ml.m5.xlarge": 1}``) are free in the cluster (or no idle actor is left): warm actors must never
        hold back new work."""
        while True:
            free = ray.available_resources()
            if all(free.get(k, 0.0) >= v - 1e-9 for k, v in needed.items()):
                return
            with self.lock:
                if not self.idle:
                    return
                entry = min(self.idle, key=lambda e: e.expires)
                self.idle.remove(entry)
            self._evict(entry, "to free its resources for waiting work")
            time.sleep(0.2)  # let the raylet see the freed resources

    def reap(self) -> None:
        now = time.time()
        with self.lock:
            expired = [e for e in self.idle if e.expires <= now]
            self.idle = [e for e in self.idle if e.expires > now]
        for e in expired:
            self._evict(e, "its keep-alive period ended")

    def clear(self) -> None:
        with self.lock:
            entries, self.idle = self.idle, []
        for e in entries:
            self._evict(e, "the pool was cleared")

    def _evict(self, entry: Idle, why: str) -> None:
        kill(entry.actor)
        if self.on_evict is not None:
            self.on_evict(entry, why)


def kill(actor: Any) -> None:
    """Stop an actor that may already be gone, or every actor of a group (anything else with ``kill``)."""
    if not isinstance(actor, ray.actor.ActorHandle) and callable(getattr(actor, "kill", None)):
        actor.kill()
        return
    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already gone
        pass
