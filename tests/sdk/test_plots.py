"""The plots as a user sees them: real PNG files, read back with PIL. Each test checks the size in
pixels, and that every curve or trial is drawn where its data says and in its colour: a data point's
position goes through the axes' transform to a pixel, and that pixel (or one next to it) must be of the
line's colour. The analytics' ``.plot()`` and the ``plot`` commands run against ``RecordingBackend``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from raymaker.cli import main
from raymaker.sdk import HyperparameterTuningJobAnalytics, Session, TrainingJobAnalytics, plots
from tests.sdk.helpers import T0, RecordingBackend, arn, training_job_description

JOB = "xgb-job-1"
TUNING = "xgb-tune-1"

# --- reading the PNG back ----------------------------------------------------------------------------


def read_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB")).astype(int)


def pixels_of(ax: Any, xy: np.ndarray) -> np.ndarray:
    """Data coordinates -> (column, row) in the saved image (display y counts from the bottom)."""
    height = ax.figure.bbox.height
    display = ax.transData.transform(np.asarray(xy, dtype=float))
    return np.column_stack([display[:, 0], height - display[:, 1]]).round().astype(int)


def colour_at(img: np.ndarray, ax: Any, xy: Any, colour: str, radius: int = 2) -> list[bool]:
    """For each data point: is a pixel within ``radius`` of where it lands of ``colour``?"""
    target = np.array(to_rgb(colour)) * 255
    found = []
    for col, row in pixels_of(ax, np.atleast_2d(xy)):
        window = img[max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1]
        found.append(bool((np.abs(window - target).max(axis=-1) <= 12).any()))
    return found


def line_points(line: Any) -> np.ndarray:
    return np.column_stack(line.get_data()).astype(float)


# --- training curves ---------------------------------------------------------------------------------


def metrics_frame(minutes: bool = False) -> pd.DataFrame:
    """train and validation rmse apart by 0.4 everywhere, a train-only objective_loss, a channel-less
    metric; 8 points each."""
    step = 120.0 if minutes else 2.0
    rows = []
    for i in range(8):
        t = i * step
        rows += [
            (t, "train:rmse", 1.0 / (i + 1)),
            (t, "validation:rmse", 1.0 / (i + 1) + 0.4),
            (t, "train:objective_loss", 3.0 - 0.3 * i),
            (t, "epoch_seconds", 0.5 + 0.01 * i),
        ]
    return pd.DataFrame(rows, columns=["timestamp", "metric_name", "value"])


def test_training_curves_one_panel_per_metric_one_line_per_channel(tmp_path: Path) -> None:
    fig = plots.training_curves(metrics_frame(), "xgb-job-1: metrics")
    path = plots.save_png(fig, tmp_path / "curves.png")
    img = read_png(path)
    assert img.shape[:2] == (2 * 360 + 50, 2 * 550)  # 3 panels, two a row: 770 x 1100 pixels
    assert os.path.getsize(path) > 10_000

    rmse, loss, seconds = fig.axes[:3]
    assert [ax.get_title() for ax in fig.axes] == ["rmse", "objective_loss", "epoch_seconds"]
    assert fig.get_suptitle() == "xgb-job-1: metrics"
    assert {ax.get_xlabel() for ax in fig.axes} == {"seconds since the first metric"}
    assert rmse.get_ylabel() == "rmse"
    assert [ln.get_label() for ln in rmse.lines] == ["train", "validation"]
    assert [t.get_text() for t in rmse.get_legend().get_texts()] == ["train", "validation"]
    assert [ln.get_label() for ln in loss.lines] == ["train"] and seconds.get_legend() is None
    train, validation = rmse.lines
    # A channel keeps its colour on every panel; channels differ.
    assert loss.lines[0].get_color() == train.get_color() == "tab:blue"
    assert validation.get_color() == "tab:orange"
    np.testing.assert_allclose(line_points(train)[:, 1], [1 / (i + 1) for i in range(8)])
    np.testing.assert_allclose(line_points(validation)[:, 0], [2.0 * i for i in range(8)])

    for ax in fig.axes[:3]:
        for line in ax.lines:
            assert all(colour_at(img, ax, line_points(line), line.get_color())), (ax.get_title(), line)
    # The check tells colours apart: no validation orange where the train points are.
    assert not any(colour_at(img, rmse, line_points(train), "tab:orange"))


def test_a_long_run_is_plotted_in_minutes(tmp_path: Path) -> None:
    fig = plots.training_curves(metrics_frame(minutes=True), "long")
    plots.save_png(fig, tmp_path / "long.png")
    assert fig.axes[0].get_xlabel() == "minutes since the first metric"
    np.testing.assert_allclose(line_points(fig.axes[0].lines[0])[:, 0], [2.0 * i for i in range(8)])


def test_one_metric_is_one_panel(tmp_path: Path) -> None:
    df = metrics_frame()
    fig = plots.training_curves(df[df["metric_name"] == "validation:rmse"], "one")
    img = read_png(plots.save_png(fig, tmp_path / "one.png"))
    assert img.shape[:2] == (410, 550) and len(fig.axes) == 1
    (line,) = fig.axes[0].lines
    assert line.get_label() == "validation" and line.get_color() == "tab:orange"
    assert all(colour_at(img, fig.axes[0], line_points(line), "tab:orange"))


def test_channel_colours() -> None:
    assert plots.split_metric("train:objective_loss") == ("train", "objective_loss")
    assert plots.split_metric("loss") == ("", "loss")
    colours = plots.channel_colors(["eval", "validation", "train", "holdout"])
    assert colours["train"] == "tab:blue" and colours["validation"] == "tab:orange"
    assert len(set(colours.values())) == 4 and "tab:green" not in colours.values()  # test's own


def point(name: str, value: float, seconds: float) -> dict[str, Any]:
    return {"MetricName": name, "Value": value, "Timestamp": T0 + datetime.timedelta(seconds=seconds)}


def metrics_backend(points: list[dict[str, Any]]) -> RecordingBackend:
    return RecordingBackend(
        GetTrainingJobMetrics={"Metrics": points},
        DescribeTrainingJob=training_job_description(JOB, "Completed", "Completed"),
    )


def test_training_job_analytics_plot_writes_the_png_on_one_time_axis(tmp_path: Path) -> None:
    # validation reports one second after train: the DataFrame counts each from its own first point
    # (as SageMaker's), the plot puts both on the job's clock.
    points = [point("train:auc", 0.8 + 0.02 * i, 1 + 2 * i) for i in range(5)]
    points += [point("validation:auc", 0.7 + 0.02 * i, 2 + 2 * i) for i in range(5)]
    analytics = TrainingJobAnalytics(JOB, sagemaker_session=Session(backend=metrics_backend(points)))
    fig = analytics.plot(tmp_path / "auc.png")
    assert isinstance(fig, Figure)
    img = read_png(tmp_path / "auc.png")
    assert img.shape[:2] == (410, 550)
    train, validation = fig.axes[0].lines
    np.testing.assert_allclose(line_points(train)[:, 0], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(line_points(validation)[:, 0], [1, 3, 5, 7, 9])
    np.testing.assert_allclose(line_points(validation)[:, 1], [0.7, 0.72, 0.74, 0.76, 0.78])
    assert all(colour_at(img, fig.axes[0], line_points(validation), "tab:orange"))
    assert all(colour_at(img, fig.axes[0], line_points(train), "tab:blue"))
    assert analytics.dataframe()["timestamp"].tolist()[5:] == [0, 2, 4, 6, 8]  # the DataFrame as it was
    assert analytics.plot() is not fig  # no filename: a Figure, nothing written
    assert sorted(os.listdir(tmp_path)) == ["auc.png"]


def test_a_job_without_metrics_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = Session(backend=metrics_backend([]))
    with pytest.raises(ValueError, match=f"training job {JOB} has no metrics to plot yet: built-in"):
        TrainingJobAnalytics(JOB, sagemaker_session=session).plot(tmp_path / "x.png")
    with pytest.raises(ValueError, match="no metrics called validation:auc to plot yet"):
        TrainingJobAnalytics(JOB, ["validation:auc"], sagemaker_session=session).plot()

    out = tmp_path / "x.png"
    assert main(["jobs", "plot", JOB, "--out", str(out)], session=session) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raymaker: error: training job {JOB} has no metrics to plot yet"), err
    assert not out.exists()


def test_jobs_plot_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    points = [
        point(f"{c}:rmse", v + 0.1 * i, i) for i in range(4) for c, v in (("train", 1), ("validation", 2))
    ]
    backend = metrics_backend(points)
    monkeypatch.chdir(tmp_path)
    assert main(["jobs", "plot", JOB], session=Session(backend=backend)) == 0
    written = tmp_path / f"{JOB}-curves.png"
    assert capsys.readouterr().out == f"wrote {written}\n"
    assert read_png(written).shape[:2] == (410, 550)
    assert backend.requests("GetTrainingJobMetrics") == [{"TrainingJobName": JOB}]

    backend.calls.clear()
    out = tmp_path / "sub" / "v.png"
    out.parent.mkdir()
    assert (
        main(
            ["jobs", "plot", JOB, "-o", str(out), "--metric", "validation:rmse"],
            session=Session(backend=backend),
        )
        == 0
    )
    assert backend.requests("GetTrainingJobMetrics") == [
        {"TrainingJobName": JOB, "MetricName": "validation:rmse"}
    ]
    assert capsys.readouterr().out == f"wrote {out}\n" and out.stat().st_size > 0


# --- tuning trials -----------------------------------------------------------------------------------

PARAMETER_RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "eta", "MinValue": "0.01", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
    ],
    "IntegerParameterRanges": [
        {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"}
    ],
    "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}],
}
# (start second, eta, max_depth, booster, objective): listed out of start order on purpose.
TRIALS = [
    (3, 0.3, 6, "gbtree", 0.90),
    (0, 0.02, 3, "gbtree", 0.80),
    (1, 0.1, 5, "dart", 0.85),
    (2, 0.4, 7, "dart", None),  # failed: no objective
    (4, 0.05, 4, "dart", 0.95),
    (5, 0.2, 2, "gbtree", 0.60),
]


def trial_summary(i: int, start: int, eta: float, depth: int, booster: str, value: float | None) -> dict:
    name = f"{TUNING}-{i:03d}-0000000{i}"
    summary: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": arn("training-job", name),
        "TuningJobName": TUNING,
        "CreationTime": T0,
        "TrainingStartTime": T0 + datetime.timedelta(seconds=start),
        "TrainingEndTime": T0 + datetime.timedelta(seconds=start + 30),
        "TrainingJobStatus": "Completed" if value is not None else "Failed",
        "TunedHyperParameters": {"eta": str(eta), "max_depth": str(depth), "booster": booster},
    }
    if value is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "MetricName": "validation:auc",
            "Value": value,
        }
    return summary


def tuning_describe(objective_type: str = "Maximize") -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": TUNING,
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", TUNING),
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": objective_type, "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": PARAMETER_RANGES,
        },
        "HyperParameterTuningJobStatus": "Completed",
        "CreationTime": T0,
        "TrainingJobStatusCounters": {"Completed": 5, "NonRetryableError": 1},
        "ObjectiveStatusCounters": {"Succeeded": 5, "Failed": 1},
    }


def tuning_backend(trials: list[tuple] = TRIALS, objective_type: str = "Maximize") -> RecordingBackend:
    return RecordingBackend(
        DescribeHyperParameterTuningJob=tuning_describe(objective_type),
        ListTrainingJobsForHyperParameterTuningJob={
            "TrainingJobSummaries": [trial_summary(i, *t) for i, t in enumerate(trials)]
        },
    )


def test_tuning_trials_objective_best_so_far_and_each_hyperparameter(tmp_path: Path) -> None:
    analytics = HyperparameterTuningJobAnalytics(TUNING, Session(backend=tuning_backend()))
    fig = analytics.plot(tmp_path / "trials.png")
    img = read_png(tmp_path / "trials.png")
    assert img.shape[:2] == (700, 1200)  # the top panel and one row of three hyperparameters
    top, eta, depth, booster = fig.axes
    assert "5 of 6 trials with an objective; best validation:auc = 0.95" in fig.get_suptitle()
    assert top.get_xlabel() == "trial (in the order they started)"
    assert top.get_ylabel() == "validation:auc (higher is better)"
    assert [ax.get_title() for ax in (eta, depth, booster)] == [
        "eta (Logarithmic scaling)",
        "max_depth",
        "booster",
    ]

    trials, star, failed = top.collections
    # In start order: 0.80, 0.85, (failed), 0.90, 0.95, 0.60.
    np.testing.assert_allclose(trials.get_offsets(), [[1, 0.8], [2, 0.85], [4, 0.9], [5, 0.95], [6, 0.6]])
    np.testing.assert_allclose(star.get_offsets(), [[5, 0.95]])
    assert failed.get_offsets()[:, 0].tolist() == [3]
    (best_so_far,) = top.lines
    np.testing.assert_allclose(line_points(best_so_far)[:, 1], [0.8, 0.85, 0.85, 0.9, 0.95, 0.95])

    assert all(colour_at(img, top, [[1, 0.8], [2, 0.85], [4, 0.9], [6, 0.6]], plots.TRIAL_COLOR))
    assert all(colour_at(img, top, [[5, 0.95]], plots.BEST_COLOR))
    # The best-so-far steps between trials (x + 0.5), where no trial's marker is.
    assert all(
        colour_at(img, top, [[1.5, 0.8], [2.5, 0.85], [3.5, 0.85], [5.5, 0.95]], plots.BEST_SO_FAR_COLOR)
    )
    failed_pixel = [[3, top.get_ylim()[0] + 0.03 * (top.get_ylim()[1] - top.get_ylim()[0])]]
    assert all(colour_at(img, top, failed_pixel, plots.NO_OBJECTIVE_COLOR))
    assert not any(colour_at(img, top, [[1, 0.8], [6, 0.6]], plots.BEST_COLOR))

    assert eta.get_xscale() == "log" and depth.get_xscale() == "linear"
    assert [t.get_text() for t in booster.get_xticklabels()] == ["gbtree", "dart"]
    # Each hyperparameter panel: the five scored trials at (value, objective), the best one starred.
    by_eta = [[0.02, 0.8], [0.1, 0.85], [0.3, 0.9], [0.2, 0.6]]
    assert all(colour_at(img, eta, by_eta, plots.TRIAL_COLOR)) and all(
        colour_at(img, eta, [[0.05, 0.95]], plots.BEST_COLOR)
    )
    by_depth = [[3, 0.8], [5, 0.85], [6, 0.9], [2, 0.6]]
    assert all(colour_at(img, depth, by_depth, plots.TRIAL_COLOR)) and all(
        colour_at(img, depth, [[4, 0.95]], plots.BEST_COLOR)
    )
    by_booster = [[0, 0.8], [1, 0.85], [0, 0.9], [0, 0.6]]  # gbtree at 0, dart at 1
    assert all(colour_at(img, booster, by_booster, plots.TRIAL_COLOR)) and all(
        colour_at(img, booster, [[1, 0.95]], plots.BEST_COLOR)
    )


def test_minimize_takes_the_lowest_as_best(tmp_path: Path) -> None:
    analytics = HyperparameterTuningJobAnalytics(
        TUNING, Session(backend=tuning_backend(objective_type="Minimize"))
    )
    fig = analytics.plot()
    top = fig.axes[0]
    assert top.get_ylabel() == "validation:auc (lower is better)"
    np.testing.assert_allclose(top.collections[1].get_offsets(), [[6, 0.6]])
    np.testing.assert_allclose(line_points(top.lines[0])[:, 1], [0.8, 0.8, 0.8, 0.8, 0.8, 0.6])


def test_two_rows_of_hyperparameters(tmp_path: Path) -> None:
    ranges = {
        "ContinuousParameterRanges": [{"Name": f"p{i}", "MinValue": "0", "MaxValue": "1"} for i in range(4)]
    }
    df = pd.DataFrame(
        {
            **{f"p{i}": [0.1, 0.5, 0.9] for i in range(4)},
            "TrainingJobName": ["a", "b", "c"],
            "TrainingJobStatus": ["Completed"] * 3,
            "FinalObjectiveValue": [1.0, 2.0, 1.5],
            "TrainingStartTime": [T0, T0, T0],
        }
    )
    fig = plots.tuning_trials(df, "t", "loss", "Minimize", ranges)
    img = read_png(plots.save_png(fig, tmp_path / "t.png"))
    assert img.shape[:2] == (1020, 1200) and len(fig.axes) == 5
    assert all(colour_at(img, fig.axes[4], [[0.5, 2.0], [0.9, 1.5]], plots.TRIAL_COLOR))
    assert all(colour_at(img, fig.axes[4], [[0.1, 1.0]], plots.BEST_COLOR))


def test_no_trial_with_an_objective_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = [(0, 0.1, 3, "gbtree", None), (1, 0.2, 4, "dart", None)]
    session = Session(backend=tuning_backend(running))
    with pytest.raises(
        ValueError,
        match=r"tuning job xgb-tune-1 has no trial with an objective \(validation:auc\) to plot yet \(2 Failed\)",
    ):
        HyperparameterTuningJobAnalytics(TUNING, session).plot()
    out = tmp_path / "t.png"
    assert main(["tuning-jobs", "plot", TUNING, "--out", str(out)], session=session) == 2
    assert "no trial with an objective" in capsys.readouterr().err and not out.exists()

    empty = Session(backend=tuning_backend([]))
    with pytest.raises(ValueError, match=r"to plot yet \(no trials yet\)"):
        HyperparameterTuningJobAnalytics(TUNING, empty).plot()


def test_tuning_jobs_plot_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tuning-jobs", "plot", TUNING], session=Session(backend=tuning_backend())) == 0
    written = tmp_path / f"{TUNING}-trials.png"
    assert capsys.readouterr().out == f"wrote {written}\n"
    assert read_png(written).shape[:2] == (700, 1200)
