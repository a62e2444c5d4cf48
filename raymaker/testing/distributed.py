"""Run an algorithm's ``train`` in several local worker processes, each on its own shard, joined the way
the engine's Ray trainer joins them (``Algorithm.trainer``): a ``torch.distributed`` gloo group for
"torch" (TorchTrainer), xgboost's collective with a Rabit tracker for "xgboost" (XGBoostTrainer), nothing
for "data_parallel". No Ray: fresh processes (spawn), local TCP; results come back as files."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import Algorithm, LocalContext, TrainingData
from raymaker.io.batch import Batch


@dataclass
class Job:
    """One training run: rank r trains ``algorithm`` with ``hyperparameters`` on ``shards[r]`` as its
    ``train`` channel, plus the ``replicated`` channels (the same on every rank). Shards and channels are
    Batches or feature arrays. ``algorithm`` is a registered name, or a class the workers can import by
    its module path (they are fresh processes). Rank r's model dir is ``<out>/<tag>/model-<r>``."""

    tag: str
    algorithm: str | type[Algorithm]
    hyperparameters: dict[str, str]
    shards: list[Any]
    replicated: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def algorithm_class(self) -> type[Algorithm]:
        return get_algorithm(self.algorithm) if isinstance(self.algorithm, str) else self.algorithm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(value: Any) -> Batch:
    return value if isinstance(value, Batch) else Batch(value)


def _train_jobs(rank: int, world: int, jobs: list[Job], out: str) -> None:
    for job in jobs:
        algo = job.algorithm_class()
        ctx = LocalContext(seed=job.seed)
        ctx.rank, ctx.world_size = rank, world
        channels = {"train": _batch(job.shards[rank])}
        channels.update({name: _batch(v) for name, v in job.replicated.items()})
        model_dir = os.path.join(out, job.tag, f"model-{rank}")
        os.makedirs(model_dir)
        hp = algo.validate_hyperparameters(job.hyperparameters)
        final = algo().train(hp, TrainingData.from_batches(**channels), ctx, model_dir)
        with open(os.path.join(out, job.tag, f"final-{rank}.json"), "w") as f:
            json.dump({"final": final, "reported": ctx.metrics}, f)


def _worker(rank: int, world: int, trainer: str, comm: dict[str, Any], jobs: list[Job], out: str) -> None:
    try:
        if trainer == "torch":
            import torch.distributed as dist

            dist.init_process_group(
                "gloo", init_method=f"tcp://127.0.0.1:{comm['port']}", rank=rank, world_size=world
            )
            try:
                _train_jobs(rank, world, jobs, out)
            finally:
                dist.destroy_process_group()
        elif trainer == "xgboost":
            from xgboost.collective import CommunicatorContext

            # The tracker sorts workers by task id, so xgboost's ranks are ours (as Ray Train does it).
            with CommunicatorContext(**comm, dmlc_task_id=f"rank-{rank:08}"):
                _train_jobs(rank, world, jobs, out)
        else:
            _train_jobs(rank, world, jobs, out)
    except BaseException:
        with open(os.path.join(out, f"error-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise


def run_distributed(
    jobs: list[Job], out: str, world: int = 2, timeout_s: float = 300.0
) -> list[dict[str, Any]]:
    """Run ``jobs`` (one after another, all of one ``trainer`` kind) in ``world`` processes. Per job:
    ``ranks`` (every rank's ``{"final", "reported"}``), ``model_dir`` (rank 0's) and ``model_dirs``.
    A failing rank's traceback is raised as a RuntimeError; the others are stopped."""
    kinds = {job.algorithm_class().trainer for job in jobs}
    if len(kinds) != 1:
        raise ValueError(f"jobs of one trainer kind at a time, not {sorted(kinds)}")
    trainer = kinds.pop()
    os.makedirs(out, exist_ok=True)
    comm: dict[str, Any] = {}
    tracker = None
    if trainer == "torch":
        comm["port"] = free_port()
    elif trainer == "xgboost":
        from xgboost.tracker import RabitTracker

        tracker = RabitTracker(n_workers=world, host_ip="127.0.0.1", sortby="task")
        tracker.start()
        threading.Thread(target=tracker.wait_for, daemon=True).start()
        comm.update(tracker.worker_args())
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker, args=(r, world, trainer, comm, jobs, out)) for r in range(world)]
    # Each worker gets its share of the cores, as the engine gives each instance its own: workers
    # that each spin all cores' worth of OpenMP threads in a collective run many times slower.
    with _environment(OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // world))):
        for p in procs:
            p.start()  # a spawned process takes the environment at its start
    try:
        _join(procs, out, timeout_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if tracker is not None:
            # It reports the workers' failures again (or lost connections): theirs were raised above.
            with contextlib.suppress(Exception):
                tracker.free()
    results = []
    for job in jobs:
        per_rank = []
        for r in range(world):
            with open(os.path.join(out, job.tag, f"final-{r}.json")) as f:
                per_rank.append(json.load(f))
        dirs = [os.path.join(out, job.tag, f"model-{r}") for r in range(world)]
        results.append({"ranks": per_rank, "model_dir": dirs[0], "model_dirs": dirs})
    return results


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _join(procs: list[Any], out: str, timeout_s: float) -> None:
    """Wait for every process; the first failure (or the deadline) raises, naming the rank."""
    deadline = time.monotonic() + timeout_s
    while any(p.is_alive() for p in procs):
        for rank, p in enumerate(procs):
            if p.exitcode not in (None, 0):
                raise RuntimeError(
                    f"worker rank {rank} failed (exit code {p.exitcode}):\n{_error(out, rank)}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"distributed training did not finish within {timeout_s:.0f} s")
        time.sleep(0.05)
    for rank, p in enumerate(procs):
        if p.exitcode != 0:
            raise RuntimeError(f"worker rank {rank} failed (exit code {p.exitcode}):\n{_error(out, rank)}")


def _error(out: str, rank: int) -> str:
    path = os.path.join(out, f"error-{rank}.txt")
    if not os.path.isfile(path):
        return "(no traceback written)"
    with open(path) as f:
        return f.read()
