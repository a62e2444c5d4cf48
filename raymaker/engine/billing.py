"""What things cost, per second with no minimum, at their instance types' hourly prices from the
cluster definition: training and transform jobs (``GetResourceCost``, from their records), endpoints
(per variant and instance-second while InService: ``meter_endpoint`` opens spans when an endpoint comes
into service or changes, and the job service re-reads autoscaled variants' replica counts), and
``GetCostSummary`` (raymaker's own): the cost of everything over a period, per resource or per user
(the user who made it; "local" for what was made in-process).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from raymaker.cluster.definition import load_instance_types
from raymaker.engine import metering
from raymaker.engine.arns import arn
from raymaker.engine.context import Engine
from raymaker.engine.kinds import Kind
from raymaker.engine.metering import epoch_seconds
from raymaker.engine.store import JobStore
from raymaker.engine.training_jobs import training_job_cost
from raymaker.engine.transform_jobs import transform_job_cost
from raymaker.protocol.errors import ValidationError

LOCAL = "local"  # the maker of what the in-process API created (no server user)


def meter_endpoint(store: JobStore, endpoint: str, variants: Sequence[tuple[str, str, int]], *,
                   only: str | None = None) -> None:
    """Bill ``endpoint``'s variants (name, instance type, instance count) from now on; none: stop."""
    types = load_instance_types()
    priced = [(v, t, int(n), float(types[t].price_per_hour) if t in types else 0.0) for v, t, n in variants]
    store.meter_endpoint(endpoint, arn(Kind.ENDPOINT, endpoint), priced, only=only)


def _span_seconds(row: dict[str, Any], since: float | None, until: float) -> int:
    start = max(row["start_time"], since) if since is not None else row["start_time"]
    end = min(row["end_time"] if row["end_time"] is not None else until, until)
    return int(row["instance_count"]) * metering.running_seconds(start, end)


def endpoint_cost(store: JobStore, endpoint_arn: str, *, now: float | None = None) -> dict[str, Any]:
    """GetResourceCost for an endpoint: its instance-seconds so far, every variant, at their prices."""
    now = time.time() if now is None else now
    rows = store.meter_rows(endpoint_arn)
    seconds = [_span_seconds(r, None, now) for r in rows]
    total = sum(seconds)
    cost = sum(s * r["price_per_hour"] / 3600.0 for s, r in zip(seconds, rows, strict=True))
    running = [r for r in rows if r["end_time"] is None]
    count = sum(int(r["instance_count"]) for r in running) or max((int(r["instance_count"]) for r in rows), default=1)
    report = metering.cost_report(endpoint_arn, count, total, rows[0]["instance_type"] if rows else None, cost)
    report["BillableTimeInSeconds"] = math.ceil(total / max(count, 1))
    return report


def get_resource_cost(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    resource = params["ResourceArn"]
    kind, _, name = resource.rpartition(":")[2].partition("/")
    if kind == Kind.TRAINING_JOB:
        return training_job_cost(engine.store.get_training_job(name))
    if kind == Kind.TRANSFORM_JOB:
        return transform_job_cost(engine.resources.get(Kind.TRANSFORM_JOB, name))
    if kind == Kind.ENDPOINT:
        if engine.resources.find(Kind.ENDPOINT, name) is None and not engine.store.meter_rows(resource):
            engine.resources.get(Kind.ENDPOINT, name)  # ResourceNotFound, worded as Describe words it
        return endpoint_cost(engine.store, resource)
    raise ValidationError(
        f"ResourceArn {resource!r}: costs are kept for training jobs, transform jobs and endpoints; give "
        "the ARN of one"
    )


def get_cost_summary(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    """Every cost in [StartTime, EndTime) (default: all time until now), grouped by Resource or User.
    Endpoints count the part of their spans inside the period; jobs count whole, by when they ended."""
    since = epoch_seconds(params.get("StartTime"))
    until = epoch_seconds(params.get("EndTime")) or time.time()
    group = params.get("GroupBy") or "Resource"
    items: list[tuple[str, str, int, float]] = []  # (arn, kind, instance-seconds, cost)
    store = engine.store
    for record in store.list_training_jobs(max_results=1_000_000):
        end = record.get("training_end_time")
        if end is not None and (since is None or end >= since) and end < until:
            items.append((record["arn"], Kind.TRAINING_JOB, int(record.get("billable_seconds") or 0),
                          float(record.get("cost") or 0.0)))
    for record in engine.resources.list(Kind.TRANSFORM_JOB, max_results=1_000_000):
        end = record.get("end_time")
        if record["state"].get("Cost") is not None and end and (since is None or end >= since) and end < until:
            items.append((record["arn"], Kind.TRANSFORM_JOB, int(record["state"].get("BillableInstanceSeconds", 0)),
                          float(record["state"].get("Cost", 0.0))))
    for row in store.meter_rows(since=since, until=until):
        seconds = _span_seconds(row, since, until)
        items.append((row["arn"], Kind.ENDPOINT, seconds, seconds * row["price_per_hour"] / 3600.0))
    owners = store.owners(sorted({i[0] for i in items}))
    totals: dict[tuple[str, str], list[float]] = {}
    for resource, kind, seconds, cost in items:
        key = (owners.get(resource, LOCAL), "user") if group == "User" else (resource, kind)
        entry = totals.setdefault(key, [0, 0.0])
        entry[0] += seconds
        entry[1] += cost
    entries = [
        {"Key": key, "ResourceType": kind, "BillableInstanceSeconds": int(v[0]), "Cost": round(v[1], 6)}
        for (key, kind), v in sorted(totals.items(), key=lambda kv: -kv[1][1])
    ]
    return {"Entries": entries, "TotalCost": round(sum(e["Cost"] for e in entries), 6)}


OPERATIONS = {"GetResourceCost": get_resource_cost, "GetCostSummary": get_cost_summary}
