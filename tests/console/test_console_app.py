"""The console's pieces without Ray or a browser: every page rendered from canned API answers (as the
engine shapes them), the sign-in cookie, the charts' SVG and the invocation counts from the audit
trail. The browser tests (tests/e2e/test_console.py) run the same pages against real jobs."""

from __future__ import annotations

import asyncio
import datetime
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from raymaker.console import charts, pages
from raymaker.console.app import Console, duration, safe_next
from raymaker.console.sessions import SessionSigner
from raymaker.protocol.errors import ResourceNotFound

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


TRAINING = {
    "TrainingJobName": "job-1", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:000000000000:training-job/job-1",
    "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training", "CreationTime": at(0),
    "TrainingStartTime": at(5), "HyperParameters": {"num_round": "3", "eta": "0.3"},
    "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": at(0), "EndTime": at(5), "StatusMessage": "Starting"},
                                   {"Status": "Training", "StartTime": at(5), "StatusMessage": "Training <b>now</b>"}],
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    "AlgorithmSpecification": {"TrainingImage": "xgboost"},
}
ANSWERS: dict[str, Any] = {
    "ListTrainingJobs": {"TrainingJobSummaries": [
        {"TrainingJobName": "job-1", "TrainingJobArn": TRAINING["TrainingJobArn"], "CreationTime": at(0),
         "TrainingJobStatus": "InProgress"}]},
    "ListHyperParameterTuningJobs": {"HyperParameterTuningJobSummaries": []},
    "ListEndpoints": {"Endpoints": []},
    "ListTransformJobs": {"TransformJobSummaries": []},
    "DescribeTrainingJob": TRAINING,
    "GetTrainingJobMetrics": {"Metrics": [
        {"MetricName": f"{channel}:logloss", "Value": 0.6 - 0.1 * step, "Step": step, "Timestamp": at(5 + step)}
        for channel in ("train", "validation") for step in range(3)]},
    "GetTrainingJobLogs": {"Events": [{"SequenceNumber": i, "Timestamp": at(i), "Message": f"line {i} <script>"}
                                      for i in range(1, 4)]},
    "DescribeHyperParameterTuningJob": {
        "HyperParameterTuningJobName": "tune-1", "HyperParameterTuningJobStatus": "Completed",
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/tune-1",
        "CreationTime": at(0), "HyperParameterTuningEndTime": at(60),
        "HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
                                          "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:logloss"}},
        "TrainingJobStatusCounters": {"Completed": 3, "Failed": 0},
        "BestTrainingJob": {"TrainingJobName": "tune-1-002", "FinalHyperParameterTuningJobObjectiveMetric": {
            "MetricName": "validation:logloss", "Value": 0.2}},
    },
    "ListTrainingJobsForHyperParameterTuningJob": {"TrainingJobSummaries": [
        {"TrainingJobName": f"tune-1-00{i}", "TrainingJobStatus": "Completed", "CreationTime": at(i * 10),
         "TrainingStartTime": at(i * 10 + 1), "TrainingEndTime": at(i * 10 + 8), "TunedHyperParameters": {"max_depth": str(i)},
         "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:logloss", "Value": v}}
        for i, v in ((1, 0.3), (2, 0.2), (3, 0.25))]},
    "DescribeEndpoint": {
        "EndpointName": "ep-1", "EndpointArn": "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep-1",
        "EndpointConfigName": "cfg", "EndpointStatus": "InService", "CreationTime": at(0), "LastModifiedTime": at(30),
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentWeight": 1.0, "DesiredWeight": 1.0,
                                "CurrentInstanceCount": 2, "DesiredInstanceCount": 2}]},
    "GetResourceLogs": {"Events": []},
    "DescribeTransformJob": {
        "TransformJobName": "tf-1", "TransformJobArn": "arn:aws:sagemaker:us-east-1:000000000000:transform-job/tf-1",
        "TransformJobStatus": "Completed", "ModelName": "m", "CreationTime": at(0), "TransformStartTime": at(2),
        "TransformEndTime": at(9), "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "s3://b/in"}}, "ContentType": "text/csv"},
        "TransformOutput": {"S3OutputPath": "s3://b/out"}},
    "GetTransformJobProgress": {"ObjectsWritten": 1, "RecordsTransformed": 20},
}


