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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import TrainContext, TrainingData
from raymaker.engine.channel_data import worker_training_data
from raymaker.io.batch import DataFormatError
from raymaker.io.channels import Channel
from raymaker.io.storage import S3Settings, storage_for

MODEL_CHANNEL = "model"  # SageMaker's channel for incremental training: an earlier model.tar.gz
FINAL_FLUSH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WorkerJob:
    """What the code running a job receives: the validated request, already parsed (typed
    hyperparameters with defaults, channels with their content types), so workers never re-validate."""

    name: str
    algorithm: str
    hyperparameters: dict[str, Any]
    channels: tuple[Channel, ...]
    model_uri: str
    seed: int = 0
    # Channels whose ContentType the request left out (the algorithm's default was assumed): a parse
    # error on them says so, and how to set another.
    assumed_content_types: frozenset[str] = field(default_factory=frozenset)


class JobEvents:
    """How a job's code reaches its runner (the job service). Metrics and log lines are buffered and
    sent in one fire-and-forget call every ``FLUSH_S`` seconds by a background thread, so reporting
    never waits and costs one message per interval, not one per round; phase changes flush first, and
    the service handles one sender's calls in the order sent."""

    FLUSH_S = 0.25

    def __init__(self, service: Any, job_name: str):
        self._service = service
        self.job = job_name
        self._init_buffers()

    def _init_buffers(self) -> None:
        self._metrics: list[tuple[str, float, int | None, float]] = []
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_service": self._service, "job": self.job}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_buffers()

    def metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        now = time.time()  # the worker's clock stamps the values
        with self._lock:
            self._metrics.extend((k, float(v), step, now) for k, v in metrics.items())
        self._start_flusher()

    def logs(self, lines: list[str]) -> None:
        with self._lock:
            self._lines.extend(lines)
        self._start_flusher()

    def phase(self, phase: str, restarted: bool = False) -> None:
        self.flush()
        self._service.set_phase.remote(self.job, phase, restarted)

    def controller(self, handle: Any) -> None:
        self._service.set_controller.remote(self.job, handle)

    def flush(self, wait: bool = False) -> None:
        """Send what is buffered. Sent under the lock, so calls leave in order (the flusher thread's
        and this one's); with ``wait``, return once the service has stored everything sent so far,
        so the job's final metrics are complete when its code returns."""
        with self._lock:
            metrics, lines = self._metrics, self._lines
            self._metrics, self._lines = [], []
            ref = self._service.report.remote(self.job, metrics, lines) if metrics or lines or wait else None
        if wait and ref is not None:
            import ray

            try:
                ray.get(ref, timeout=FINAL_FLUSH_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - the job's own outcome matters more than its last metrics
                print(f"raymaker: the job's last metrics may be missing: {e}", flush=True)

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, daemon=True, name="raymaker-events")
            self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()


