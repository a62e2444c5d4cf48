"""Lifecycles of the hosting and transform resources, as explicit transition tables over SageMaker's
own statuses (``EndpointStatus``, ``TransformJobStatus``). The runners decide *when* to move; these
tables decide *whether* a move is legal. Models and endpoint configs have no status: they are
immutable records, created and deleted."""

from __future__ import annotations

from enum import StrEnum

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

TABLES: dict[str, dict[str, frozenset[str]]] = {
    "endpoint": ENDPOINT_ALLOWED,
    "transform-job": TRANSFORM_ALLOWED,
    "hyper-parameter-tuning-job": TRANSFORM_ALLOWED,  # tuning jobs move as transform jobs do
}


def check_transition(kind: str, name: str, current: str, new: str) -> None:
    """Raise IllegalTransition (a ValidationException) unless ``kind`` may move ``current`` -> ``new``."""
    allowed = TABLES[kind][current]
    if new not in allowed:
        can = ", ".join(sorted(allowed)) or "nothing (it has ended)"
        raise IllegalTransition(
            f"{kind} {name!r} is {current}: it cannot become {new}; from {current} it can become {can}"
        )
