"""What a training job's instances receive: the validated spec as a ``WorkerJob`` (workers never
re-parse the request), and where rank 0 writes ``model.tar.gz``.

(Multi-instance jobs ran on Ray Train here until its fixed cost, 8-13 s of controller and worker-group
start on every ``fit()``, was replaced by warm instance groups: see ``instance_group``.)"""

from __future__ import annotations

from raymaker.engine.arns import training_job_arn
from raymaker.engine.validation import TrainingJobSpec
from raymaker.engine.worker import WorkerJob


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
        seed=_seed(spec),
        assumed_content_types=spec.assumed_content_types,
        script=spec.script,
        arn=training_job_arn(spec.name),
        instance_type=spec.instance_type.name,
        num_cpus=float(spec.instance_type.cpus or 0),
        num_gpus=float(spec.instance_type.gpus or 0),
        environment=dict(spec.environment),
        checkpoint=dict(spec.request.get("CheckpointConfig") or {}) or None,
        keep_alive_seconds=spec.keep_alive_seconds,
        container=spec.container,
        memory_gb=float(spec.instance_type.memory_gb or 0),
    )


def _seed(spec: TrainingJobSpec) -> int:
    try:  # a script's hyperparameters are its own (JSON strings): any seed there is not ours
        return int((spec.request.get("HyperParameters") or {}).get("seed", 0) or 0)
    except ValueError:
        return 0
