"""What runs inside each Ray Train worker of a training job: build the worker's channels, run the
algorithm, and (rank 0) package ``model.tar.gz`` into ``<output_path>/<job>/output/``.

Metrics and log lines go to the job's runner actor with fire-and-forget calls, so reporting never
paces the training loop (``ray.train.report`` blocks on the controller's poll); ``ray.train.report`` is
used only for checkpoints, where Ray Train's bookkeeping is the point.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import TrainContext, TrainingData
from raymaker.engine.channel_data import worker_training_data
from raymaker.io.channels import Channel
from raymaker.io.storage import S3Settings, storage_for

MODEL_CHANNEL = "model"  # SageMaker's channel for incremental training: an earlier model.tar.gz


class RayTrainContext(TrainContext):
    def __init__(self, runner: Any, seed: int):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.seed = seed
        self._runner = runner
        self._checkpoint_dirs: list[str] = []

    def report(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        if self.rank == 0 and self._runner is not None:
            # The worker's clock stamps the values: the runner may handle reports out of order.
            self._runner.report_metrics.remote({k: float(v) for k, v in metrics.items()}, step, time.time())

    def log(self, message: str) -> None:
        print(message, flush=True)
        if self.rank == 0 and self._runner is not None:
            self._runner.append_logs.remote([message])

    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        import ray.train

        # A barrier: every rank reports; rank 0's files are the checkpoint.
        checkpoint = ray.train.Checkpoint.from_directory(state_dir) if self.rank == 0 else None
        ray.train.report({"step": step}, checkpoint=checkpoint)

    def load_checkpoint(self) -> str | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        path = tempfile.mkdtemp(prefix="raymaker-ckpt-")
        self._checkpoint_dirs.append(path)
        checkpoint.to_directory(path)
        return path


def _model_channel(channel: Channel, settings: S3Settings | None, root: str) -> str:
    """Download and unpack an earlier model.tar.gz (the ``model`` channel) into a directory."""
    storage = storage_for(channel.s3_uri, settings)
    objects = [o for o in storage.list(channel.s3_uri) if o.key.endswith(".tar.gz")]
    if len(objects) != 1:
        raise ValueError(
            f"the 'model' channel must hold exactly one model.tar.gz; {channel.s3_uri} has {len(objects)}"
        )
    dest = os.path.join(root, "model-in")
    archive = os.path.join(root, "model-in.tar.gz")
    storage.download(objects[0].uri, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def package_model(model_dir: str, uri: str, settings: S3Settings | None) -> int:
    """Write ``model_dir``'s files as a gzipped tar at ``uri``; returns its size in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "model.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for name in sorted(os.listdir(model_dir)):
                tar.add(os.path.join(model_dir, name), arcname=name)
        storage_for(uri, settings).upload(archive, uri)
        return os.path.getsize(archive)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    """The Ray Train ``train_loop_per_worker`` of every training job."""
    import ray.train

    job = config["job"]
    runner = config.get("runner")
    settings: S3Settings | None = config.get("settings")
    algo_cls = get_algorithm(job["algorithm"])
    hp = algo_cls.validate_hyperparameters(job["hyperparameters"])
    ctx = RayTrainContext(runner, seed=int(job.get("seed", 0)))
    channels = [Channel.from_request(c, default_input_mode=job["input_mode"]) for c in job["channels"]]
    root = tempfile.mkdtemp(prefix=f"raymaker-{job['name']}-")
    try:
        data_channels = [c for c in channels if c.name != MODEL_CHANNEL]
        data = worker_training_data(
            data_channels,
            {c.name: c.content_type or algo_cls.default_content_type for c in data_channels},
            root,
            num_workers=ctx.world_size,
            rank=ctx.rank,
            settings=settings,
            shard_for=ray.train.get_dataset_shard,
        )
        model_channel = next((c for c in channels if c.name == MODEL_CHANNEL), None)
        if model_channel is not None:
            data = TrainingData(
                {**data.channels, MODEL_CHANNEL: _model_channel(model_channel, settings, root)}
            )
        if ctx.rank == 0:
            ctx.log(f"raymaker worker 0 of {ctx.world_size}: pid {os.getpid()}, algorithm {job['algorithm']}")
            if runner is not None:
                # A checkpoint at start means Ray Train restarted the workers after a failure.
                runner.set_phase.remote("Training", restarted=ray.train.get_checkpoint() is not None)
        model_dir = os.path.join(root, "model")
        os.makedirs(model_dir, exist_ok=True)
        final = algo_cls().train(hp, data, ctx, model_dir)
        if ctx.rank == 0:
            if runner is not None:
                runner.set_phase.remote("Uploading")
            size = package_model(model_dir, job["model_uri"], settings)
            ctx.log(f"Uploaded model.tar.gz ({size} bytes) to {job['model_uri']}")
        return {k: float(v) for k, v in (final or {}).items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for path in ctx._checkpoint_dirs:
            shutil.rmtree(path, ignore_errors=True)
