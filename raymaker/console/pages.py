"""What each console page shows, read through the API's own seam (``SageMakerAPI.call``) as the
signed-in user: every read is authorized as the API authorizes it (``server.access``), and List
answers are cut to what the user may Describe, so the console shows no more than boto3 would."""

from __future__ import annotations

import datetime
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raymaker.console.charts import Series, line_chart
from raymaker.engine.api import SageMakerAPI
from raymaker.engine.users import Caller
from raymaker.protocol.errors import AccessDenied, SageMakerError
from raymaker.server.access import authorize, visible


@dataclass(frozen=True)
class Kind:
    """One kind of resource the console lists and shows."""

    path: str  # the URL segment: /console/<path>/<name>
    title: str
    noun: str
    list_op: str
    list_key: str
    describe_op: str
    name_key: str
    status_key: str
    end_key: str | None
    terminal: frozenset[str]
    logs: bool


_JOB_ENDS = frozenset({"Completed", "Failed", "Stopped"})
KINDS: dict[str, Kind] = {k.path: k for k in (
    Kind("training-jobs", "Training jobs", "training job", "ListTrainingJobs", "TrainingJobSummaries",
         "DescribeTrainingJob", "TrainingJobName", "TrainingJobStatus", "TrainingEndTime", _JOB_ENDS, True),
    Kind("tuning-jobs", "Tuning jobs", "tuning job", "ListHyperParameterTuningJobs",
         "HyperParameterTuningJobSummaries", "DescribeHyperParameterTuningJob", "HyperParameterTuningJobName",
         "HyperParameterTuningJobStatus", "HyperParameterTuningEndTime", _JOB_ENDS, False),
    Kind("endpoints", "Endpoints", "endpoint", "ListEndpoints", "Endpoints", "DescribeEndpoint", "EndpointName",
         "EndpointStatus", None, frozenset({"InService", "Failed", "OutOfService"}), True),
    Kind("transform-jobs", "Transform jobs", "transform job", "ListTransformJobs", "TransformJobSummaries",
         "DescribeTransformJob", "TransformJobName", "TransformJobStatus", "TransformEndTime", _JOB_ENDS, True),
)}

LOG_LINES = 500  # the tail a page shows; `raymaker jobs logs NAME` prints every line
_LOG_PAGE = 10_000  # the most one log read asks for (the API's Limit maximum)
CHART_WINDOW_S = 3600  # an endpoint's charts: the last hour, per minute
_BUCKET_S = 60
# Invocation error codes that are the model's or the server's fault (HTTP 5xx); all others are the caller's.
SERVER_ERRORS = frozenset({"ModelError", "InternalFailure", "ServiceUnavailable", "ModelNotReadyException"})


