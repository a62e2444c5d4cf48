"""What runs inside each instance of a custom container's training job: ``<image> train`` on this
node's container runtime (``raymaker.toolkit.container``), around it what every user's process gets
(``script_job.run_host_job``: the ``/opt/ml`` tree, channels, checkpoints, the job's log and metrics,
outputs merged from every host), and the checks made before any work (``require_image``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from raymaker.containers.runtime import ContainerRuntimeError, Runtime, find_runtime
from raymaker.engine.script_job import HostLog, HostMetrics, Staging, host_names, run_host_job
from raymaker.io.storage import S3Settings
from raymaker.protocol.errors import ValidationError
from raymaker.toolkit.container import ContainerRun, run_container
from raymaker.toolkit.paths import MLTree


def require_image(image: str, *, gpus: int = 0, field: str = "AlgorithmSpecification.TrainingImage") -> Runtime:
    """Refuse, before any work, a custom image this node's runtime cannot run: no runtime, no GPU
    support for a GPU instance type, an image neither here nor pullable. Returns the runtime."""
    try:
        runtime = find_runtime()
    except ContainerRuntimeError as e:
        raise ValidationError(f"{field} {image!r} is a custom container, but {e}") from None
    if gpus and not runtime.has_gpu_support():
        raise ValidationError(
            f"{field} {image!r} asks for an instance type with {gpus} GPU(s), but {runtime.name} on this node "
            "cannot give containers GPUs: install the NVIDIA Container Toolkit (podman: `nvidia-ctk cdi "
            "generate --output=/etc/cdi/nvidia.yaml`; docker: the nvidia runtime), or use a CPU instance type"
        )
    try:
        runtime.ensure_image(image)
    except ContainerRuntimeError as e:
        raise ValidationError(f"{field}: {e}") from None
    return runtime


def container_run(job: Any, rank: int, world_size: int, addresses: Mapping[str, str], gpus: tuple) -> ContainerRun:
    """This instance's view of the job: its host name, every host's address, its limits."""
    container = job.container
    hosts = host_names(world_size)
    return ContainerRun(
        job_name=job.name,
        job_arn=job.arn,
        image=container.image,
        hyperparameters=dict(job.hyperparameters),
        channels=tuple(job.channels),
        environment=dict(job.environment),
        metric_definitions=tuple(container.metric_definitions),
        instance_type=job.instance_type,
        hosts=hosts,
        current_host=hosts[rank],
        addresses=dict(addresses),
        cpus=job.num_cpus or None,
        memory_mib=int(job.memory_gb * 1024) if job.memory_gb else None,
        gpus=tuple(gpus),
        checkpoint=job.checkpoint,
        entrypoint=tuple(container.entrypoint),
        arguments=tuple(container.arguments),
    )


def run_container_job(job: Any, ctx: Any, settings: S3Settings | None, *, resumed: bool) -> dict[str, float]:
    """Run the job's image on this instance; raises ``ScriptError`` (its FailureReason) when the
    container fails. Returns the last value of each metric the MetricDefinitions matched."""
    import ray

    addresses = dict(ctx.rendezvous) or {"algo-1": ray.util.get_node_ip_address()}
    run = container_run(job, ctx.rank, ctx.world_size, addresses, ctx.gpus)
    try:
        runtime = find_runtime()
        runtime.ensure_image(run.image)  # on this node: it may not have been pulled here yet
    except ContainerRuntimeError as e:
        from raymaker.toolkit.runner import ScriptError

        raise ScriptError(f"ClientError: {e}") from None

    def execute(tree: MLTree, on_log: HostLog, on_metrics: HostMetrics, staged: Staging) -> None:
        on_log(f"raymaker: {run.current_host} of {len(run.hosts)} runs {run.image} (instance pid {os.getpid()})")
        run_container(run, tree, runtime, on_log=on_log, on_metrics=on_metrics, stop=ctx.stop, stage_data=staged)

    return run_host_job(job, ctx, settings, resumed=resumed, hosts=run.hosts, execute=execute)


__all__ = ["container_run", "require_image", "run_container_job"]
