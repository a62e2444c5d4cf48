"""GetResourceLogs (raymaker's own): the log lines of any resource by its ARN. A training job's are its
job log; a transform job's, an endpoint's or a tuning job's say what the job service did for it
(waiting for resources, taking it over after a restart)."""

from __future__ import annotations

from typing import Any

from raymaker.engine.context import Engine
from raymaker.engine.kinds import Kind
from raymaker.engine.store import log_key
from raymaker.engine.training_jobs import log_page
from raymaker.protocol.errors import ValidationError


def get_resource_logs(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    arn = params["ResourceArn"]
    kind_name, _, name = arn.rpartition(":")[2].partition("/")
    try:
        kind = Kind(kind_name)
    except ValueError:
        raise ValidationError(
            f"ResourceArn {arn!r} names no kind of resource raymaker keeps: give the ARN of one of "
            f"{', '.join(k.noun for k in Kind)}"
        ) from None
    if kind == Kind.TRAINING_JOB:
        engine.store.get_training_job(name)
    else:
        engine.resources.get(kind, name)
    return log_page(engine.store, log_key(kind, name), params)


OPERATIONS = {"GetResourceLogs": get_resource_logs}
