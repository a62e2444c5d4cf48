"""``raymaker up``, then ``ray job submit`` of a plain raymaker script, literally, as the README says;
a script started from a shell joins the same cluster and its job outlives it; ``raymaker down`` leaves
nothing running. Everything runs in subprocesses with its own RAYMAKER_HOME, Ray temp dir and free
ports, so the test session's own Ray (``ray_session``) is neither used nor disturbed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pytest

from raymaker.cluster import local

pytestmark = pytest.mark.e2e

BIN = os.path.dirname(sys.executable)

DRIVER = '''\
"""A plain raymaker script: the built-in XGBoost on train.csv beside it."""
import os
import sys

from raymaker import Estimator, TrainingInput

wait = "--no-wait" not in sys.argv
est = Estimator(
    "xgboost",
    instance_type="local",
    hyperparameters={"objective": "binary:logistic", "num_round": 10, "eval_metric": "auc"},
)
est.fit({"train": TrainingInput(os.path.abspath("train.csv"), content_type="text/csv")}, wait=wait, logs=False)
print(f"DRIVER python: {sys.executable}")
print(f"DRIVER training job: {est.latest_training_job.name}", flush=True)
'''

# Run with the SDK (no Ray needed to read records): both jobs' status and the first metric's time.
CHECK = """\
import json, sys, time
from raymaker import Session
session, out = Session(), {}
for name in sys.argv[1:]:
    deadline = time.monotonic() + 60
    while True:
        desc = session.call("DescribeTrainingJob", {"TrainingJobName": name})
        if desc["TrainingJobStatus"] != "InProgress" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    metrics = session.call("GetTrainingJobMetrics", {"TrainingJobName": name})["Metrics"]
    out[name] = {
        "status": desc["TrainingJobStatus"],
        "first_metric": min((m["Timestamp"].timestamp() for m in metrics), default=None),
    }
print(json.dumps(out))
"""


def run(cmd: list[str], env: dict[str, str], timeout: float = 120, cwd: str | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def run_together(*commands: tuple[list[str], dict[str, str], str | None], timeout: float = 120) -> list[str]:
    """``run`` for commands that do not wait on each other, started at once: each is mostly a Python
    process's start-up (imports), which two cores overlap. Their outputs, in order."""
    procs = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd, env, cwd in commands
    ]
    outputs = []
    try:
        for (cmd, _, _), proc in zip(commands, procs):
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{stdout}\n{stderr}"
            outputs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def test_up_ray_job_submit_down(tmp_path):
    home = tmp_path / "home"
    temp_dir = tempfile.mkdtemp(prefix="rm-up-", dir="/tmp")  # short: Ray's socket paths have a limit
    gcs_port, dashboard_port = local.free_port(), local.free_port()
    env = dict(os.environ)
    env["RAYMAKER_HOME"] = str(home)
    env["PATH"] = os.pathsep.join([BIN, env.get("PATH", "")])
    # What the test session's own Ray set for itself, and anything that would join another cluster.
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", *local.HAPROXY_PORTS):
        env.pop(name, None)
    env["RAYMAKER_RUNTIME_URL"] = f"http://127.0.0.1:{local.free_port()}"

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    np.savetxt(job_dir / "train.csv", np.column_stack([x[:, 0] + x[:, 1] > 0, x]), delimiter=",", fmt="%.6g")
    (job_dir / "driver.py").write_text(DRIVER)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    cluster = None
    try:
        t0 = time.monotonic()
        up = [sys.executable, "-m", "raymaker.cli", "up", "--num-cpus", "2", "--temp-dir", temp_dir]
        up += ["--port", str(gcs_port), "--dashboard-port", str(dashboard_port)]
        out = run(up, env)
        up_s = time.monotonic() - t0
        cluster = local.read_state(home)
        assert cluster is not None and local.running(home) is not None
        # It says how to reach it: the dashboard, the exact submit line, what Ray's CLI needs.
        assert f"dashboard:       {dashboard}" in out
        assert f"ray job submit --address {dashboard} --working-dir . -- python driver.py" in out
        assert "export RAY_AUTH_MODE=token" in out

        # Ray's CLI, as the user runs it after the export `up` printed.
        cli_env = {**env, "RAY_AUTH_MODE": "token"}
        submission = f"rm-e2e-{uuid.uuid4().hex[:8]}"
        submit = [os.path.join(BIN, "ray"), "job", "submit", "--address", dashboard]
        submit += ["--submission-id", submission, "--working-dir", str(job_dir), "--", "python", "driver.py"]
        submitted_at = time.time()
        t1 = time.monotonic()
        run(submit, cli_env, cwd=str(job_dir))
        submit_s = time.monotonic() - t1
        # Meanwhile (the two wait on nothing of each other): a script started from a shell joins the
        # same cluster by itself; its job outlives it.
        t2 = time.monotonic()
        logs, out = run_together(
            ([os.path.join(BIN, "ray"), "job", "logs", "--address", dashboard, submission], cli_env, None),
            ([sys.executable, "driver.py", "--no-wait"], env, str(job_dir)),
        )
        script_s = time.monotonic() - t2
        assert f"DRIVER python: {BIN}" in logs  # `python` is raymaker's, from the cluster's PATH
        job = logs.split("DRIVER training job: ")[1].split()[0]
        detached = out.split("DRIVER training job: ")[1].split()[0]

        check, status = run_together(
            ([sys.executable, "-c", CHECK, job, detached], env, None),
            ([sys.executable, "-m", "raymaker.cli", "status"], env, None),
        )
        records = json.loads(check)
        assert records[job]["status"] == "Completed", records
        assert records[detached]["status"] == "Completed", records
        first_metric_s = records[job]["first_metric"] - submitted_at
        assert first_metric_s > 0
        assert "1 alive" in status and "raymaker-job-service-" in status and "succeeded" in status
        print(
            f"\nraymaker up {up_s:.1f} s; `ray job submit` -> first metric {first_metric_s:.1f} s, "
            f"-> job done {submit_s:.1f} s; shell script with --no-wait (beside `ray job logs`) {script_s:.1f} s"
        )
    finally:
        t3 = time.monotonic()
        down = subprocess.run(
            [sys.executable, "-m", "raymaker.cli", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        down_s = time.monotonic() - t3
        left = local.processes_of(cluster) if cluster else []
        for pid in left:  # never leave a cluster behind, even when `down` failed
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    print(f"raymaker down {down_s:.1f} s")
    assert not left, f"processes left after raymaker down: {left}"
    assert local.read_state(home) is None and local.running(home) is None
    assert not local.listening(f"127.0.0.1:{gcs_port}") and not local.listening(f"127.0.0.1:{dashboard_port}")
    assert "no local cluster is up" in run([sys.executable, "-m", "raymaker.cli", "down"], env)