class _EventsContext(TrainContext):
    events: JobEvents | None = None

    def report(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        if self.rank == 0 and self.events is not None:
            self.events.metrics(metrics, step)

    def log(self, message: str) -> None:
        print(message, flush=True)
        if self.rank == 0 and self.events is not None:
            self.events.logs([message])


class RayTrainContext(_EventsContext):
    """A worker of a multi-instance job under Ray Train: checkpoints go through ``ray.train.report``."""

    def __init__(self, events: JobEvents | None, seed: int):
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.seed = seed
        self.events = events
        self._checkpoint_dirs: list[str] = []

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

    def cleanup(self) -> None:
        for path in self._checkpoint_dirs:
            shutil.rmtree(path, ignore_errors=True)


class InstanceContext(_EventsContext):
    """A single-instance job in a (warm) instance actor. Checkpoints are files in a local directory,
    which a replacement instance on this node resumes from; with a ``CheckpointConfig.S3Uri`` each one is
    also written there (one archive object, replaced atomically) and read back when the local copy is
    missing, as SageMaker syncs /opt/ml/checkpoints."""

    ARCHIVE = "raymaker-checkpoint.tar.gz"

    def __init__(
        self,
        events: JobEvents | None,
        seed: int,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
        settings: S3Settings | None = None,
    ):
        self.rank, self.world_size, self.seed = 0, 1, seed
        self.events = events
        self.checkpoint_dir = checkpoint_dir
        self.archive_uri = f"{checkpoint_uri.rstrip('/')}/{self.ARCHIVE}" if checkpoint_uri else None
        self.settings = settings

    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        latest = os.path.join(self.checkpoint_dir, "latest")
        staging = os.path.join(self.checkpoint_dir, f".staging-{step}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(state_dir, staging)
        old = latest + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(latest):
            os.replace(latest, old)
        os.replace(staging, latest)  # a crash mid-save leaves the previous checkpoint intact
        shutil.rmtree(old, ignore_errors=True)
        if self.archive_uri:
            upload_tar_gz(latest, self.archive_uri, self.settings)

    def load_checkpoint(self) -> str | None:
        latest = os.path.join(self.checkpoint_dir, "latest")
        if not os.path.isdir(latest) and self.archive_uri:
            storage = storage_for(self.archive_uri, self.settings)
            try:
                data = storage.read_bytes(self.archive_uri)
            except FileNotFoundError:
                return None
            import io

            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(latest, filter="data")
        return latest if os.path.isdir(latest) else None

    def cleanup(self) -> None:
        pass


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


def upload_tar_gz(directory: str, uri: str, settings: S3Settings | None) -> int:
    """Write a directory's files as a gzipped tar at ``uri`` (model.tar.gz, checkpoint archives); returns its size."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "archive.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for name in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, name), arcname=name)
        storage_for(uri, settings).upload(archive, uri)
        return os.path.getsize(archive)


def run_training(
    job: WorkerJob,
    ctx: RayTrainContext | InstanceContext,
    settings: S3Settings | None,
    *,
    shard_for: Callable[[str], Any] | None,
    resumed: bool,
) -> dict[str, float]:
    """The body of every training job on one worker: channels, the algorithm, and (rank 0) the model."""
    algo_cls = get_algorithm(job.algorithm)
    root = tempfile.mkdtemp(prefix=f"raymaker-{job.name}-")
    try:
        data_channels = [c for c in job.channels if c.name != MODEL_CHANNEL]
        data = worker_training_data(
            data_channels,
            {c.name: c.content_type or algo_cls.default_content_type for c in data_channels},
            root,
            num_workers=ctx.world_size,
            rank=ctx.rank,
            settings=settings,
            shard_for=shard_for,
        )
        model_channel = next((c for c in job.channels if c.name == MODEL_CHANNEL), None)
        if model_channel is not None:
            data = TrainingData(
                {**data.channels, MODEL_CHANNEL: _model_channel(model_channel, settings, root)}
            )
        if ctx.rank == 0:
            ctx.log(f"raymaker worker 0 of {ctx.world_size}: pid {os.getpid()}, algorithm {job.algorithm}")
            if ctx.events is not None:
                ctx.events.phase("Training", restarted=resumed)
        model_dir = os.path.join(root, "model")
        os.makedirs(model_dir, exist_ok=True)
        try:
            final = algo_cls().train(dict(job.hyperparameters), data, ctx, model_dir)
        except DataFormatError as e:
            raise _with_assumed_content_type(e, job) from e
        if ctx.rank == 0:
            if ctx.events is not None:
                ctx.events.phase("Uploading")
            size = upload_tar_gz(model_dir, job.model_uri, settings)
            ctx.log(f"Uploaded model.tar.gz ({size} bytes) to {job.model_uri}")
        return {k: float(v) for k, v in (final or {}).items()}
    finally:
        if ctx.events is not None:
            ctx.events.flush(wait=True)  # FinalMetricDataList is read from the store right after
        shutil.rmtree(root, ignore_errors=True)
        ctx.cleanup()


def _with_assumed_content_type(error: DataFormatError, job: WorkerJob) -> DataFormatError:
    """A parse error on a channel whose ContentType was left out says which one was assumed."""
    assumed = [c for c in job.channels if c.name in job.assumed_content_types]
    if not assumed:
        return error
    which = ", ".join(f"{c.name!r} as {c.content_type}" for c in assumed)
    return DataFormatError(
        f"{error} -- the request gave no ContentType for channel(s) {which}, so {job.algorithm}'s "
        "default was assumed: set the channel's ContentType (e.g. TrainingInput(s3_data, "
        "content_type='text/csv')) if the data is in another format"
    )


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, float]:
    """The Ray Train ``train_loop_per_worker`` of multi-instance jobs."""
    import ray.train

    job: WorkerJob = config["job"]
    ctx = RayTrainContext(config.get("events"), seed=job.seed)
    # A checkpoint at start means Ray Train restarted the workers after a failure.
    resumed = ray.train.get_checkpoint() is not None
    return run_training(
        job, ctx, config.get("settings"), shard_for=ray.train.get_dataset_shard, resumed=resumed
    )
