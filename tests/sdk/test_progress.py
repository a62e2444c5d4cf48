"""The waits' progress display (``raymaker.sdk.progress``) over canned description sequences: a live
area in a terminal (a forced-terminal rich Console, or a tty stream), plain lines elsewhere, nothing with
``logs=False``. The clock is the test's: ``progress.utcnow`` and ``progress.monotonic`` read it, and each
canned answer moves it to the moment it stands for."""

from __future__ import annotations

import contextlib
import datetime
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from raymaker.protocol.errors import AccessDenied
from raymaker.sdk import (
    ContinuousParameter,
    Estimator,
    HyperparameterTuner,
    Model,
    Session,
    TrainingInput,
    TrainingJob,
    Transformer,
    UnexpectedStatusException,
    progress,
)
from raymaker.sdk.predictor import wait_for_endpoint
from raymaker.sdk.waiter import TRAINING_JOB, TRANSFORM_JOB, TUNING_JOB, wait_for
from tests.sdk.helpers import (
    T0,
    RecordingBackend,
    arn,
    created,
    endpoint_description,
    training_job_description,
    transform_job_description,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def utcnow(self) -> datetime.datetime:
        return T0 + datetime.timedelta(seconds=self.t)

    def at(self, seconds: float, answer: Any) -> Callable[[dict[str, Any]], Any]:
        """A canned answer given at ``seconds`` after T0 (the clock moves there first)."""

        def give(_: dict[str, Any]) -> Any:
            self.t = seconds
            return answer

        return give


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress, "monotonic", c.monotonic)
    monkeypatch.setattr(progress, "utcnow", c.utcnow)
    return c


