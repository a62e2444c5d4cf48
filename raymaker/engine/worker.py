"""What runs inside each instance of a training job: build the instance's channels, run the algorithm,
and (rank 0) package ``model.tar.gz`` into ``<output_path>/<job>/output/``.

An instance is an ``instances.InstanceActor``: alone (one-instance jobs) or rank r of an instance group
(``instance_group``), where the job's collective is set up here per job (``collective``: xgboost's
Rabit communicator, or a ``torch.distributed`` gloo process group) and torn down after it, so a warm
group can take the next job.

Metrics and log lines go to the job service with fire-and-forget calls, so reporting never paces the
training loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import TrainContext, TrainingData
from raymaker.engine.channel_data import worker_training_data
from raymaker.io.batch import DataFormatError
from raymaker.io.channels import Channel
from raymaker.io.storage import S3Settings, storage_for
from raymaker.metrics.catalog import enabled as metrics_enabled
from raymaker.metrics.recorder import training_host

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
    # A script-mode job (``validation.ScriptSpec``), and what its training toolkit needs beyond that.
    script: Any = None
    arn: str = ""
    instance_type: str = ""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    environment: dict[str, str] = field(default_factory=dict)
    checkpoint: dict[str, str] | None = None  # CheckpointConfig (S3Uri, LocalPath)
    keep_alive_seconds: int = 0  # ResourceConfig.KeepAlivePeriodInSeconds: the instance stays warm
    container: Any = None  # a custom container's job (``validation.ContainerSpec``)
    memory_gb: float = 0.0  # the instance type's memory: a container's limit (0: none)


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

    @property
    def service(self) -> Any:
        """The job service's handle."""
        return self._service

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


class InstanceContext(_EventsContext):
    """A job's code in one (warm) instance actor. Checkpoints are files in a local directory, which a
    replacement instance on this node resumes from; with a checkpoint URI (S3) each one is also written
    there (one archive object, replaced atomically) and read back when the local copy is missing, as
    SageMaker syncs /opt/ml/checkpoints.

    In an instance group (``world_size`` > 1) rank 0 alone writes checkpoints, and every rank starts
    from the same one: ``start_checkpoint``, the archive rank 0 read before the job started
    (``checkpoint_archive``), or None for a fresh start."""

    ARCHIVE = "raymaker-checkpoint.tar.gz"

    def __init__(
        self,
        events: JobEvents | None,
        seed: int,
        checkpoint_dir: str,
        checkpoint_uri: str | None = None,
        settings: S3Settings | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        start_checkpoint: bytes | None = None,
        gpus: tuple[int | str, ...] = (),
        stop: threading.Event | None = None,
        rendezvous: Mapping[str, str] | None = None,
    ):
        self.rank, self.world_size, self.seed = rank, world_size, seed
        # A script's: set when the job is stopped; torchrun's MASTER_ADDR / MASTER_PORT for its ranks.
        self.stop = stop or threading.Event()
        self.rendezvous = dict(rendezvous or {})
        self.gpus = tuple(gpus)
        self.events = events
        self.checkpoint_dir = checkpoint_dir
        self.archive_uri = f"{checkpoint_uri.rstrip('/')}/{self.ARCHIVE}" if checkpoint_uri else None
        self.settings = settings
        self._start_checkpoint = start_checkpoint
        self._unpacked: str | None = None

    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        if self.rank != 0:
            return  # rank 0's files are the checkpoint
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
        if self.world_size > 1:
            return self._shared_checkpoint()
        latest = os.path.join(self.checkpoint_dir, "latest")
        if not os.path.isdir(latest) and self.archive_uri:
            storage = storage_for(self.archive_uri, self.settings)
            try:
                data = storage.read_bytes(self.archive_uri)
            except FileNotFoundError:
                return None
            _untar(data, latest)
        return latest if os.path.isdir(latest) else None

    def _shared_checkpoint(self) -> str | None:
        if self._start_checkpoint is None:
            return None
        if self._unpacked is None:
            self._unpacked = tempfile.mkdtemp(prefix="raymaker-ckpt-")
            _untar(self._start_checkpoint, self._unpacked)
        return self._unpacked

    def cleanup(self) -> None:
        if self._unpacked is not None:
            shutil.rmtree(self._unpacked, ignore_errors=True)
            self._unpacked = None


