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

    def wait(self, logs: bool = True, *, poll: float = 0.25, out: TextIO | None = None) -> dict[str, Any]:
        """Block until the job ends, printing status changes, log lines and metrics when ``logs``.
        Raises UnexpectedStatusException unless it Completed."""
        out = out or sys.stdout
        seen_status, after, shown_metrics = None, 0, set()
        while True:
            desc = self.describe()
            if logs:
                status = (desc["TrainingJobStatus"], desc["SecondaryStatus"])
                if status != seen_status:
                    msg = (desc.get("SecondaryStatusTransitions") or [{}])[-1].get("StatusMessage", "")
                    print(
                        f"{time.strftime('%H:%M:%S')} {desc['TrainingJobStatus']} - {desc['SecondaryStatus']}: {msg}",
                        file=out,
                    )
                    seen_status = status
                for event in self.session.call(
                    "GetTrainingJobLogs", {"TrainingJobName": self.name, "AfterSeq": after}
                )["Events"]:
                    print(event["line"], file=out)
                    after = event["seq"]
                for m in self.session.call("GetTrainingJobMetrics", {"TrainingJobName": self.name})[
                    "Metrics"
                ]:
                    key = (m["metric"], m["step"])
                    if key not in shown_metrics:
                        shown_metrics.add(key)
                        step = "" if m["step"] is None else f"[{m['step']}] "
                        print(f"  {step}{m['metric']} = {m['value']:.6g}", file=out)
            if desc["TrainingJobStatus"] in _TERMINAL:
                break
            time.sleep(poll)
        if logs:
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
