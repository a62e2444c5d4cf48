"""Run algorithms' ``train`` in real ``torch.distributed`` worker processes (gloo, local TCP), as Ray's
TorchTrainer would: each rank gets its own shard of ``train``; the results come back as files."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.io.batch import Batch


@dataclass
class Job:
    """One training run: every rank trains ``algorithm`` with ``hyperparameters`` on ``shards[rank]``
    (and ``test``, the same on every rank, if given); rank r's model dir is ``<out>/<tag>/model-<r>``."""

    tag: str
    algorithm: str
    hyperparameters: dict[str, str]
    shards: list[Any]
    test: Any = None
    seed: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, jobs: list[Job], out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for job in jobs:
            algo = get_algorithm(job.algorithm)
            ctx = LocalContext(seed=job.seed)
            ctx.rank, ctx.world_size = rank, world
            channels = {"train": Batch(job.shards[rank])}
            if job.test is not None:
                channels["test"] = Batch(job.test)
            model_dir = os.path.join(out, job.tag, f"model-{rank}")
            os.makedirs(model_dir)
            hp = algo.validate_hyperparameters(job.hyperparameters)
            final = algo().train(hp, TrainingData.from_batches(**channels), ctx, model_dir)
            with open(os.path.join(out, job.tag, f"final-{rank}.json"), "w") as f:
                json.dump({"final": final, "reported": ctx.metrics}, f)
    finally:
        dist.destroy_process_group()


def run_distributed(jobs: list[Job], out: str, world: int = 2) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``world`` processes; per job, every rank's ``{"final", "reported"}``."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world, free_port(), jobs, out), nprocs=world, join=True)
    results = []
    for job in jobs:
        per_rank = []
        for r in range(world):
            with open(os.path.join(out, job.tag, f"final-{r}.json")) as f:
                per_rank.append(json.load(f))
        results.append({"ranks": per_rank, "model_dir": os.path.join(out, job.tag, "model-0")})
    return results
