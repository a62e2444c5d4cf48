"""A handle on one training job: describe, stop, wait with logs (``estimator.latest_training_job``)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from raymaker.sdk.session import Session

_TERMINAL = {"Completed", "Failed", "Stopped"}


class UnexpectedStatusException(ValueError):
    """The job ended in a status other than the one waited for (as the SageMaker SDK raises)."""

    def __init__(self, message: str, allowed_statuses: list[str], actual_status: str):
        super().__init__(message)
        self.allowed_statuses = allowed_statuses
        self.actual_status = actual_status


class TrainingJob:
    def __init__(self, name: str, session: Session):
        self.name = name
        self.job_name = name
        self.session = session

    def describe(self) -> dict[str, Any]:
        return self.session.call("DescribeTrainingJob", {"TrainingJobName": self.name})

    def stop(self) -> None:
        self.session.call("StopTrainingJob", {"TrainingJobName": self.name})

    def wait(self, logs: bool = True, *, poll: float = 1.0, out: TextIO | None = None) -> dict[str, Any]:
        """Block until the job ends, printing status changes, log lines and metrics when ``logs``.
        Raises UnexpectedStatusException unless it Completed."""
        out = out or sys.stdout
        seen, after = None, 0
        while True:
            # Returns as soon as the status moves (or after ``poll`` seconds, to show new log lines).
            status = self.session.call(
                "WaitForTrainingJob",
                {
                    "TrainingJobName": self.name,
                    "SinceSecondaryStatus": seen,
                    "TimeoutSeconds": poll if logs else 10,
                },
            )
            if logs:
                if status["SecondaryStatus"] != seen:
                    desc = self.describe()
                    msg = (desc.get("SecondaryStatusTransitions") or [{}])[-1].get("StatusMessage", "")
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{stamp} {desc['TrainingJobStatus']} - {desc['SecondaryStatus']}: {msg}", file=out)
                events = self.session.call(
                    "GetTrainingJobLogs", {"TrainingJobName": self.name, "AfterSeq": after}
                )
                for event in events["Events"]:
                    print(event["line"], file=out)
                    after = event["seq"]
            seen = status["SecondaryStatus"]
            if status["TrainingJobStatus"] in _TERMINAL:
                break
        desc = self.describe()
        if logs:
            for m in desc.get("FinalMetricDataList") or []:
                print(f"{m['MetricName']}: {m['Value']:.6g}", file=out)
            print(f"Training seconds: {desc.get('TrainingTimeInSeconds', 0)}", file=out)
            print(f"Billable seconds: {desc.get('BillableTimeInSeconds', 0)}", file=out)
        if desc["TrainingJobStatus"] != "Completed":
            reason = desc.get("FailureReason", "")
            raise UnexpectedStatusException(
                f"Error for Training job {self.name}: {desc['TrainingJobStatus']}. Reason: {reason}",
                allowed_statuses=["Completed"],
                actual_status=desc["TrainingJobStatus"],
            )
        return desc