def invoke_event(seconds: float, count: int, error: str | None = None, variant: str = "AllTraffic") -> dict:
    record = {"eventTime": at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ"), "requestParameters": {
        "EndpointName": "ep-1", "VariantName": variant, "invocationCount": count,
        "lastInvocationTime": at(seconds).timestamp()}}
    if error:
        record["errorCode"] = error
    return {"CloudTrailEvent": json.dumps(record)}


class FakeAPI:
    """The seam's one method, answering as the engine would, and remembering what it was asked."""

    def __init__(self, answers: dict[str, Any]):
        self.answers, self.calls = answers, []

    def call(self, operation: str, params: dict[str, Any], **audit: Any) -> dict[str, Any]:
        self.calls.append((operation, params))
        answer = self.answers.get(operation)
        if answer is None:
            raise ResourceNotFound(f"no {operation}")
        return answer


def get(console: Console, path: str, query: str = "") -> tuple[int, str, dict[str, str]]:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": [],
             "client": ("127.0.0.1", 1), "scheme": "http"}

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    status, body, headers = asyncio.run(console.handle(scope, receive))
    return status, body.decode(), headers


@pytest.fixture
def console() -> Console:
    api = FakeAPI({**ANSWERS, "ListAuditEvents": {"Events": [invoke_event(-90, 4), invoke_event(-30, 2, "ModelError")]}})
    return Console(api, auth=False)  # type: ignore[arg-type]


def test_every_page_renders_with_its_content(console: Console) -> None:
    status, body, headers = get(console, "/console/")
    assert status == 200 and "job-1" in body and "Content-Security-Policy" in headers
    status, body, _ = get(console, "/console/training-jobs/job-1")
    assert status == 200
    assert 'id="status">InProgress<' in body and "<td>eta</td><td>0.3</td>" in body
    assert "<th>Billable</th><td>-</td>" in body  # not billed yet: no number to show
    assert "line 3 &lt;script&gt;" in body and "Training &lt;b&gt;now&lt;/b&gt;" in body  # escaped, never run
    assert 'data-series="validation:logloss" data-points="3"' in body
    assert 'data-final="false"' in body and 'data-after="3"' in body  # the page will poll from line 3 on
    status, body, _ = get(console, "/console/tuning-jobs/tune-1")
    assert status == 200 and 'data-name="tune-1-002" class="best"' in body
    assert 'data-series="best so far" data-points="3"' in body
    status, body, _ = get(console, "/console/transform-jobs/tf-1")
    assert status == 200 and "<td>20</td>" in body


def test_an_endpoint_page_counts_invocations_and_errors_per_minute(monkeypatch: pytest.MonkeyPatch,
                                                                    console: Console) -> None:
    monkeypatch.setattr(pages.time, "time", lambda: T0.timestamp())
    status, body, _ = get(console, "/console/endpoints/ep-1")
    assert status == 200
    assert "<th>Invocations, last hour</th><td>6</td>" in body
    assert "<th>5XX errors, last hour</th><td>2</td>" in body and "<th>4XX errors, last hour</th><td>0</td>" in body
    assert "<td>2 / 2</td>" in body  # the variant's instances


def test_a_missing_job_is_a_404_page_and_the_tail_answers_json(console: Console) -> None:
    console.api.answers.pop("DescribeTrainingJob")  # type: ignore[attr-defined]
    status, body, _ = get(console, "/console/training-jobs/nope")
    assert status == 404 and "no DescribeTrainingJob" in body
    console.api.answers["DescribeTrainingJob"] = TRAINING  # type: ignore[attr-defined]
    status, body, _ = get(console, "/console/api/training-jobs/job-1/tail", "after=2")
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "InProgress" and not answer["final"]
    assert answer["status_class"] == "status-busy" and answer["refresh"] == "InProgress"
    assert ("GetTrainingJobLogs", {"TrainingJobName": "job-1", "AfterSequenceNumber": 2, "Limit": 10000}) in \
        console.api.calls  # type: ignore[attr-defined]
    assert get(console, "/console/api/training-jobs/job-1/tail", "after=x")[0] == 400


