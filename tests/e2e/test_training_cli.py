"""Training from the command line, the quickstart, incremental training, and a driver script that
connects to a running cluster with RAY_ADDRESS (how ``ray job submit -- python script.py`` runs it)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xgboost
from matplotlib.colors import to_rgb
from PIL import Image

from raymaker import Estimator, Session, TrainingInput
from raymaker.cli import main
from raymaker.cli.jobs import training_job_logs
from raymaker.cli.quickstart import run_quickstart, write_dataset
from raymaker.sdk import plots

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def csv_dirs(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("cancer")))


def test_quickstart(ray_session, capsys):
    assert run_quickstart() == 0
    out = capsys.readouterr().out
    assert "(Completed)" in out and "billable seconds:" in out and "model.tar.gz" in out
    auc = float(out.split("validation:auc:")[-1].split()[0])
    assert auc > 0.95


def colour_pixels(img: np.ndarray, colour: str) -> int:
    """How many pixels of the image are of the colour (within antialiasing's rounding)."""
    return int((np.abs(img - np.array(to_rgb(colour)) * 255).max(axis=-1) <= 12).sum())


def test_train_and_jobs_commands(ray_session, csv_dirs, capsys, tmp_path):
    train, validation = csv_dirs
    args = ["train", "--algorithm", "xgboost", "--train", train, "--validation", validation]
    args += ["--content-type", "text/csv", "--hp", "num_round=5", "--hp", "objective=binary:logistic"]
    assert main([*args, "--job-name", "cli-train-job"]) == 0
    out = capsys.readouterr().out
    assert "Completed - Training job completed" in out and "model: file://" in out

    assert main(["jobs", "list", "--name-contains", "cli-train"]) == 0
    assert "cli-train-job" in capsys.readouterr().out
    assert main(["jobs", "describe", "cli-train-job"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["TrainingJobStatus"] == "Completed" and desc["HyperParameters"]["num_round"] == "5"
    assert main(["jobs", "logs", "cli-train-job"]) == 0
    assert "Uploaded model.tar.gz" in capsys.readouterr().out

    # The metric curves of the job that just ran: a panel per metric, a line per channel.
    metrics = Session().call("GetTrainingJobMetrics", {"TrainingJobName": "cli-train-job"})["Metrics"]
    names = {m["MetricName"] for m in metrics}
    assert {plots.split_metric(n)[0] for n in names} == {"train", "validation"}, names
    panels = len({plots.split_metric(n)[1] for n in names})
    out = tmp_path / "curves.png"
    assert main(["jobs", "plot", "cli-train-job", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    with Image.open(out) as png:
        assert png.format == "PNG"
        img = np.asarray(png.convert("RGB")).astype(int)
    cols = min(panels, 2)
    assert img.shape[:2] == (360 * math.ceil(panels / cols) + 50, 550 * cols)
    for channel in ("train", "validation"):
        # A curve across a panel is well over 250 pixels of its colour; a legend's swatch is under 100.
        in_panels = sum(1 for n in names if plots.split_metric(n)[0] == channel)
        assert colour_pixels(img, plots.KNOWN_CHANNELS[channel]) > 250 * in_panels, channel
    assert main(["jobs", "plot", "no-such-job", "--out", str(tmp_path / "none.png")]) == 2
    assert "raymaker jobs list" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
    assert main(["jobs", "stop", "cli-train-job"]) == 2
    assert "ValidationException" in capsys.readouterr().err
    assert main([*args, "--job-name", "cli-train-job"]) == 2  # the name is taken
    assert "ResourceInUse" in capsys.readouterr().err
    assert main(["jobs", "describe", "no-such-job"]) == 2


def test_incremental_training_continues_a_model(ray_session, csv_dirs, tmp_path):
    train, validation = csv_dirs
    session = Session()
    inputs = {"train": TrainingInput(train, content_type="text/csv")}
    first = Estimator(
        "xgboost", hyperparameters={"num_round": 5, "objective": "binary:logistic"}, session=session
    )
    first.fit(inputs, logs=False)
    second = Estimator(
        "xgboost", hyperparameters={"num_round": 7, "objective": "binary:logistic"}, session=session
    )
    second.fit({**inputs, "model": TrainingInput(first.model_data)}, logs=False)

    def trees(uri: str) -> int:
        import tarfile

        path = uri[len("file://") :]
        with tarfile.open(path) as tar:
            tar.extractall(tmp_path / os.path.basename(os.path.dirname(os.path.dirname(path))), filter="data")
        booster = xgboost.Booster()
        booster.load_model(
            str(tmp_path / os.path.basename(os.path.dirname(os.path.dirname(path))) / "xgboost-model")
        )
        return booster.num_boosted_rounds()

    assert trees(first.model_data) == 5
    assert trees(second.model_data) == 12  # 5 from the model channel + 7 more


def test_driver_script_against_a_running_cluster(ray_session, csv_dirs, tmp_path):
    import ray

    train, _ = csv_dirs
    script = tmp_path / "train_job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from raymaker import Estimator, TrainingInput
            est = Estimator("xgboost", hyperparameters={{"num_round": 3, "objective": "binary:logistic"}})
            est.fit(TrainingInput({train!r}, content_type="text/csv"), logs=False, job_name="driver-script-job")
            print("MODEL", est.model_data)
            """
        )
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MODEL file://" in proc.stdout
    # The job ran on this test session's cluster and is in the same job database.
    desc = Session().call("DescribeTrainingJob", {"TrainingJobName": "driver-script-job"})
    assert desc["TrainingJobStatus"] == "Completed"


def test_warm_pool_reuses_the_instance(ray_session, csv_dirs):
    import time

    train, _ = csv_dirs
    session = Session()
    inputs = {"train": TrainingInput(train, content_type="text/csv")}

    def job(name, keep_alive):
        est = Estimator(
            "xgboost",
            hyperparameters={"num_round": 3, "objective": "binary:logistic"},
            keep_alive_period_in_seconds=keep_alive,
            session=session,
        )
        t = time.time()
        est.fit(inputs, logs=False, job_name=name)
        lines = [e["Message"] for e in training_job_logs(session, name)]
        pid = next(int(ln.split("pid ")[1].split(",")[0]) for ln in lines if "raymaker worker 0" in ln)
        return pid, time.time() - t

    pid1, _ = job("warm-1", keep_alive=3)
    assert (
        session.call("DescribeTrainingJob", {"TrainingJobName": "warm-1"})["WarmPoolStatus"]["Status"]
        == "Available"
    )
    pid2, seconds = job("warm-2", keep_alive=3)
    assert pid2 == pid1  # the same instance process ran both jobs
    assert seconds < 3  # no process to start: the job is the work itself
    first = session.call("DescribeTrainingJob", {"TrainingJobName": "warm-1"})["WarmPoolStatus"]
    assert first == {"Status": "Reused", "ReusedByJob": "warm-2"}
    # After KeepAlivePeriodInSeconds the idle instance is let go.
    deadline = time.time() + 20
    while time.time() < deadline:
        status = session.call("DescribeTrainingJob", {"TrainingJobName": "warm-2"})["WarmPoolStatus"][
            "Status"
        ]
        if status == "Terminated":
            break
        time.sleep(0.5)
    assert status == "Terminated"
    pid3, _ = job("warm-3", keep_alive=0)
    assert pid3 != pid1