def _untar(data: bytes, dest: str) -> None:
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def checkpoint_archive(
    checkpoint_dir: str, checkpoint_uri: str | None, settings: S3Settings | None
) -> bytes | None:
    """The latest checkpoint of a job (its local directory, else the archive at ``checkpoint_uri``) as
    gzipped tar bytes, or None: what an instance group's rank 0 reads once and every rank starts from."""
    latest = InstanceContext(None, 0, checkpoint_dir, checkpoint_uri, settings).load_checkpoint()
    if latest is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "checkpoint.tar.gz")
        _tar_gz(latest, archive)
        with open(archive, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class GroupStart:
    """What rank 0 of an instance group prepares for a job and every rank receives: how to join the
    job's collective (``collective`` "xgboost": xgboost's tracker arguments; "torch": a gloo
    ``init_method`` URL; None: no collective) and the checkpoint the job starts from."""

    collective: str | None
    address: Any = None
    checkpoint: bytes | None = None


@contextlib.contextmanager
def collective(start: GroupStart, rank: int, world_size: int) -> Iterator[None]:
    """This rank in the job's collective for the duration of the job, as Ray Train's backends set it
    up: xgboost's Rabit communicator (ranks sorted by task id, so xgboost's rank is ours), or a
    ``torch.distributed`` gloo process group (destroyed afterwards, so the process can join the next
    job's)."""
    if start.collective == "xgboost" and world_size > 1:
        from xgboost.collective import CommunicatorContext

        with CommunicatorContext(**start.address, dmlc_task_id=f"raymaker-rank-{rank:08}"):
            yield
    elif start.collective == "torch" and world_size > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=start.address, rank=rank, world_size=world_size)
        try:
            yield
        finally:
            dist.destroy_process_group()
    else:
        yield


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
        _tar_gz(directory, archive)
        storage_for(uri, settings).upload(archive, uri)
        return os.path.getsize(archive)


def _tar_gz(directory: str, archive: str) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, name), arcname=name)


def run_training(
    job: WorkerJob,
    ctx: InstanceContext,
    settings: S3Settings | None,
    *,
    shard_for: Callable[[str], Any] | None,
    resumed: bool,
    join: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, float]:
    """The body of every training job on one worker: channels, the algorithm, and (rank 0) the model.

    ``join`` enters the job's collective (``collective``) around the algorithm alone: joining waits
    for every rank and for the collective's library, whose import (started when the instance did)
    then overlaps this rank's download.

    While it runs, the instance's CPU, memory and GPU use go to CloudWatch's /aws/sagemaker/TrainingJobs
    gauges under ``Host`` ``<job>/algo-<rank + 1>`` (unless ``RAYMAKER_METRICS=off``)."""
    with training_host(
        f"{job.name}/algo-{ctx.rank + 1}",
        memory_gb=job.memory_gb,
        gpus=ctx.gpus,
        on=metrics_enabled(job.environment),
    ):
        return _run_training(job, ctx, settings, shard_for=shard_for, resumed=resumed, join=join)


def _run_training(
    job: WorkerJob,
    ctx: InstanceContext,
    settings: S3Settings | None,
    *,
    shard_for: Callable[[str], Any] | None,
    resumed: bool,
    join: Callable[[], contextlib.AbstractContextManager[Any]] | None,
) -> dict[str, float]:
    if job.container is not None:
        from raymaker.engine.container_job import run_container_job

        return run_container_job(job, ctx, settings, resumed=resumed)
    if job.script is not None:
        from raymaker.engine.script_job import run_script_job

        return run_script_job(job, ctx, settings, resumed=resumed)
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
        line = f"raymaker worker {ctx.rank} of {ctx.world_size}: pid {os.getpid()}, algorithm {job.algorithm}"
        if ctx.rank == 0:
            ctx.log(line)
            if ctx.events is not None:
                ctx.events.phase("Training", restarted=resumed)
        elif ctx.events is not None:  # every instance of a group says where it runs
            print(line, flush=True)
            ctx.events.logs([line])
        model_dir = os.path.join(root, "model")
        os.makedirs(model_dir, exist_ok=True)
        try:
            with join() if join is not None else contextlib.nullcontext():
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
