"""Multi-instance training jobs on Ray Train: the trainer for the job's algorithm (XGBoostTrainer,
TorchTrainer, DataParallelTrainer) with a stable run name, a FailureConfig that restarts the worker
group from the latest checkpoint, and Ray Data shards for Pipe channels."""

from __future__ import annotations

from typing import Any

import ray

from raymaker.cluster.capacity import worker_resources
from raymaker.engine.policies import FailureKind, FailurePolicy
from raymaker.engine.validation import TrainingJobSpec
from raymaker.engine.worker import JobEvents, WorkerJob
from raymaker.io.storage import S3Settings


def model_uri(spec: TrainingJobSpec) -> str:
    return f"{spec.output_path.rstrip('/')}/{spec.name}/output/model.tar.gz"


def worker_job(spec: TrainingJobSpec) -> WorkerJob:
    """The validated spec as the code running the job receives it."""
    return WorkerJob(
        name=spec.name,
        algorithm=spec.algorithm,
        hyperparameters=dict(spec.hyperparameters),
        channels=spec.channels,
        model_uri=model_uri(spec),
        seed=int((spec.request.get("HyperParameters") or {}).get("seed", 0) or 0),
        assumed_content_types=spec.assumed_content_types,
    )


@ray.remote(num_cpus=0)
def fit(
    spec: TrainingJobSpec, settings: S3Settings, events: JobEvents, storage_path: str
) -> dict[str, float]:
    """Build the Ray trainer for the job's algorithm and run it; returns rank 0's final metrics."""
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from raymaker.engine.worker import train_loop_per_worker
    from raymaker.io.modes.pipe import ChannelDataConfig

    algo = spec.algorithm_class
    pipe = {c.name: c for c in spec.channels if c.input_mode == "Pipe"}
    data_config = ChannelDataConfig(pipe, settings) if pipe else None
    total_cpus = float(ray.cluster_resources().get("CPU", 1))
    kwargs: dict[str, Any] = dict(
        train_loop_config={"job": worker_job(spec), "events": events, "settings": settings},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.instance_count,
            resources_per_worker=worker_resources(spec.instance_type, spec.instance_count, total_cpus),
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,  # a stable name: a rerun of the job resumes from its checkpoints
            **_train_storage(storage_path, settings),
            # Worker losses restart the worker group from the latest checkpoint, as often as allowed.
            failure_config=ray.train.FailureConfig(
                max_failures=FailurePolicy.from_request(spec.request).retries_allowed(
                    FailureKind.INFRASTRUCTURE
                )
            ),
        ),
    )
    if data_config is not None:
        kwargs.update(datasets=data_config.datasets(), dataset_config=data_config)
    if algo.trainer == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as trainer_cls
    elif algo.trainer == "torch":
        from ray.train.torch import TorchTrainer as trainer_cls
    else:
        trainer_cls = DataParallelTrainer
    result = _abortable(trainer_cls, events)(train_loop_per_worker, **kwargs).fit()
    return dict(result.return_value or {})


def _train_storage(uri: str, settings: S3Settings) -> dict[str, Any]:
    """RunConfig storage arguments for a checkpoint location. S3 goes through the resolved settings'
    pyarrow filesystem, which is pickled to every Train process, so any S3 endpoint works there too."""
    if uri.startswith("s3://"):
        return {"storage_path": uri[len("s3://") :], "storage_filesystem": settings.arrow_filesystem()}
    return {"storage_path": uri[len("file://") :] if uri.startswith("file://") else uri}


def _abortable(trainer_cls: type, events: JobEvents) -> type:
    """The trainer class, handing its Train controller to the job service so that a stop can abort the
    run gracefully: the controller then removes its placement group. (Killing the run instead leaves
    the placement group's CPUs reserved when Ray runs without its dashboard, which Train's own cleaner
    needs.)"""

    class Abortable(trainer_cls):
        def _register_sigint_handler(self, controller: Any) -> None:
            events.controller(controller)
            super()._register_sigint_handler(controller)

    return Abortable
