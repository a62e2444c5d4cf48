"""The training job lifecycle as an explicit state machine over SageMaker's own states.

``SecondaryStatus`` is the state; ``TrainingJobStatus`` is derived from it by SageMaker's documented
mapping; ``ALLOWED`` is the whole transition table. ``transition`` is the only way to move: it checks
the table and maintains ``SecondaryStatusTransitions`` (closing the open entry's EndTime). The runner
decides *when* to move (with ``policies``) but never *whether* a move is legal.

Times in records are epoch seconds (floats, UTC); ``training_jobs.describe_training_job`` turns them into
datetimes for the API response.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from raymaker.protocol.errors import ValidationError


class TrainingJobStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class SecondaryStatus(StrEnum):
    STARTING = "Starting"
    DOWNLOADING = "Downloading"
    TRAINING = "Training"
    UPLOADING = "Uploading"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
    RESTARTING = "Restarting"  # a worker failed; training resumes from the checkpoint (or scratch)
    INTERRUPTED = "Interrupted"  # capacity taken away (SageMaker: spot interruption)


S = SecondaryStatus

# SageMaker's documented SecondaryStatus -> TrainingJobStatus mapping.
PRIMARY: dict[SecondaryStatus, TrainingJobStatus] = {
    S.STARTING: TrainingJobStatus.IN_PROGRESS,
    S.DOWNLOADING: TrainingJobStatus.IN_PROGRESS,
    S.TRAINING: TrainingJobStatus.IN_PROGRESS,
    S.UPLOADING: TrainingJobStatus.IN_PROGRESS,
    S.RESTARTING: TrainingJobStatus.IN_PROGRESS,
    S.INTERRUPTED: TrainingJobStatus.IN_PROGRESS,
    S.COMPLETED: TrainingJobStatus.COMPLETED,
    S.FAILED: TrainingJobStatus.FAILED,
    S.STOPPING: TrainingJobStatus.STOPPING,
    S.STOPPED: TrainingJobStatus.STOPPED,
    S.MAX_RUNTIME_EXCEEDED: TrainingJobStatus.STOPPED,
}

TERMINAL: frozenset[SecondaryStatus] = frozenset({S.COMPLETED, S.FAILED, S.STOPPED, S.MAX_RUNTIME_EXCEEDED})

# Every running state can be stopped, can fail, and can run out of time.
_EXITS = frozenset({S.STOPPING, S.FAILED, S.MAX_RUNTIME_EXCEEDED})

# current -> states it may move to. None is "no record yet": a job is born Starting.
ALLOWED: dict[SecondaryStatus | None, frozenset[SecondaryStatus]] = {
    None: frozenset({S.STARTING}),
    S.STARTING: _EXITS | {S.DOWNLOADING, S.TRAINING},
    S.DOWNLOADING: _EXITS | {S.TRAINING, S.RESTARTING, S.INTERRUPTED},
    S.TRAINING: _EXITS | {S.UPLOADING, S.RESTARTING, S.INTERRUPTED},
    # A retry goes back through Starting (as SageMaker's RetryStrategy does) or straight to the data.
    S.RESTARTING: _EXITS | {S.STARTING, S.DOWNLOADING, S.TRAINING},
    S.INTERRUPTED: _EXITS | {S.RESTARTING, S.STARTING},
    S.UPLOADING: _EXITS | {S.COMPLETED},
    # Stopping ends Stopped, or MaxRuntimeExceeded when the clock (not the user) stopped it.
    S.STOPPING: frozenset({S.STOPPED, S.MAX_RUNTIME_EXCEEDED}),
    **{t: frozenset() for t in TERMINAL},
}

# StatusMessage of each new SecondaryStatusTransitions entry (SageMaker's strings where it has them).
STATUS_MESSAGES: dict[SecondaryStatus, str] = {
    S.STARTING: "Starting the training job",
    S.DOWNLOADING: "Downloading input data",
    S.TRAINING: "Training image download completed. Training in progress.",
    S.UPLOADING: "Uploading generated training model",
    S.COMPLETED: "Training job completed",
    S.FAILED: "Training job failed",
    S.STOPPING: "Stopping the training job",
    S.STOPPED: "Training job stopped",
    S.MAX_RUNTIME_EXCEEDED: "Training job stopped: it ran longer than StoppingCondition.MaxRuntimeInSeconds",
    S.RESTARTING: "Restarting training after a worker failure",
    S.INTERRUPTED: "Training interrupted: its workers were lost",
}


class IllegalTransition(ValidationError):
    """A move the table forbids. It is a ValidationException, as SageMaker answers e.g. StopTrainingJob
    on a job that already ended."""


def primary_status(secondary: SecondaryStatus | str) -> TrainingJobStatus:
    """TrainingJobStatus for a SecondaryStatus."""
    return PRIMARY[SecondaryStatus(secondary)]


def is_terminal(secondary: SecondaryStatus | str) -> bool:
    return SecondaryStatus(secondary) in TERMINAL


def can_transition(current: SecondaryStatus | str | None, new: SecondaryStatus | str) -> bool:
    cur = None if current is None else SecondaryStatus(current)
    return SecondaryStatus(new) in ALLOWED[cur]


def transition(
    record_transitions: Sequence[Mapping[str, Any]],
    current: SecondaryStatus | str | None,
    new: SecondaryStatus | str,
    message: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """A new SecondaryStatusTransitions list for moving ``current`` -> ``new`` at ``now`` (epoch s).

    The open entry gets ``EndTime = now``; the new entry is ``{Status, StartTime, StatusMessage}``
    (``message`` or the state's standard one). A terminal entry is closed at once (EndTime = StartTime),
    as SageMaker reports it. Raises IllegalTransition for a move the table forbids, or when ``current``
    is not the last recorded status (a stale read). The input list is not modified."""
    cur = None if current is None else SecondaryStatus(current)
    target = SecondaryStatus(new)
    last = record_transitions[-1]["Status"] if record_transitions else None
    if (None if last is None else SecondaryStatus(last)) != cur:
        raise IllegalTransition(
            f"training job is recorded as {last or 'new'}, not {cur or 'new'}: re-read the job and retry"
        )
    if target not in ALLOWED[cur]:
        if cur in TERMINAL:
            why = f"the training job has already ended ({cur})"
        else:
            allowed = ", ".join(sorted(ALLOWED[cur])) or "nothing"
            why = f"from {cur or 'a new job'} it can only become {allowed}"
        raise IllegalTransition(f"cannot move a training job from {cur or 'new'} to {target}: {why}")
    now = time.time() if now is None else float(now)
    out = [dict(t) for t in record_transitions]
    if out and out[-1].get("EndTime") is None:
        out[-1]["EndTime"] = now
    entry: dict[str, Any] = {
        "Status": str(target),
        "StartTime": now,
        "StatusMessage": message or STATUS_MESSAGES[target],
    }
    if target in TERMINAL:
        entry["EndTime"] = now
    out.append(entry)
    return out
