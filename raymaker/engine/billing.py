"""GetResourceCost (raymaker's own): what a training or transform job cost, per second with no
minimum, at its instance type's hourly price from the cluster definition."""

from __future__ import annotations

from typing import Any

from raymaker.engine.context import Engine
from raymaker.engine.kinds import Kind
from raymaker.engine.training_jobs import training_job_cost
from raymaker.engine.transform_jobs import transform_job_cost
from raymaker.protocol.errors import ValidationError


def get_resource_cost(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    kind, _, name = arn.rpartition(":")[2].partition("/")
    if kind == Kind.TRAINING_JOB:
        return training_job_cost(engine.store.get_training_job(name))
    if kind == Kind.TRANSFORM_JOB:
        return transform_job_cost(engine.resources.get(Kind.TRANSFORM_JOB, name))
    raise ValidationError(
        f"ResourceArn {arn!r}: costs are kept for training jobs and transform jobs; give the ARN of one"
    )


OPERATIONS = {"GetResourceCost": get_resource_cost}
