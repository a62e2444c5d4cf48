"""Lifecycles of endpoints, transform jobs and tuning jobs, as explicit transition tables over
SageMaker's own statuses (``EndpointStatus``, ``TransformJobStatus``, ``HyperParameterTuningJobStatus``;
training jobs have theirs in ``states``). The runners decide *when* to move; these
tables decide *whether* a move is legal. Models and endpoint configs have no status: they are
immutable records, created and deleted."""

from __future__ import annotations

from enum import StrEnum

from raymaker.engine.kinds import Kind
from raymaker.engine.states import IllegalTransition


class EndpointStatus(StrEnum):
    CREATING = "Creating"
    IN_SERVICE = "InService"
    UPDATING = "Updating"
    DELETING = "Deleting"
    FAILED = "Failed"


class TransformJobStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class TuningJobStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


E = EndpointStatus
T = TransformJobStatus

ENDPOINT_ALLOWED: dict[str, frozenset[str]] = {
    E.CREATING: frozenset({E.IN_SERVICE, E.FAILED, E.DELETING}),
    # An update that fails rolls back: the endpoint stays InService on its previous config.
    E.IN_SERVICE: frozenset({E.UPDATING, E.DELETING}),
    E.UPDATING: frozenset({E.IN_SERVICE, E.FAILED, E.DELETING}),
    E.FAILED: frozenset({E.DELETING, E.UPDATING}),
    E.DELETING: frozenset(),
}

TRANSFORM_ALLOWED: dict[str, frozenset[str]] = {
    T.IN_PROGRESS: frozenset({T.COMPLETED, T.FAILED, T.STOPPING}),
    T.STOPPING: frozenset({T.STOPPED, T.COMPLETED, T.FAILED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.STOPPED: frozenset(),
}

U = TuningJobStatus

TUNING_ALLOWED: dict[str, frozenset[str]] = {
    # A tuning job whose trials have all ended may still be Stopping (a stop arrived at the end).
    U.IN_PROGRESS: frozenset({U.COMPLETED, U.FAILED, U.STOPPING}),
    U.STOPPING: frozenset({U.STOPPED, U.FAILED}),
    U.COMPLETED: frozenset(),
    U.FAILED: frozenset(),
    U.STOPPED: frozenset(),
}

# Models and endpoint configs have no status: they are created and deleted, never moved.
TABLES: dict[str, dict[str, frozenset[str]]] = {
    Kind.ENDPOINT: ENDPOINT_ALLOWED,
    Kind.TRANSFORM_JOB: TRANSFORM_ALLOWED,
    Kind.TUNING_JOB: TUNING_ALLOWED,
}

# Statuses in which a resource still needs its runner (the job service) to move it on.
ACTIVE: dict[str, frozenset[str]] = {
    Kind.ENDPOINT: frozenset({E.CREATING, E.UPDATING, E.DELETING}),
    Kind.TRANSFORM_JOB: frozenset({T.IN_PROGRESS, T.STOPPING}),
    Kind.TUNING_JOB: frozenset({U.IN_PROGRESS, U.STOPPING}),
}


def check_transition(kind: str, name: str, current: str, new: str) -> None:
    """Raise IllegalTransition (a ValidationException) unless ``kind`` may move ``current`` -> ``new``."""
    allowed = TABLES[kind][current]
    if new not in allowed:
        can = ", ".join(sorted(allowed)) or "nothing (it has ended)"
        raise IllegalTransition(
            f"{Kind(kind).noun} {name!r} is {current}: it cannot become {new}; from {current} it can become {can}"
        )
