"""``raymaker tune`` and ``raymaker tuning-jobs list|describe|trials|stop`` run in-process against the
session's Ray: a small Random xgboost tune on local CSV channels, its trials read back, and a bad range
refused before anything runs."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from raymaker import Session
from raymaker.cli import main
from raymaker.sdk import plots

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune-cli-data")
    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (a, b) in {"train": (xt, yt), "validation": (xv, yv)}.items():
        (d / name).mkdir()
        np.savetxt(d / name / "part.csv", np.column_stack([b, a]), delimiter=",", fmt="%.7g")
    return d


def _tune(data, name, *ranges):
    return [
        "tune", "--algorithm", "xgboost", "--train", str(data / "train"),
        "--validation", str(data / "validation"), "--content-type", "text/csv",
        "--hp", "num_round=10", "--hp", "objective=binary:logistic",
        "--output-path", str(data / "output"),
        "--objective-metric", "validation:auc", "--objective-type", "Maximize",
        "--strategy", "Random", "--max-jobs", "3", "--max-parallel-jobs", "2", "--random-seed", "3",
        *ranges, "--job-name", name,
    ]  # fmt: skip


def colour_pixels(img: np.ndarray, colour: str) -> int:
    """How many pixels of the image are of the colour (within antialiasing's rounding)."""
    return int((np.abs(img - np.array(to_rgb(colour)) * 255).max(axis=-1) <= 12).sum())


def test_tune_then_list_describe_trials(session, data, capsys, tmp_path):
    name = "cli-tune-e2e"
    ranges = ["--continuous", "eta=0.05:0.5:Logarithmic", "--integer", "max_depth=2:6"]
    assert main(_tune(data, name, *ranges)) == 0
    out = capsys.readouterr().out
    assert f"tuning job: {name}\n" in out
    assert "status: Completed (3 training job(s): 3 Completed)" in out, out
    header = next(line for line in out.splitlines() if line.startswith("TRAINING JOB"))
    assert header.split() == ["TRAINING", "JOB", "STATUS", "eta", "max_depth", "validation:auc"]
    rows = [line.split() for line in out.splitlines() if re.match(rf"{name}-\d{{3}}-[0-9a-f]{{8}} ", line)]
    assert len(rows) == 3 and all(r[1] == "Completed" for r in rows), out
    for r in rows:
        assert 0.05 <= float(r[2]) <= 0.5 and 2 <= int(r[3]) <= 6 and 0.5 < float(r[4]) <= 1
    assert sum(r[-1] == "*" for r in rows) == 1  # the best one, marked

    best = re.search(r"^best training job: (\S+) \(validation:auc = ([\d.]+)\)$", out, re.M)
    assert best, out
    job = session.call("DescribeTrainingJob", {"TrainingJobName": best[1]})
    assert job["TrainingJobStatus"] == "Completed"
    assert job["TuningJobArn"].endswith(f"hyper-parameter-tuning-job/{name}")
    assert f"  model: {job['ModelArtifacts']['S3ModelArtifacts']}" in out
    assert float(best[2]) == pytest.approx(max(float(r[4]) for r in rows), abs=1e-5)
    assert job["ModelArtifacts"]["S3ModelArtifacts"].startswith(f"file://{data}/output/")

    assert main(["tuning-jobs", "list", "--name-contains", "cli-tune"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "STATUS", "STRATEGY", "JOBS", "CREATED", "SECONDS"]
    assert [r.split()[:4] for r in listed[1:]] == [[name, "Completed", "Random", "3"]]

    assert main(["tuning-jobs", "describe", name]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    assert desc["BestTrainingJob"]["TrainingJobName"] == best[1]
    assert desc["TrainingJobDefinition"]["StaticHyperParameters"]["num_round"] == "10"
    assert "T" in desc["CreationTime"]  # ISO 8601

    assert main(["tuning-jobs", "trials", name, "--best-first"]) == 0
    out = capsys.readouterr().out
    trial_rows = [line.split() for line in out.splitlines() if line.startswith(f"{name}-")]
    assert trial_rows[0][0] == best[1] and trial_rows[0][-1] == "*"
    assert sorted(r[0] for r in trial_rows) == sorted(r[0] for r in rows)
    assert f"best training job: {best[1]}" in out

    # The trials as a PNG: objective per trial with the best so far, then eta and max_depth.
    png = tmp_path / "trials.png"
    assert main(["tuning-jobs", "plot", name, "-o", str(png)]) == 0
    assert capsys.readouterr().out == f"wrote {png}\n"
    with Image.open(png) as image:
        assert image.format == "PNG"
        img = np.asarray(image.convert("RGB")).astype(int)
    assert img.shape[:2] == (700, 1200)  # the top panel, one row of two hyperparameters
    # Three panels each with the trials' dots and the best one's star; the best-so-far line spans
    # the top panel. A legend entry alone is under 100 pixels.
    assert colour_pixels(img, plots.TRIAL_COLOR) > 300
    assert colour_pixels(img, plots.BEST_COLOR) > 300
    assert colour_pixels(img, plots.BEST_SO_FAR_COLOR) > 600

    assert main(["tuning-jobs", "stop", name]) == 2  # it has ended
    assert "Completed" in capsys.readouterr().err
    assert main(["tuning-jobs", "describe", "no-such-tuning-job"]) == 2
    err = capsys.readouterr().err
    assert "no-such-tuning-job" in err and "raymaker tuning-jobs list" in err


def test_no_wait_then_stop(session, data, capsys):
    name = "cli-tune-stop"
    argv = _tune(data, name, "--categorical", "max_depth=2,3,4,5")
    argv[argv.index("--max-jobs") + 1] = "4"
    argv[argv.index("--max-parallel-jobs") + 1] = "1"
    assert main([*argv, "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert f"tuning job: {name}\nstatus: InProgress" in out
    assert main(["tuning-jobs", "stop", name]) == 0
    assert capsys.readouterr().out == f"stopping {name}\n"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        desc = session.call("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": name})
        if desc["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.2)
    assert desc["HyperParameterTuningJobStatus"] == "Stopped"
    assert main(["tuning-jobs", "list", "--status", "Stopped", "--name-contains", "cli-tune"]) == 0
    assert [r.split()[0] for r in capsys.readouterr().out.splitlines()[1:]] == [name]


def test_bad_ranges_are_refused(session, data, capsys):
    assert main(_tune(data, "cli-tune-bad", "--continuous", "no_such_thing=0:1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("raymaker: error: ValidationException:") and "no_such_thing" in err, err
    assert main(["tuning-jobs", "describe", "cli-tune-bad"]) == 2  # nothing was made
    capsys.readouterr()

    with pytest.raises(SystemExit, match="NAME=MIN:MAX"):
        main(_tune(data, "cli-tune-bad", "--continuous", "eta=0.1"))
    with pytest.raises(SystemExit, match="scaling 'Log' is not one of"):
        main(_tune(data, "cli-tune-bad", "--continuous", "eta=0.1:0.3:Log"))
    with pytest.raises(SystemExit, match="MIN and MAX must be integers"):
        main(_tune(data, "cli-tune-bad", "--integer", "max_depth=2.5:6"))
    with pytest.raises(SystemExit, match="at least one range"):
        main(_tune(data, "cli-tune-bad"))
