"""What runs inside each instance of a script-mode training job: the training toolkit's contract
(``raymaker.toolkit``) on this instance's ``/opt/ml`` tree, with the job's channels staged into it,
its checkpoints synced to ``CheckpointConfig.S3Uri``, its output lines sent to the job's log (and
matched against MetricDefinitions), and on success its ``model/`` and ``output/data/`` packaged as
``model.tar.gz`` and ``output.tar.gz``.

In a multi-instance job every instance runs the script as ``algo-<rank+1>``; with a torch
distribution each gets torchrun's variables (MASTER_ADDR / MASTER_PORT from rank 0, WORLD_SIZE, RANK,
LOCAL_RANK, NODE_RANK), so an unchanged ``dist.init_process_group()`` joins the others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from raymaker.io.storage import S3Settings, storage_for
from raymaker.toolkit.artifacts import host_archive_uri, package_outputs, upload_host_outputs
from raymaker.toolkit.checkpoints import CheckpointSync
from raymaker.toolkit.data import stage_channels
from raymaker.toolkit.paths import MLTree
from raymaker.toolkit.runner import ScriptError, ScriptRun, run_script
from raymaker.toolkit.zygote import warm_launcher

DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
HOSTS_UPLOAD_TIMEOUT_S = 600.0  # how long the first host waits for the others' model/ and output/data/
STOP_POLL_S = 0.5  # how often a script's instance asks the job service whether the job is stopping
CHECKPOINT_SYNC_S = 2.0  # how often new checkpoint files go to S3 (a lost instance resumes from the last)


def host_names(world_size: int) -> tuple[str, ...]:
    """SageMaker's names for a job's instances: algo-1, algo-2, ..."""
    return tuple(f"algo-{i + 1}" for i in range(world_size))


def script_run(job: Any, rank: int, world_size: int, rendezvous: Mapping[str, str]) -> ScriptRun:
    """The toolkit's view of this instance of the job."""
    script = job.script
    hosts = host_names(world_size)
    cpus = job.num_cpus or float(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    distribution: dict[str, str] = {}
    if script.distribution and rendezvous:
        distribution = {
            **rendezvous,
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": "0",
            "LOCAL_WORLD_SIZE": "1",
            "NODE_RANK": str(rank),
            "GROUP_RANK": str(rank),
        }
    return ScriptRun(
        job_name=job.name,
        job_arn=job.arn,
        entry_point=script.entry_point,
        submit_directory=script.submit_directory,
        hyperparameters=dict(job.hyperparameters),
        channels=tuple(job.channels),
        environment=dict(job.environment),
        metric_definitions=tuple(script.metric_definitions),
        instance_type=job.instance_type,
        hosts=hosts,
        current_host=hosts[rank],
        num_cpus=max(1, int(cpus)),
        num_gpus=int(job.num_gpus),
        checkpoint=job.checkpoint,
        distribution=distribution,
    )


def run_script_job(
    job: Any, ctx: Any, settings: S3Settings | None, *, resumed: bool
) -> dict[str, float]:
    """Run the job's script on this instance; raises ``ScriptError`` (its FailureReason) when the
    script fails. Returns the last value of each metric the MetricDefinitions matched."""
    run = script_run(job, ctx.rank, ctx.world_size, ctx.rendezvous)

    def execute(tree: MLTree, on_log: HostLog, on_metrics: HostMetrics, staged: Staging) -> None:
        on_log(f"raymaker: running {run.entry_point} as {run.current_host} of {len(run.hosts)} (pid {os.getpid()})")
        # A warm instance keeps the framework imported for its next job (toolkit/zygote); an instance
        # that ends with its job uses a zygote it has but starts none.
        warm = warm_launcher(job.script.framework)
        run_script(run, tree, on_log=on_log, on_metrics=on_metrics, stop=ctx.stop, settings=settings,
                   extra_env=_gpu_env(ctx.gpus), stage_data=staged,
                   warm=warm if warm is None or job.keep_alive_seconds > 0 else _NoWarmUp(warm))

    return run_host_job(job, ctx, settings, resumed=resumed, hosts=run.hosts, execute=execute)


HostLog = Callable[[str], None]
HostMetrics = Callable[[Mapping[str, float]], None]
Staging = Callable[[MLTree], contextlib.AbstractContextManager[Any]]


def run_host_job(
    job: Any,
    ctx: Any,
    settings: S3Settings | None,
    *,
    resumed: bool,
    hosts: tuple[str, ...],
    execute: Callable[[MLTree, HostLog, HostMetrics, Staging], None],
) -> dict[str, float]:
    """What every host of a user's process (a script, a container) does around ``execute``: its
    ``/opt/ml`` tree, channels staged and checkpoints synced (``staged``), its lines into the job's log
    and rank 0's metric values into the job's metrics, a stop from the job service into ``ctx.stop``,
    and on success every host's ``model/`` and ``output/data/`` merged into the job's archives."""
    host = hosts[ctx.rank]
    tree = MLTree(tempfile.mkdtemp(prefix=f"raymaker-{job.name}-{host}-")).make()
    events = ctx.events
    last: dict[str, float] = {}

    def on_log(line: str) -> None:
        if events is not None:  # every host's lines are the job's log (SageMaker: one stream each)
            events.logs([line if ctx.world_size == 1 else f"[{host}] {line}"])

    def on_metrics(values: Mapping[str, float]) -> None:
        if ctx.rank == 0 and values:  # as SageMaker, the job's metrics are its first host's
            last.update(values)
            if events is not None:
                events.metrics(values, None)

    @contextlib.contextmanager
    def staged(tree: MLTree) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                stage_channels(tree, job.channels, rank=ctx.rank, num_hosts=ctx.world_size, settings=settings)
            )
            sync = _checkpoint_sync(job, tree, settings, rank=ctx.rank)
            if sync is not None:
                sync.restore()
                sync.start()
                stack.callback(sync.stop)
            yield

    watching = threading.Event()
    if events is not None:
        threading.Thread(target=_watch_for_stop, args=(events, ctx.stop, watching), daemon=True,
                         name="raymaker-script-stop").start()
    try:
        if events is not None and ctx.rank == 0:
            events.phase("Training", restarted=resumed)
        execute(tree, on_log, on_metrics, staged)
        output_uri = job.model_uri.rsplit("/", 1)[0]
        if ctx.rank == 0 and events is not None:
            events.phase("Uploading")
        if ctx.rank > 0:  # SageMaker merges every host's model/ and output/data/ into one archive each
            upload_host_outputs(tree, output_uri, settings, host=host)
            return last
        others = hosts[1:]
        _wait_for_hosts(output_uri, others, settings)
        uploaded = package_outputs(tree, output_uri, settings, other_hosts=others, host=host)
        model = uploaded["model"]
        on_log(f"raymaker: uploaded model.tar.gz ({model['size']} bytes) to {model['uri']}")
        return last
    finally:
        watching.set()
        if events is not None:
            events.flush(wait=True)
        shutil.rmtree(tree.root, ignore_errors=True)
        ctx.cleanup()