@dataclass
class Reader:
    """Calls the API as one user (``caller`` None: the server's own user, when signatures are off),
    authorized and audited as the API server does. ``refused`` records a refusal in the audit trail."""

    api: SageMakerAPI
    caller: Caller | None
    source_ip: str | None
    user_agent: str | None
    request_id: str
    refused: Callable[[str, dict[str, Any], SageMakerError], None]

    def __call__(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.caller is not None:
            try:
                authorize(self.caller, operation, params, self.api.store.owners)
            except AccessDenied as e:
                self.refused(operation, params, e)
                raise
        result = self.unchecked(operation, params)
        if self.caller is not None and operation.startswith("List"):
            result = visible(self.caller, result, self.api.store.owners)
        return result

    def unchecked(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """The call without the policy check, for a read the page has authorized another way."""
        return self.api.call(operation, params, caller=self.caller.identity() if self.caller else None,
                             source_ip=self.source_ip, user_agent=self.user_agent, request_id=self.request_id)


@dataclass
class Section:
    """Part of a page that may be refused on its own (logs, metrics) while the rest shows."""

    data: Any = None
    refused: str | None = None


def optional(read: Callable[[], Any]) -> Section:
    try:
        return Section(read())
    except AccessDenied as e:
        return Section(refused=str(e))


def epoch(value: Any) -> float | None:
    """An API time (a datetime in-process, a number or ISO text elsewhere) as seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- lists ---------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    status: str
    created: float | None
    ended: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def list_rows(read: Reader, kind: Kind, limit: int = 100) -> list[Row]:
    """The newest ``limit`` resources of a kind the user may see, newest first."""
    result = read(kind.list_op, {"MaxResults": limit, "SortBy": "CreationTime", "SortOrder": "Descending"})
    rows = []
    for item in result.get(kind.list_key, []):
        extra: dict[str, Any] = {}
        if kind.path == "tuning-jobs":
            extra["counters"] = item.get("TrainingJobStatusCounters") or {}
        if kind.path == "endpoints":
            extra["modified"] = epoch(item.get("LastModifiedTime"))
        rows.append(Row(item[kind.name_key], item.get(kind.status_key, ""), epoch(item.get("CreationTime")),
                        epoch(item.get(kind.end_key)) if kind.end_key else None, extra))
    return rows


# --- logs ----------------------------------------------------------------------------------------

def log_request(kind: Kind, name: str, description: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if kind.path == "training-jobs":
        return "GetTrainingJobLogs", {"TrainingJobName": name}
    arn = next(v for k, v in description.items() if k.endswith("Arn") and k.startswith(kind.name_key[:-4]))
    return "GetResourceLogs", {"ResourceArn": arn}


def log_events(read: Reader, operation: str, params: dict[str, Any], after: int = 0,
               keep: int = LOG_LINES, pages: int = 5) -> tuple[list[dict[str, Any]], int]:
    """The last ``keep`` log lines after ``after`` (reading at most ``pages`` pages), and the last
    sequence number read: where the next poll starts."""
    events: list[dict[str, Any]] = []
    for _ in range(pages):
        page = read(operation, {**params, "AfterSequenceNumber": after, "Limit": _LOG_PAGE})["Events"]
        if not page:
            break
        events = (events + [{"seq": int(e["SequenceNumber"]), "time": epoch(e.get("Timestamp")),
                             "message": e.get("Message", "")} for e in page])[-keep:]
        after = int(page[-1]["SequenceNumber"])
        if len(page) < _LOG_PAGE:
            break
    return events, after


def tail(read: Reader, kind: Kind, name: str, after: int) -> dict[str, Any]:
    """What the page's live tail polls: the status now, whether it is final, and new log lines."""
    description = read(kind.describe_op, {kind.name_key: name})
    status = description.get(kind.status_key, "")
    out: dict[str, Any] = {"status": status, "final": status in kind.terminal, "events": [], "after": after,
                           "refresh": refresh_key(kind, description)}
    if kind.logs:
        operation, params = log_request(kind, name, description)
        logs = optional(lambda: log_events(read, operation, params, after, pages=1))
        if logs.data is not None:
            out["events"], out["after"] = logs.data
    return out


def refresh_key(kind: Kind, description: dict[str, Any]) -> str:
    """What, when it changes, makes an open page reload: the status, and a tuning job's trial counts."""
    status = description.get(kind.status_key, "")
    if kind.path == "tuning-jobs":
        return status + json.dumps(description.get("TrainingJobStatusCounters") or {}, sort_keys=True)
    return status


# --- a training job ------------------------------------------------------------------------------

def metric_charts(rows: list[dict[str, Any]], start: float | None) -> list[Any]:
    """One chart per metric, a line per channel (``train:logloss`` and ``validation:logloss`` share a
    chart), against the step where every point has one, else against seconds since the job started."""
    by_metric: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    stepped = bool(rows) and all(r.get("Step") is not None for r in rows)
    for r in rows:
        name = r["MetricName"]
        metric = name.split(":", 1)[1] if ":" in name else name
        x = float(r["Step"]) if stepped else (epoch(r.get("Timestamp")) or 0.0) - (start or 0.0)
        by_metric[metric][name].append((x, float(r["Value"])))
    return [
        line_chart([Series(channel, pts) for channel, pts in sorted(series.items())], title=metric,
                   x_label="step" if stepped else "seconds since the job started", y_label=metric,
                   x_integer=stepped)
        for metric, series in sorted(by_metric.items())
    ]


def training_job(read: Reader, name: str) -> dict[str, Any]:
    kind = KINDS["training-jobs"]
    job = read("DescribeTrainingJob", {"TrainingJobName": name})
    start = epoch(job.get("TrainingStartTime")) or epoch(job.get("CreationTime"))
    metrics = optional(lambda: read("GetTrainingJobMetrics", {"TrainingJobName": name})["Metrics"])
    logs = optional(lambda: log_events(read, "GetTrainingJobLogs", {"TrainingJobName": name}))
    return {
        "kind": kind, "name": name, "job": job, "status": job.get("TrainingJobStatus", ""),
        "charts": metric_charts(metrics.data or [], start), "metrics": metrics,
        "hyperparameters": sorted((job.get("HyperParameters") or {}).items()),
        "transitions": [dict(t, start=epoch(t.get("StartTime")), end=epoch(t.get("EndTime")))
                        for t in job.get("SecondaryStatusTransitions") or []],
        "final_metrics": job.get("FinalMetricDataList") or [],
        "created": epoch(job.get("CreationTime")), "started": epoch(job.get("TrainingStartTime")),
        "ended": epoch(job.get("TrainingEndTime")),
        "logs": logs, "refresh": refresh_key(kind, job),
    }


# --- a tuning job --------------------------------------------------------------------------------

def tuning_job(read: Reader, name: str) -> dict[str, Any]:
    kind = KINDS["tuning-jobs"]
    job = read("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": name})
    config = job.get("HyperParameterTuningJobConfig") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    trials: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(20):  # 2,000 trials at most on one page
        params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        if token:
            params["NextToken"] = token
        result = read("ListTrainingJobsForHyperParameterTuningJob", params)
        trials += result.get("TrainingJobSummaries", [])
        token = result.get("NextToken")
        if not token:
            break
    trials.sort(key=lambda t: (epoch(t.get("CreationTime")) or 0, t["TrainingJobName"]))
    maximize = objective.get("Type") == "Maximize"
    points, best_line, best = [], [], None
    for i, t in enumerate(trials, 1):
        value = (t.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        t["objective"] = value
        t["started"], t["ended"] = epoch(t.get("TrainingStartTime")), epoch(t.get("TrainingEndTime"))
        t["number"] = i
        if value is None:
            continue
        points.append((i, float(value)))
        best = value if best is None else (max if maximize else min)(best, value)
        best_line.append((i, float(best)))
    metric = objective.get("MetricName", "objective")
    chart = line_chart([Series(metric, points, "points"), Series("best so far", best_line, "step")],
                       title=f"{metric} per trial ({objective.get('Type', '').lower() or 'objective'})",
                       x_label="trial, in the order started", y_label=metric, x_integer=True,
                       empty="No trial has an objective yet")
    tuned = sorted({k for t in trials for k in (t.get("TunedHyperParameters") or {})})
    return {
        "kind": kind, "name": name, "job": job, "status": job.get("HyperParameterTuningJobStatus", ""),
        "objective": objective, "strategy": config.get("Strategy"), "limits": config.get("ResourceLimits") or {},
        "counters": job.get("TrainingJobStatusCounters") or {}, "best": job.get("BestTrainingJob"),
        "trials": trials, "tuned": tuned, "chart": chart,
        "created": epoch(job.get("CreationTime")), "ended": epoch(job.get("HyperParameterTuningEndTime")),
        "refresh": refresh_key(kind, job),
    }


# --- an endpoint ---------------------------------------------------------------------------------

def invocation_counts(events: list[dict[str, Any]], now: float, window_s: float = CHART_WINDOW_S,
                      bucket_s: float = _BUCKET_S) -> dict[str, list[tuple[float, float]]]:
    """Per ``bucket_s`` over the window, CloudWatch's way: Invocations (every request, answered or not,
    in all and per variant as ``Invocations: <variant>``), Invocation4XXErrors and Invocation5XXErrors,
    from the audit trail's InvokeEndpoint events (one per caller, variant and outcome every 2 s, with its
    ``invocationCount``)."""
    first = (now - window_s) // bucket_s * bucket_s
    buckets = [first + i * bucket_s for i in range(int((now - first) // bucket_s) + 1)]
    # Every series exists, zero where nothing happened: "no errors" is a flat line, not a blank chart.
    totals = {name: dict.fromkeys(buckets, 0.0) for name in ("Invocations", "Invocation4XXErrors",
                                                              "Invocation5XXErrors")}

    def add(series: str, bucket: float, count: float) -> None:
        values = totals.setdefault(series, dict.fromkeys(buckets, 0.0))
        values[bucket] = values.get(bucket, 0.0) + count

    for event in events:
        record = json.loads(event["CloudTrailEvent"]) if "CloudTrailEvent" in event else event
        params = record.get("requestParameters") or {}
        at = params.get("lastInvocationTime") or epoch(record.get("eventTime"))
        if at is None or at < first:
            continue
        bucket, count = at // bucket_s * bucket_s, float(params.get("invocationCount", 1))
        add("Invocations", bucket, count)
        if params.get("VariantName"):
            add(f"Invocations: {params['VariantName']}", bucket, count)
        if code := record.get("errorCode"):
            add("Invocation5XXErrors" if code in SERVER_ERRORS else "Invocation4XXErrors", bucket, count)
    return {name: sorted(values.items()) for name, values in totals.items()}


def endpoint(read: Reader, name: str, now: float | None = None) -> dict[str, Any]:
    kind = KINDS["endpoints"]
    now = time.time() if now is None else now
    ep = read("DescribeEndpoint", {"EndpointName": name})
    arn = ep["EndpointArn"]
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"EventName": "InvokeEndpoint", "ResourceName": arn, "MaxResults": 10_000,
                                  "StartTime": datetime.datetime.fromtimestamp(now - CHART_WINDOW_S, datetime.UTC)}
        if token:
            params["NextToken"] = token
        # Authorized as part of DescribeEndpoint (done above): the charts are the endpoint's own counts,
        # as CloudWatch shows whoever may see the endpoint, not the user's own calls, which is all a
        # user's ListAuditEvents would otherwise show.
        result = read.unchecked("ListAuditEvents", params)
        events += result.get("Events", [])
        token = result.get("NextToken")
        if not token:
            break
    counts = invocation_counts(events, now)
    per_variant = sorted(k for k in counts if k.startswith("Invocations: "))
    charts = [
        line_chart([Series("Invocations", counts["Invocations"])]
                   + [Series(k.removeprefix("Invocations: "), counts[k]) for k in per_variant if len(per_variant) > 1],
                   title="Invocations per minute", x_label="time (UTC)", y_label="invocations", x_time=True),
        line_chart([Series("Invocation4XXErrors", counts["Invocation4XXErrors"]),
                    Series("Invocation5XXErrors", counts["Invocation5XXErrors"])],
                   title="Errors per minute", x_label="time (UTC)", y_label="errors", x_time=True),
    ]
    totals = {k: int(sum(v for _, v in counts[k])) for k in ("Invocations", "Invocation4XXErrors",
                                                              "Invocation5XXErrors")}
    logs = optional(lambda: log_events(read, "GetResourceLogs", {"ResourceArn": arn}))
    latency, latency_chart, latency_note = endpoint_latency(name)
    return {
        "kind": kind, "name": name, "job": ep, "status": ep.get("EndpointStatus", ""),
        "variants": ep.get("ProductionVariants") or [], "charts": charts, "totals": totals,
        "latency": latency, "latency_chart": latency_chart, "latency_note": latency_note,
        "created": epoch(ep.get("CreationTime")), "modified": epoch(ep.get("LastModifiedTime")),
        "logs": logs, "refresh": refresh_key(kind, ep),
    }


def endpoint_latency(name: str) -> tuple[list[dict[str, Any]], Any, str]:
    """The endpoint's ModelLatency and OverheadLatency since its replicas started, from a live scrape of
    Ray's metrics (authorized with the DescribeEndpoint before): a row per metric and variant (requests,
    mean, p50 / p90 / p99 as the bucket bounds holding them, in ms), a chart of the share of requests
    answered within each bound, and a note when there is nothing to show."""
    import ray

    from raymaker.metrics.scrape import endpoint_latency as read_latency

    if not ray.is_initialized():
        return [], None, "This server has not joined the Ray cluster yet: no latency to read."
    try:
        found = read_latency(name)
    except OSError as e:
        return [], None, f"Ray's metrics could not be read ({e}): see Prometheus or the Grafana dashboards."
    rows, series = [], []
    for (metric, variant), latency in sorted(found.items()):
        if latency.count <= 0:
            continue
        ms = [None if q is None else q / 1000 for q in (latency.quantile(p) for p in (0.5, 0.9, 0.99))]
        rows.append({"metric": metric, "variant": variant, "requests": int(latency.count),
                     "mean": latency.total / latency.count / 1000, "p50": ms[0], "p90": ms[1], "p99": ms[2]})
        series.append(Series(f"{metric} ({variant})", [(b / 1000, share * 100) for b, share in latency.cumulative()]))
    if not rows:
        return [], None, "No latency exported yet: Ray exports every 10 s or so after the first requests."
    chart = line_chart(series, title="Requests answered within (since the replicas started)",
                       x_label="latency (ms, bucket bound)", y_label="% of requests")
    return rows, chart, ""


# --- a transform job -----------------------------------------------------------------------------

def transform_job(read: Reader, name: str) -> dict[str, Any]:
    kind = KINDS["transform-jobs"]
    job = read("DescribeTransformJob", {"TransformJobName": name})
    progress = optional(lambda: read("GetTransformJobProgress", {"TransformJobName": name}))
    logs = optional(lambda: log_events(read, "GetResourceLogs", {"ResourceArn": job["TransformJobArn"]}))
    return {
        "kind": kind, "name": name, "job": job, "status": job.get("TransformJobStatus", ""),
        "progress": progress, "logs": logs,
        "created": epoch(job.get("CreationTime")), "started": epoch(job.get("TransformStartTime")),
        "ended": epoch(job.get("TransformEndTime")), "refresh": refresh_key(kind, job),
    }


DETAIL = {"training-jobs": training_job, "tuning-jobs": tuning_job, "endpoints": endpoint,
          "transform-jobs": transform_job}
