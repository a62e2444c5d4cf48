"""Metering: billable seconds and cost of a job, SageMaker's way (per second, no minimum).

Choice: running time is rounded *up* to whole seconds (after rounding to milliseconds, so float noise
like 2.0000001 s does not bill a third second), which makes any job that ran at all bill at least one
second per instance; a job that never ran (end <= start, or no start) bills 0.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from raymaker.cluster.definition import load_instance_types

Time = float | datetime  # epoch seconds or an aware/naive datetime


def _epoch(t: Time) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def running_seconds(start: Time | None, end: Time | None) -> int:
    """Whole wall-clock seconds from ``start`` to ``end``, rounded up; 0 if it never ran."""
    if start is None or end is None:
        return 0
    elapsed = round(_epoch(end) - _epoch(start), 3)
    return math.ceil(elapsed) if elapsed > 0 else 0


def billable_seconds(instance_count: int, start: Time | None, end: Time | None) -> int:
    """Instance-seconds: ``instance_count`` x running seconds (what cost is computed from).

    SageMaker's DescribeTrainingJob.BillableTimeInSeconds is the per-instance figure, i.e.
    ``running_seconds``; the total bill is that times InstanceCount, which is this."""
    return max(int(instance_count), 0) * running_seconds(start, end)


def cost(billable_seconds: int, price_per_hour: float) -> float:
    """Cost of ``billable_seconds`` instance-seconds at ``price_per_hour`` per instance-hour."""
    return billable_seconds * price_per_hour / 3600.0


def cost_report(
    arn: str, instance_count: int, instance_seconds: int, instance_type: str | None, cost_so_far: float
) -> dict[str, Any]:
    """GetResourceCost's answer for any metered job: SageMaker's BillableTimeInSeconds is per instance;
    the record keeps instance-seconds, from which the cost was computed."""
    count = max(int(instance_count), 1)
    itype = load_instance_types().get(instance_type) if instance_type else None
    return {
        "ResourceArn": arn,
        "InstanceCount": count,
        "BillableTimeInSeconds": math.ceil(instance_seconds / count),
        "BillableInstanceSeconds": int(instance_seconds),
        "PricePerInstanceHour": float(itype.price_per_hour) if itype is not None else 0.0,
        "Cost": float(cost_so_far),
    }


def epoch_seconds(t: Any) -> float | None:
    """A request's timestamp (a datetime, as boto3 sends it, or epoch seconds) as epoch seconds."""
    return None if t is None else _epoch(t)