def test_without_signatures_there_is_no_sign_in(console: Console) -> None:
    status, _, headers = get(console, "/console/login")
    assert status == 303 and headers["Location"] == "/console/"


def test_a_session_cookie_cannot_be_forged_altered_or_kept_past_its_expiry() -> None:
    signer = SessionSigner(lifetime_s=60)
    cookie = signer.issue("AKIAEXAMPLE", now=1000)
    assert signer.read(cookie, now=1030) == "AKIAEXAMPLE"
    assert signer.read(cookie, now=1061) is None  # expired
    body, mac = cookie.split(".")
    assert signer.read(body + "." + "0" * len(mac), now=1030) is None
    assert SessionSigner(lifetime_s=60).read(cookie, now=1030) is None  # another server's key (a restart)
    assert signer.read("garbage", now=1030) is None and signer.read(None) is None


def test_after_sign_in_only_console_pages_of_this_server() -> None:
    assert safe_next("/console/endpoints/x") == "/console/endpoints/x"
    for bad in ("https://evil.example/", "//evil.example/console/", "/console/..//evil", "/other", None):
        assert safe_next(bad) == "/console/"


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (None, 4.4, 65, 7325, 90000)] == ["-", "4 s", "1 min 5 s", "2 h 2 min", "1 d 1 h"]


def test_a_chart_is_well_formed_svg_with_its_points() -> None:
    svg = str(charts.line_chart([charts.Series("a", [(1, 2), (2, 3), (3, 1)]),
                                 charts.Series("best", [(1, 2), (3, 1)], "step")],
                                title="loss <per> step", x_label="step"))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("data-series"): g for g in root.iter(ns + "g")}
    assert groups["a"].get("data-points") == "3" and len(list(groups["a"].iter(ns + "circle"))) == 3
    step = groups["best"].find(ns + "polyline").get("points").split()
    assert len(step) == 3 and step[0].split(",")[1] == step[1].split(",")[1]  # held flat until the next point
    assert root.get("aria-label") == "loss <per> step"
    assert "style=" not in svg  # the console's CSP allows no inline styles
    empty = ET.fromstring(str(charts.line_chart([charts.Series("a", [])], title="t", x_label="x")))
    assert "No data yet" in "".join(empty.itertext())


def test_ticks_are_round_and_cover_the_data() -> None:
    ticks = charts.nice_ticks(0.13, 0.87)
    assert ticks[0] <= 0.13 and ticks[-1] >= 0.87 and ticks == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert charts.nice_ticks(5, 5)[0] < 5 < charts.nice_ticks(5, 5)[-1]
    close = charts.nice_ticks(1.68801, 1.68849)
    labels = [charts.tick_label(t, close) for t in close]
    assert len(set(labels)) == len(labels) and labels[0] == "1.6880"  # neighbours never read the same
    assert [charts.tick_label(t, [0.0, 0.2, 0.4]) for t in (0.0, 0.2)] == ["0.0", "0.2"]
    times = charts.time_ticks(1000, 1290)
    assert times[1] - times[0] == 60 and all(t % 60 == 0 for t in times)


def test_invocations_are_bucketed_per_minute_per_outcome_and_variant() -> None:
    now = T0.timestamp()
    events = [invoke_event(-150, 3), invoke_event(-140, 2, variant="B"), invoke_event(-10, 1, "ValidationError"),
              invoke_event(-5, 2, "ModelError"), invoke_event(-7200, 50)]  # the last: outside the hour
    counts = pages.invocation_counts(events, now)
    total = {k: sum(v for _, v in pts) for k, pts in counts.items()}
    assert total == {"Invocations": 8, "Invocation4XXErrors": 1, "Invocation5XXErrors": 2,
                     "Invocations: AllTraffic": 6, "Invocations: B": 2}
    assert len(counts["Invocations"]) == 61  # every minute of the hour, zero where nothing happened