def _watch_for_stop(events: Any, stop: threading.Event, done: threading.Event) -> None:
    """Set ``stop`` (the toolkit then sends SIGTERM, and SIGKILL after the grace) once the job service
    says the job is stopping. The instance asks because it runs one call at a time: a second
    concurrency group to tell it made every job run on a pool thread, which slowed linear-learner's cold
    start by about 1 s here."""
    import ray

    while not done.wait(STOP_POLL_S):
        try:
            if ray.get(events.service.stop_requested.remote(events.job), timeout=30):
                stop.set()
                return
        except Exception:  # noqa: BLE001 - the service is restarting: ask again
            continue


def _wait_for_hosts(output_uri: str, hosts: tuple[str, ...], settings: S3Settings | None) -> None:
    """The other hosts upload their outputs when their scripts end; the first host merges them. A host
    that fails ends the whole job (the group), so this only waits for slower ones."""
    deadline = time.time() + HOSTS_UPLOAD_TIMEOUT_S
    for host in hosts:
        uri = host_archive_uri(output_uri, host, "output")  # written after its model archive
        storage = storage_for(uri, settings)
        while True:
            try:
                storage.stat(uri)
                break
            except FileNotFoundError:
                if time.time() > deadline:
                    raise TimeoutError(f"{host} did not upload its outputs to {uri} within "
                                       f"{HOSTS_UPLOAD_TIMEOUT_S:.0f} s") from None
                time.sleep(0.2)


def _checkpoint_sync(job: Any, tree: MLTree, settings: S3Settings | None, *, rank: int) -> Any:
    """CheckpointConfig.S3Uri <-> the tree's LocalPath (default /opt/ml/checkpoints), for every host as
    SageMaker does (each host's files land in the same prefix; scripts usually save from one host)."""
    config = job.checkpoint or {}
    uri = config.get("S3Uri")
    if not uri:
        return None
    local = tree.local_path(config.get("LocalPath") or DEFAULT_CHECKPOINT_PATH)
    os.makedirs(local, exist_ok=True)
    return CheckpointSync(local, uri, settings, interval_s=CHECKPOINT_SYNC_S)


class _NoWarmUp:
    """A warm launcher that runs jobs from the zygotes it has and starts no new one."""

    def __init__(self, warm: Any):
        self._warm = warm

    def choose(self, *args: Any, **kwargs: Any) -> Any:
        return self._warm.choose(*args, **kwargs)

    def warm_up(self, *args: Any, **kwargs: Any) -> None:
        return None


def _gpu_env(gpus: tuple[int | str, ...]) -> dict[str, str]:
    """The GPUs Ray gave this instance, as the script's CUDA sees them."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus else {}


__all__ = ["ScriptError", "run_host_job", "run_script_job", "script_run"]
