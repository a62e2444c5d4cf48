"""The training job state machine (legal and illegal moves, SecondaryStatusTransitions timestamps)
and the failure / runtime policies."""

from __future__ import annotations

import pytest

from raymaker.engine import states
from raymaker.engine.policies import (
    DEFAULT_INFRASTRUCTURE_RETRIES,
    FailureDecision,
    FailureKind,
    FailurePolicy,
    RuntimeDecision,
    RuntimePolicy,
)
from raymaker.engine.states import (
    ALLOWED,
    TERMINAL,
    IllegalTransition,
)
from raymaker.protocol.errors import ValidationError

S = states.SecondaryStatus
P = states.TrainingJobStatus


def walk(*path: S, start: float = 100.0) -> list[dict]:
    """Transitions for a walk from a new job through ``path``, one second apart."""
    transitions: list[dict] = []
    current = None
    for i, status in enumerate(path):
        transitions = states.transition(transitions, current, status, now=start + i)
        current = status
    return transitions


def test_primary_status_mapping_is_sagemakers() -> None:
    for s in (S.STARTING, S.DOWNLOADING, S.TRAINING, S.UPLOADING, S.RESTARTING, S.INTERRUPTED):
        assert states.primary_status(s) is P.IN_PROGRESS
    assert states.primary_status("Completed") is P.COMPLETED
    assert states.primary_status(S.FAILED) is P.FAILED
    assert states.primary_status(S.STOPPING) is P.STOPPING
    assert states.primary_status(S.STOPPED) is P.STOPPED
    assert states.primary_status(S.MAX_RUNTIME_EXCEEDED) is P.STOPPED
    assert set(states.PRIMARY) == set(S)


def test_values_are_botocores_enums() -> None:
    from raymaker.protocol.service_model import service_model

    model = service_model()
    assert {str(s) for s in S} <= set(model.shape_for("SecondaryStatus").enum)
    assert {str(s) for s in P} <= set(model.shape_for("TrainingJobStatus").enum)


def test_happy_path_timestamps_and_messages() -> None:
    t = walk(S.STARTING, S.DOWNLOADING, S.TRAINING, S.UPLOADING, S.COMPLETED)
    assert [e["Status"] for e in t] == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    for i, e in enumerate(t):
        assert e["StartTime"] == 100.0 + i
        assert e["EndTime"] == (100.0 + i + 1 if i < 4 else 104.0)  # terminal entry closed at once
    assert t[0]["StatusMessage"] == "Starting the training job"
    assert t[1]["StatusMessage"] == "Downloading input data"
    assert t[2]["StatusMessage"] == "Training image download completed. Training in progress."
    assert t[3]["StatusMessage"] == "Uploading generated training model"
    assert t[4]["StatusMessage"] == "Training job completed"


def test_transition_does_not_modify_its_input_and_takes_a_message() -> None:
    before = walk(S.STARTING)
    after = states.transition(before, S.STARTING, S.FAILED, "AlgorithmError: boom", now=200.0)
    assert "EndTime" not in before[0]
    assert after[0]["EndTime"] == 200.0
    assert after[-1] == {
        "Status": "Failed",
        "StartTime": 200.0,
        "StatusMessage": "AlgorithmError: boom",
        "EndTime": 200.0,
    }


def test_worker_failure_restarts_training() -> None:
    t = walk(S.STARTING, S.DOWNLOADING, S.TRAINING, S.RESTARTING, S.TRAINING, S.UPLOADING, S.COMPLETED)
    assert [e["Status"] for e in t][2:5] == ["Training", "Restarting", "Training"]


@pytest.mark.parametrize(
    "running", [S.STARTING, S.DOWNLOADING, S.TRAINING, S.UPLOADING, S.RESTARTING, S.INTERRUPTED]
)
def test_every_running_state_can_stop_fail_or_time_out(running: S) -> None:
    for target in (S.STOPPING, S.FAILED, S.MAX_RUNTIME_EXCEEDED):
        assert states.can_transition(running, target)
    assert states.can_transition(S.STOPPING, S.STOPPED)
    assert states.can_transition(S.STOPPING, S.MAX_RUNTIME_EXCEEDED)


