"""A handle on one training job: describe, stop, wait with logs (``estimator.latest_training_job``)."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from typing import Any, TextIO

from raymaker.sdk import progress
from raymaker.sdk.exceptions import UnexpectedStatusException
from raymaker.sdk.session import Session
from raymaker.sdk.waiter import TRAINING_JOB, wait_for

__all__ = ["TrainingJob", "UnexpectedStatusException"]


class TrainingJob:
    def __init__(self, name: str, session: Session):
        self.name = name
        self.job_name = name
        self.session = session

    def describe(self) -> dict[str, Any]:
        """DescribeTrainingJob of this job."""
        return self.session.call("DescribeTrainingJob", {"TrainingJobName": self.name})

    def stop(self) -> None:
        self.session.call("StopTrainingJob", {"TrainingJobName": self.name})

    def wait(
        self,
        logs: bool = True,
        *,
        poll: float = 1.0,
        timeout: float | None = None,
        out: TextIO | None = None,
    ) -> dict[str, Any]:
        """Block until the job ends and return its description. With ``logs``, print its status
        transitions and log lines as they come, then its final metrics and training and billable
        seconds (as the SageMaker SDK prints them), with a progress display (``sdk/progress.py``: in a
        terminal a live line under the log lines, round / epoch out of the total, latest metrics,
        elapsed and remaining; elsewhere a plain line now and then). Raises UnexpectedStatusException
        if it Failed; Stopped (by the user, or at MaxRuntimeInSeconds) only logs a warning, as in the
        SageMaker SDK. Without ``logs`` it prints nothing."""
        if not logs:
            return self._wait(None, poll, timeout)
        # The transitions are the status lines (SageMaker's own wording): the display adds progress.
        with progress.watch(
            TRAINING_JOB, self.session, self.name, out=out or sys.stdout, status_lines=False
        ) as w:
            printer = _LogPrinter(self.session, self.name, w.line)

            def show(desc: dict[str, Any]) -> None:
                printer.show(desc)
                w.on_describe(desc)

            desc = self._wait(show, poll, timeout)
        printer.summary(desc)
        return desc

    def _wait(
        self, on_describe: Callable[[dict[str, Any]], None] | None, poll: float, timeout: float | None
    ) -> dict[str, Any]:
        logs = on_describe is not None

        def long_poll(desc: dict[str, Any], seconds: float) -> None:
            # Returns as soon as the SecondaryStatus moves, so the job's end is seen within ~50 ms
            # without describing it over and over; else after ``seconds``.
            self.session.call(
                "WaitForTrainingJob",
                {
                    "TrainingJobName": self.name,
                    "SinceSecondaryStatus": desc["SecondaryStatus"],
                    "TimeoutSeconds": min(seconds, 3600.0),  # the operation's longest poll
                },
            )

        desc = wait_for(
            self.session,
            TRAINING_JOB,
            self.name,
            # With logs, look for new log lines every ``poll`` s; without, only status changes matter.
            poll=poll if logs else max(poll, 10.0),
            timeout=timeout,
            on_describe=on_describe,
            pause=long_poll,
        )
        return desc


class _LogPrinter:
    """What ``wait(logs=True)`` prints: each new SecondaryStatusTransition as the SageMaker SDK does
    (``2025-01-02 03:04:05 Training - Training image download completed...``), then the job's log
    lines since the last ones shown (GetTrainingJobLogs)."""

    def __init__(self, session: Session, name: str, line: Callable[[str], None]):
        self.session = session
        self.name = name
        self.line = line  # the progress display's: above its live area in a terminal
        self.transitions_shown = 0
        self.after = 0

    def show(self, desc: dict[str, Any]) -> None:
        transitions = desc.get("SecondaryStatusTransitions") or []
        for t in transitions[self.transitions_shown :]:
            self.line(f"{_utc(t.get('StartTime'))} {t['Status']} - {t.get('StatusMessage', '')}")
        self.transitions_shown = len(transitions)
        events = self.session.call(
            "GetTrainingJobLogs", {"TrainingJobName": self.name, "AfterSequenceNumber": self.after}
        )["Events"]
        for event in events:
            self.line(event["Message"])
            self.after = max(self.after, int(event["SequenceNumber"]))

    def summary(self, desc: dict[str, Any]) -> None:
        """Final metrics (raymaker's addition), then the SageMaker SDK's closing lines. Its seconds
        are per instance in DescribeTrainingJob; the SDK prints them times the instance count."""
        for m in desc.get("FinalMetricDataList") or []:
            self.line(f"{m['MetricName']}: {m['Value']:.6g}")
        count = _instance_count(desc)
        training = desc.get("TrainingTimeInSeconds")
        billable = desc.get("BillableTimeInSeconds")
        if training is not None:
            self.line(f"Training seconds: {training * count}")
        if billable is not None:
            self.line(f"Billable seconds: {billable * count}")
            if desc.get("EnableManagedSpotTraining") and training:
                saving = (1 - float(billable) / training) * 100
                self.line(f"Managed Spot Training savings: {saving:.1f}%")


def _instance_count(desc: dict[str, Any]) -> int:
    resources = desc.get("ResourceConfig") or {}
    groups = resources.get("InstanceGroups")
    if groups:
        return sum(int(g["InstanceCount"]) for g in groups)
    return int(resources.get("InstanceCount", 1))


def _utc(moment: Any) -> str:
    if isinstance(moment, datetime.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(moment, (int, float)):
        return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(moment or "")
