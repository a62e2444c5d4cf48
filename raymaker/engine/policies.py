"""Decisions the training runner asks for and then executes: what to do after a failure, and whether
to keep running. Pure and small, so every rule is a unit test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Without a RetryStrategy, lost workers (a dead node or process: not the job's fault) are retried this
# many times, as SageMaker retries its own internal failures; errors in the training code are not.
DEFAULT_INFRASTRUCTURE_RETRIES = 2


class FailureKind(StrEnum):
    INFRASTRUCTURE = "infrastructure"  # a worker/node died, capacity lost: retry may succeed
    ALGORITHM = "algorithm"  # the training code raised: retry only if the user asked (RetryStrategy)
    CLIENT = "client"  # bad data or configuration: the same input fails again, never retry


class FailureDecision(StrEnum):
    RETRY_FROM_CHECKPOINT = "retry_from_checkpoint"
    RETRY_FROM_SCRATCH = "retry_from_scratch"
    FAIL = "fail"


@dataclass(frozen=True)
class FailurePolicy:
    """``max_retries`` is RetryStrategy.MaximumRetryAttempts (None when the request has none)."""

    max_retries: int | None = None

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> FailurePolicy:
        strategy = request.get("RetryStrategy") or {}
        return cls(strategy.get("MaximumRetryAttempts"))

    def retries_allowed(self, kind: FailureKind | str = FailureKind.INFRASTRUCTURE) -> int:
        kind = FailureKind(kind)
        if kind is FailureKind.CLIENT:
            return 0
        if self.max_retries is not None:
            return self.max_retries
        return DEFAULT_INFRASTRUCTURE_RETRIES if kind is FailureKind.INFRASTRUCTURE else 0

    def decide(
        self,
        attempt: int,
        *,
        has_checkpoint: bool,
        kind: FailureKind | str = FailureKind.INFRASTRUCTURE,
    ) -> FailureDecision:
        """After attempt number ``attempt`` (1 = the first run) failed: retry (resuming from the
        checkpoint when one exists) while retries remain, else fail."""
        if attempt > self.retries_allowed(kind):
            return FailureDecision.FAIL
        return FailureDecision.RETRY_FROM_CHECKPOINT if has_checkpoint else FailureDecision.RETRY_FROM_SCRATCH


class RuntimeDecision(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"  # StopTrainingJob was called -> Stopping -> Stopped
    MAX_RUNTIME = "max_runtime"  # StoppingCondition.MaxRuntimeInSeconds reached -> MaxRuntimeExceeded


@dataclass(frozen=True)
class RuntimePolicy:
    """Whether a running job goes on. A user's stop wins over the clock: it was asked for first."""

    max_runtime_seconds: float = 86400

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> RuntimePolicy:
        stopping = request.get("StoppingCondition") or {}
        return cls(stopping.get("MaxRuntimeInSeconds", 86400))

    def decide(self, elapsed_seconds: float, *, stop_requested: bool = False) -> RuntimeDecision:
        if stop_requested:
            return RuntimeDecision.STOP
        if elapsed_seconds >= self.max_runtime_seconds:
            return RuntimeDecision.MAX_RUNTIME
        return RuntimeDecision.CONTINUE

    def remaining(self, elapsed_seconds: float) -> float:
        """Seconds left before MaxRuntimeExceeded (a timeout for the runner's waits)."""
        return max(self.max_runtime_seconds - elapsed_seconds, 0.0)