def test_stop_path() -> None:
    t = walk(S.STARTING, S.TRAINING, S.STOPPING, S.STOPPED)
    assert states.primary_status(t[-1]["Status"]) is P.STOPPED
    assert states.is_terminal("Stopped") and not states.is_terminal("Stopping")


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_have_no_exits(terminal: S) -> None:
    assert ALLOWED[terminal] == frozenset()
    for target in S:
        assert not states.can_transition(terminal, target)


@pytest.mark.parametrize(
    "current, new",
    [
        (None, S.TRAINING),  # a job is born Starting
        (S.STARTING, S.COMPLETED),  # completion goes through Uploading
        (S.TRAINING, S.COMPLETED),
        (S.STOPPING, S.TRAINING),  # a stop cannot be undone
        (S.STOPPING, S.COMPLETED),
        (S.TRAINING, S.TRAINING),
        (S.COMPLETED, S.STOPPING),  # stopping a finished job
        (S.FAILED, S.RESTARTING),
    ],
)
def test_illegal_transitions_raise(current: S | None, new: S) -> None:
    history = [] if current is None else [{"Status": str(current), "StartTime": 1.0}]
    with pytest.raises(IllegalTransition) as info:
        states.transition(history, current, new, now=2.0)
    assert isinstance(info.value, ValidationError) and info.value.code == "ValidationException"
    assert f"to {new}" in info.value.message


def test_stopping_a_finished_job_says_why() -> None:
    t = walk(S.STARTING, S.TRAINING, S.UPLOADING, S.COMPLETED)
    with pytest.raises(IllegalTransition, match="already ended"):
        states.transition(t, S.COMPLETED, S.STOPPING)


def test_stale_current_state_is_refused() -> None:
    t = walk(S.STARTING, S.TRAINING)
    with pytest.raises(IllegalTransition, match="re-read"):
        states.transition(t, S.STARTING, S.DOWNLOADING)


def test_all_allowed_targets_are_reachable_from_a_new_job() -> None:
    seen, frontier = set(), [None]
    while frontier:
        for nxt in ALLOWED[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


# ---------------------------------------------------------------------------------------- policies


def test_failure_policy_with_retry_strategy() -> None:
    policy = FailurePolicy.from_request({"RetryStrategy": {"MaximumRetryAttempts": 2}})
    assert policy.max_retries == 2
    assert policy.decide(1, has_checkpoint=True) is FailureDecision.RETRY_FROM_CHECKPOINT
    assert policy.decide(2, has_checkpoint=False) is FailureDecision.RETRY_FROM_SCRATCH
    assert policy.decide(3, has_checkpoint=True) is FailureDecision.FAIL
    # The user asked for retries: errors in the training code are retried too, bad input never.
    assert policy.decide(1, has_checkpoint=False, kind="algorithm") is FailureDecision.RETRY_FROM_SCRATCH
    assert policy.decide(1, has_checkpoint=True, kind=FailureKind.CLIENT) is FailureDecision.FAIL


def test_failure_policy_defaults() -> None:
    policy = FailurePolicy.from_request({})
    assert policy.max_retries is None
    for attempt in range(1, DEFAULT_INFRASTRUCTURE_RETRIES + 1):
        assert policy.decide(attempt, has_checkpoint=True) is FailureDecision.RETRY_FROM_CHECKPOINT
    assert policy.decide(DEFAULT_INFRASTRUCTURE_RETRIES + 1, has_checkpoint=True) is FailureDecision.FAIL
    assert policy.decide(1, has_checkpoint=True, kind=FailureKind.ALGORITHM) is FailureDecision.FAIL


def test_runtime_policy() -> None:
    policy = RuntimePolicy.from_request({"StoppingCondition": {"MaxRuntimeInSeconds": 60}})
    assert policy.decide(10) is RuntimeDecision.CONTINUE
    assert policy.decide(60) is RuntimeDecision.MAX_RUNTIME
    assert policy.decide(10, stop_requested=True) is RuntimeDecision.STOP
    assert policy.decide(99, stop_requested=True) is RuntimeDecision.STOP
    assert policy.remaining(45) == 15 and policy.remaining(99) == 0
    assert RuntimePolicy.from_request({}).max_runtime_seconds == 86400
