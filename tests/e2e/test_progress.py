"""fit(logs=True)'s progress display on a real training job: the engine's metric steps and the
hyperparameters' total give ``round 12/12`` (the numbering ``progress.STEP_COUNTERS`` assumes), live in a
terminal and as plain lines in a pipe."""

import io
import re

import numpy as np
import pytest

from raymaker import Estimator, Session, TrainingInput
from raymaker.sdk import progress

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def channels(s3_server):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    lines = [f"{label}," + ",".join(f"{v:.5f}" for v in row) + "\n" for label, row in zip(y, x, strict=True)]
    bucket = s3_server.new_bucket()
    for key, part in (("train", lines[:300]), ("validation", lines[300:])):
        s3_server.client.put_object(Bucket=bucket, Key=f"{key}/part-0.csv", Body="".join(part).encode())
    return bucket, {
        name: TrainingInput(f"s3://{bucket}/{name}/", content_type="text/csv")
        for name in ("train", "validation")
    }


def _estimator(bucket: str) -> Estimator:
    return Estimator(
        "xgboost",
        hyperparameters={"objective": "binary:logistic", "num_round": 12, "eval_metric": "auc"},
        output_path=f"s3://{bucket}/output",
        session=Session(),
    )


def test_fit_shows_rounds_out_of_num_round_live(ray_session, channels, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("TERM", "xterm-256color")
    bucket, inputs = channels
    est = _estimator(bucket)
    est.fit(inputs, wait=False)
    out = TTY()
    desc = est.latest_training_job.wait(logs=True, out=out)
    assert desc["TrainingJobStatus"] == "Completed"
    raw = out.getvalue()
    text = ANSI.sub("", raw)
    assert "\x1b[" in raw
    assert "[11]" in text  # xgboost's own line for the last round (0-based), streamed as before
    last = text[text.rindex("✔") :]
    assert "✔ Completed" in last and "round 12/12 · elapsed" in last and "remaining" not in last
    assert "validation:auc" in last and "Billable seconds:" in last


def test_fit_in_a_pipe_prints_plain_progress_lines(ray_session, channels, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)  # a line whenever it moved: the job is short
    bucket, inputs = channels
    est = _estimator(bucket)
    est.fit(inputs)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    name = est.latest_training_job.name
    lines = [line for line in out.splitlines() if line.startswith(f"Training job {name}: ")]
    # the first description is a change from nothing: a line at once, whatever the job's speed
    assert lines and re.match(rf"Training job {name}: \w+ \| .*elapsed \d+s", lines[0]), out
    # once rounds are counted they are out of num_round (xgboost numbers them from 0)
    rounds = [int(m.group(1)) for line in lines for m in [re.search(r" \| round (\d+)/12 \| ", line)] if m]
    assert rounds == sorted(rounds) and all(1 <= r <= 12 for r in rounds)
    assert " Completed - Training job completed" in out and "Billable seconds:" in out
