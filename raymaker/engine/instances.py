"""Instances: the Ray actors that stand for SageMaker's ML instances, and the pool that keeps idle ones
warm.

* ``InstanceActor`` runs single-instance training jobs, one at a time. With ``KeepAlivePeriodInSeconds``
  it stays up afterwards, with the algorithm's libraries imported, and the next job on the same
  instance type starts in it at once (SageMaker's managed warm pools).
* ``ActorPool`` holds idle actors of every kind (warm training instances, transform model actors) for
  their keep-alive period. Anything about to ask Ray for CPUs first calls ``make_room``, so an idle
  actor never holds back waiting work: it is stopped at once, oldest first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from raymaker.engine.worker import JobEvents, WorkerJob
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


LIBRARIES = {"xgboost": ("xgboost",), "linear-learner": ("torch",)}


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
        job: WorkerJob,
        settings: S3Settings,
        events: JobEvents,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
    ) -> dict:
        from raymaker.engine.worker import InstanceContext, run_training

        os.makedirs(checkpoint_dir, exist_ok=True)
        ctx = InstanceContext(events, job.seed, checkpoint_dir, checkpoint_uri, settings)
        channels = {c.name: c for c in job.channels}

        def shard_for(name: str) -> Any:
            from raymaker.io.modes.pipe import pipe_dataset

            return pipe_dataset(channels[name], settings=settings).iterator()

        return run_training(
            job, ctx, settings, shard_for=shard_for, resumed=ctx.load_checkpoint() is not None
        )


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
    """Stop an actor that may already be gone."""
    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already gone
        pass