class TTY(io.StringIO):
    """What a terminal looks like to the SDK: a stream whose isatty() is true."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich sizes a console that is not a real terminal from COLUMNS
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("TERM", "xterm-256color")


def text_of(out: str) -> str:
    return ANSI.sub("", out).replace("\r", "")


def seconds(s: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=s)


def metric_rows(steps: range, first: float = 0.9) -> dict[str, Any]:
    return {
        "Metrics": [
            {"MetricName": name, "Value": base + step / 100, "Step": step, "Timestamp": seconds(step)}
            for step in steps
            for name, base in (("validation:auc", first), ("train:auc", first + 0.05))
        ]
    }


def log_events(*lines: tuple[int, str]) -> dict[str, Any]:
    return {"Events": [{"SequenceNumber": n, "Timestamp": seconds(n), "Message": m} for n, m in lines]}


STARTING = [("Starting", "Starting the training job")]
TRAINING = [*STARTING, ("Training", "Training image download completed. Training in progress.")]
DONE = [
    *TRAINING,
    ("Uploading", "Uploading generated training model"),
    ("Completed", "Training job completed"),
]


# --- training jobs ---------------------------------------------------------------------------------


def test_terminal_training_shows_status_round_metrics_elapsed_and_remaining_below_the_logs(
    clock: Clock, wide: None
) -> None:
    started = {"TrainingStartTime": seconds(4)}
    completed = training_job_description(
        "j",
        "Completed",
        "Completed",
        transitions=DONE,
        TrainingEndTime=seconds(30),
        FinalMetricDataList=[{"MetricName": "validation:auc", "Value": 0.99, "Timestamp": seconds(30)}],
        TrainingTimeInSeconds=26,
        BillableTimeInSeconds=26,
        **started,
    )
    backend = RecordingBackend(
        DescribeTrainingJob=[
            clock.at(2, training_job_description("j", "InProgress", "Starting", transitions=STARTING)),
            clock.at(10, training_job_description("j", transitions=TRAINING, **started)),
            clock.at(20, training_job_description("j", transitions=TRAINING, **started)),
            clock.at(30, completed),
        ],
        WaitForTrainingJob={"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
        GetTrainingJobLogs=[
            log_events(),
            log_events((1, "[0]\ttrain-auc:0.95000\tvalidation-auc:0.90000")),
            log_events(
                (2, "[1]\ttrain-auc:0.96000\tvalidation-auc:0.91000"), (3, "[2]\tvalidation-auc:0.92")
            ),
            log_events((4, "Uploaded model.tar.gz")),
        ],
        GetTrainingJobMetrics=[
            metric_rows(range(0)),
            metric_rows(range(1)),
            metric_rows(range(3)),
            metric_rows(range(10)),
        ],
    )
    out = TTY()
    desc = TrainingJob("j", backend).wait(logs=True, out=out)  # type: ignore[arg-type]
    assert desc["TrainingJobStatus"] == "Completed"

    raw = out.getvalue()
    assert "\x1b[" in raw  # redrawn in place, not printed line by line
    text = text_of(raw)
    # the SageMaker SDK's lines are all there, in order
    for line in (
        "2025-01-02 03:04:05 Starting - Starting the training job",
        "validation-auc:0.90000",
        "[2]     validation-auc:0.92",  # rich expands the tab
        "2025-01-02 03:04:08 Completed - Training job completed",
        "Uploaded model.tar.gz",
    ):
        assert line in text
    # while training: 3 of 10 rounds after 20 s; the rounds began at 4 s, so 16 s x 7/3 remain
    assert "Training ━" in text
    assert "round 3/10 · elapsed 20s · remaining 37s · j" in text
    assert "validation:auc 0.92 train:auc 0.97" in text
    # the last frame stays: the end state, no remaining time, the final metric; then the summary
    last = text[text.rindex("✔") :]
    assert "✔ Completed" in last and "round 10/10 · elapsed 30s · j" in last and "remaining" not in last
    assert "validation:auc 0.99 train:auc 1.04" in last
    assert last.index("round 10/10") < last.index("validation:auc: 0.99") < last.index("Training seconds: 26")
    assert backend.requests("GetTrainingJobMetrics") == [{"TrainingJobName": "j"}] * 4


def test_plain_training_adds_a_progress_line_every_interval_and_no_escapes(clock: Clock) -> None:
    def describe(t: int) -> Any:
        if t == 60:
            return clock.at(t, training_job_description("j", "Completed", "Completed", transitions=DONE))
        return clock.at(t, training_job_description("j", transitions=TRAINING, TrainingStartTime=T0))

    backend = RecordingBackend(
        DescribeTrainingJob=[describe(t) for t in range(1, 61)],
        WaitForTrainingJob={"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
        GetTrainingJobLogs=[log_events((t, f"[{t}] tick")) for t in range(1, 61)],
        # asked only when a line is due (20 s, 40 s): the rounds done by then
        GetTrainingJobMetrics=[metric_rows(range(4)), metric_rows(range(8))],
    )
    out = io.StringIO()
    TrainingJob("j", backend).wait(logs=True, out=out)  # type: ignore[arg-type]

    raw = out.getvalue()
    assert "\x1b" not in raw
    lines = raw.splitlines()
    progress_lines = [line for line in lines if line.startswith("Training job j:")]
    # 4 of 10 rounds in 20 s: 30 s to go; 8 in 40 s: 10 s to go. None at the end: the summary says it.
    assert progress_lines == [
        "Training job j: Training | round 4/10 | validation:auc 0.93 train:auc 0.98 | elapsed 20s"
        " | remaining 30s",
        "Training job j: Training | round 8/10 | validation:auc 0.97 train:auc 1.02 | elapsed 40s"
        " | remaining 10s",
    ]
    assert lines.index(progress_lines[0]) == lines.index("[20] tick") + 1  # between the log lines
    assert len(lines) == 60 + len(DONE) + 2  # the log lines, the transitions, the progress lines
    assert len(backend.requests("GetTrainingJobMetrics")) == 2


def test_a_live_display_asks_for_metrics_at_most_every_fetch_interval(clock: Clock) -> None:
    # Described every 0.5 s for 10 s: metrics every 2 s (5 times), and once more at the end.
    describes = [clock.at(t / 2, training_job_description("j")) for t in range(1, 20)]
    describes.append(clock.at(10, training_job_description("j", "Completed", "Completed")))
    backend = RecordingBackend(DescribeTrainingJob=describes, GetTrainingJobMetrics=metric_rows(range(2)))
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress.watch(TRAINING_JOB, backend, "j", console=console) as w:
        wait_for(backend, TRAINING_JOB, "j", on_describe=w.on_describe)
    assert w.terminal
    assert len(backend.requests("GetTrainingJobMetrics")) == 6
    assert "round 2/10" in text_of(console.file.getvalue())  # type: ignore[attr-defined]


def test_a_caller_denied_the_metrics_still_sees_the_job_end(clock: Clock) -> None:
    backend = RecordingBackend(
        DescribeTrainingJob=[
            clock.at(1, training_job_description("j")),
            clock.at(5, training_job_description("j")),
            clock.at(9, training_job_description("j", "Completed", "Completed", TrainingEndTime=seconds(9))),
        ],
        GetTrainingJobMetrics=AccessDenied("not authorized to perform: sagemaker:GetTrainingJobMetrics"),
    )
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress.watch(TRAINING_JOB, backend, "j", console=console) as w:
        wait_for(backend, TRAINING_JOB, "j", on_describe=w.on_describe)
    assert len(backend.requests("GetTrainingJobMetrics")) == 1  # not asked again
    assert "✔ Completed elapsed 9s · j" in text_of(console.file.getvalue())  # type: ignore[attr-defined]


def test_a_failed_job_ends_on_a_cross(clock: Clock) -> None:
    backend = RecordingBackend(
        DescribeTrainingJob=training_job_description("j", "Failed", "Failed", FailureReason="boom"),
        GetTrainingJobMetrics=metric_rows(range(0)),
    )
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with (
        pytest.raises(UnexpectedStatusException),
        progress.watch(TRAINING_JOB, backend, "j", console=console) as w,
    ):
        wait_for(backend, TRAINING_JOB, "j", on_describe=w.on_describe)
    assert "✘ Failed" in text_of(console.file.getvalue())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "hyperparameters", "steps", "want"),
    [
        # xgboost and linear-learner number from 0, k-means from 1
        ({"AlgorithmName": "xgboost"}, {"num_round": "10"}, range(0, 3), ("round", 3, 10)),
        (
            {"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"},
            {"num_round": "8"},
            range(0, 8),
            ("round", 8, 8),
        ),
        ({"AlgorithmName": "linear-learner"}, {"epochs": "15"}, range(0, 2), ("epoch", 2, 15)),
        ({"AlgorithmName": "kmeans"}, {"epochs": "4"}, range(1, 3), ("epoch", 2, 4)),
        ({"AlgorithmName": "kmeans"}, {}, range(1, 3), ("epoch", 2, None)),  # no total: no remaining
        # a script's metrics come from its log lines, with no step; PCA counts nothing
        (
            {
                "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
            },
            {"epochs": "5", "sagemaker_program": '"train.py"'},
            range(0),
            (None, None, None),
        ),
        ({"AlgorithmName": "pca"}, {"num_components": "2"}, range(1, 2), (None, None, None)),
    ],
)
def test_rounds_and_epochs_out_of_the_hyperparameters_total(
    spec: dict[str, str], hyperparameters: dict[str, str], steps: range, want: tuple[Any, ...]
) -> None:
    desc = training_job_description("j", AlgorithmSpecification=spec, HyperParameters=hyperparameters)
    snap = progress.training_snapshot(desc, metric_rows(steps)["Metrics"])
    assert (snap.unit, snap.done, snap.total) == want
    if snap.done is not None:
        assert f"{snap.unit} {snap.done}" in " ".join(snap.parts(seconds(10)))


def test_remaining_is_elapsed_times_the_steps_left_over_the_steps_done() -> None:
    snap = progress.Snapshot("Training", unit="round", done=4, total=10, started=T0, steps_since=seconds(5))
    assert snap.remaining(seconds(25)) == pytest.approx(20 * 6 / 4)
    assert snap.parts(seconds(25)) == ["round 4/10", "elapsed 25s", "remaining 30s"]
    assert (
        progress.Snapshot("Training", unit="round", done=0, total=10, started=T0).remaining(seconds(9))
        is None
    )
    ended = progress.Snapshot("Completed", ended=True, unit="round", done=4, total=10, started=T0)
    assert ended.remaining(seconds(9)) is None
    assert [progress.duration(s) for s in (7, 185, 3723)] == ["7s", "3m05s", "1h02m03s"]


# --- tuning, transform, endpoint ---------------------------------------------------------------------


def tuning_description(
    status: str, ended: int, running: int, best: float | None, **extra: Any
) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "HyperParameterTuningJobName": "tj",
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", "tj"),
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 10, "MaxParallelTrainingJobs": 2},
        },
        "HyperParameterTuningJobStatus": status,
        "CreationTime": T0,
        "TrainingJobStatusCounters": {"Completed": ended, "InProgress": running, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": ended, "Pending": running, "Failed": 0},
    }
    if best is not None:
        desc["BestTrainingJob"] = {
            "TrainingJobName": "tj-001",
            "TrainingJobArn": arn("training-job", "tj-001"),
            "CreationTime": T0,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": {"eta": "0.1"},
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:auc", "Value": best},
        }
    desc.update(extra)
    return desc


def test_tuning_shows_trials_done_of_the_maximum_and_the_best_objective(clock: Clock, wide: None) -> None:
    answers = [
        clock.at(1, tuning_description("InProgress", 0, 2, None)),
        *[clock.at(t, tuning_description("InProgress", 3, 2, 0.97)) for t in range(2, 22)],
        clock.at(30, tuning_description("Completed", 10, 0, 0.99, HyperParameterTuningEndTime=seconds(30))),
    ]
    plain, live = io.StringIO(), TTY()
    for out in (plain, live):
        clock.t = 0
        backend = RecordingBackend(DescribeHyperParameterTuningJob=list(answers))
        with progress.watch(TUNING_JOB, backend, "tj", out=out) as w:
            wait_for(backend, TUNING_JOB, "tj", on_describe=w.on_describe)

    # plain: the status when it changes, a progress line an interval after the last line (3 of 10
    # trials in 21 s: 49 s to go); 22 descriptions, 3 lines
    assert plain.getvalue().splitlines() == [
        "Tuning job tj: InProgress | trials 0/10 | 2 running | elapsed 1s",
        "Tuning job tj: InProgress | trials 3/10 | 2 running | best validation:auc 0.97 | elapsed 21s"
        " | remaining 49s",
        "Tuning job tj: Completed | trials 10/10 | best validation:auc 0.99 | elapsed 30s",
    ]
    text = text_of(live.getvalue())
    assert "InProgress" in text and "trials 3/10 · 2 running · elapsed 21s · remaining 49s · tj" in text
    assert "best validation:auc 0.97" in text
    assert "✔ Completed" in text and "trials 10/10 · elapsed 30s" in text


def test_transform_shows_status_elapsed_and_records(clock: Clock, wide: None) -> None:
    request = {
        "TransformJobName": "t",
        "ModelName": "m",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "file:///in/"}}
        },
        "TransformOutput": {"S3OutputPath": "file:///out/"},
        "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
    }
    answers = [clock.at(t, transform_job_description(request)) for t in range(1, 31)]
    answers.append(
        clock.at(35, transform_job_description(request, "Completed", TransformEndTime=seconds(35)))
    )
    counts = {"RecordsTransformed": 1200, "ObjectsWritten": 1}

    backend = RecordingBackend(DescribeTransformJob=list(answers), GetTransformJobProgress=counts)
    with progress.watch(TRANSFORM_JOB, backend, "t", out=io.StringIO()) as w:
        wait_for(backend, TRANSFORM_JOB, "t", on_describe=w.on_describe)
    assert w.display.out.getvalue().splitlines() == [  # type: ignore[union-attr]
        "Transform job t: InProgress | elapsed 1s",
        "Transform job t: InProgress | 1,200 records, 1 objects written | elapsed 21s",
        "Transform job t: Completed | 1,200 records, 1 objects written | elapsed 35s",
    ]
    assert len(backend.requests("GetTransformJobProgress")) == 1  # only for the line that was due

    backend = RecordingBackend(DescribeTransformJob=list(answers), GetTransformJobProgress=counts)
    live = TTY()
    with progress.watch(TRANSFORM_JOB, backend, "t", out=live) as w:
        wait_for(backend, TRANSFORM_JOB, "t", on_describe=w.on_describe)
    text = text_of(live.getvalue())
    assert "InProgress 1,200 records, 1 objects written · elapsed 20s · t" in text
    assert "✔ Completed 1,200 records, 1 objects written · elapsed 35s · t" in text


def test_endpoint_prints_one_line_per_status_not_per_poll(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = [clock.at(t / 10, endpoint_description("ep", "Creating")) for t in range(1, 400)]
    answers.append(clock.at(42, endpoint_description("ep", "InService")))
    backend = RecordingBackend(DescribeEndpoint=answers)
    wait_for_endpoint(Session(backend=backend), "ep")
    assert capsys.readouterr().out.splitlines() == [
        "Endpoint ep: Creating | elapsed 0s",
        "Endpoint ep: InService | elapsed 42s",
    ]


# --- what the SDK's public calls show, and logs=False ----------------------------------------------------


def _training(backend: RecordingBackend, logs: bool, tmp_path: Path) -> None:
    backend.answer(
        DescribeTrainingJob=training_job_description(
            "j", "Completed", "Completed", transitions=DONE, TrainingEndTime=seconds(3)
        ),
        GetTrainingJobLogs=log_events(),
        GetTrainingJobMetrics=metric_rows(range(10)),
    )
    TrainingJob("j", Session(backend=backend)).wait(logs=logs)


def _tuning(backend: RecordingBackend, logs: bool, tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    (train / "part-0.csv").write_text("1,0.5\n0,0.1\n")
    backend.answer(
        CreateHyperParameterTuningJob=lambda p: {
            "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", p["HyperParameterTuningJobName"])
        },
        DescribeHyperParameterTuningJob=tuning_description("Completed", 10, 0, 0.99),
    )
    estimator = Estimator(
        "xgboost",
        hyperparameters={"num_round": 5},
        output_path=str(tmp_path / "out"),
        session=Session(backend=backend),
    )
    tuner = HyperparameterTuner(
        estimator, "validation:auc", {"eta": ContinuousParameter(0.1, 0.5)}, max_jobs=10
    )
    tuner.fit({"train": TrainingInput(str(train), content_type="text/csv")}, job_name="tj", logs=logs)


def _deploy(backend: RecordingBackend, logs: bool, tmp_path: Path) -> None:
    backend.answer(
        CreateModel=created("Model", "ModelName"),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        CreateEndpoint=created("Endpoint", "EndpointName"),
        DescribeEndpoint=[endpoint_description("ep", "Creating"), endpoint_description("ep", "InService")],
    )
    model = Model("file:///out/j/output/model.tar.gz", algorithm="xgboost", session=Session(backend=backend))
    model.deploy(1, "local", endpoint_name="ep", logs=logs)


def _transform(backend: RecordingBackend, logs: bool, tmp_path: Path) -> None:
    backend.answer(CreateTransformJob=created("TransformJob", "TransformJobName"))
    backend.answer(
        DescribeTransformJob=lambda p: transform_job_description(
            backend.requests("CreateTransformJob")[0], "Completed", TransformEndTime=seconds(3)
        ),
        GetTransformJobProgress={"RecordsTransformed": 4, "ObjectsWritten": 1},
    )
    transformer = Transformer("m", output_path="file:///out/", session=Session(backend=backend))
    transformer.transform("file:///in/", job_name="t", logs=logs)


@pytest.mark.parametrize("run", [_training, _tuning, _deploy, _transform])
@pytest.mark.parametrize("tty", [True, False])
def test_logs_false_prints_nothing_and_logs_true_shows_the_end(
    run: Callable[[RecordingBackend, bool, Path], None],
    tty: bool,
    clock: Clock,
    wide: None,
    tmp_path: Path,
) -> None:
    for logs in (False, True):
        out = TTY() if tty else io.StringIO()
        backend = RecordingBackend()
        with contextlib.redirect_stdout(out):
            run(backend, logs, tmp_path)
        if not logs:
            assert out.getvalue() == ""
            assert (
                "GetTrainingJobMetrics" not in backend.ops()
                and "GetTransformJobProgress" not in backend.ops()
            )
            continue
        text = text_of(out.getvalue())
        assert ("\x1b[" in out.getvalue()) == tty
        assert re.search(r"Completed|InService", text), text
