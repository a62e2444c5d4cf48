"""A SageMaker training script run end to end on one host, as the training toolkit would run it: what
the script sees (argv, SM_* variables, the tree, its working directory, its imports), what it prints
(logs, metrics), and how it ends (output/success, or a FailureReason)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import threading
import time
from collections.abc import Iterator

import pytest

from raymaker.io.channels import Channel
from raymaker.toolkit import entry_point as ep
from raymaker.toolkit.paths import MLTree
from raymaker.toolkit.runner import ScriptError, ScriptRun, run_script
from tests.toolkit.test_entry_point import make_sourcedir, make_wheel

# A script written for SageMaker: argparse over the hyperparameters, SM_* for the paths; it records
# what it saw in the model directory, then prints a metric line with a tab.
TRAIN_PY = """
import argparse, json, os, sys
import helper  # a module beside it in source_dir

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--lr", type=float)
parser.add_argument("--optimizer")
parser.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
parser.add_argument("--train", default=os.environ["SM_CHANNEL_TRAIN"])
args = parser.parse_args()

seen = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "helper": helper.NAME,
        "train_files": sorted(os.listdir(args.train)), "args": vars(args)}
with open(os.path.join(args.model_dir, "seen.json"), "w") as f:
    json.dump(seen, f)
for epoch in range(args.epochs):
    print(f"epoch={epoch}\\tloss={1.0 / (epoch + 1):.3f}")
print("warning: on stderr", file=sys.stderr)
"""

TRAIN_SH = """#!/bin/sh
set -e
printf '%s\\n' "$@" > "$SM_MODEL_DIR/argv.txt"
echo "$SM_CURRENT_HOST $SM_NUM_GPUS $(pwd)" > "$SM_MODEL_DIR/env.txt"
echo "loss: 0.5"
"""


def spec_for(tmp_path, files: dict[str, str], **overrides) -> ScriptRun:
    tar = make_sourcedir(tmp_path / "sourcedir.tar.gz", files)
    submit = f"file://{tar}"
    fields = dict(
        job_name="job-1",
        job_arn="arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1",
        entry_point="train.py",
        submit_directory=submit,
        # As the v2 SDK sends them: every value JSON-encoded.
        hyperparameters={"epochs": "3", "lr": "0.1", "optimizer": '"adam"', "sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": json.dumps(submit)},
        channels=(Channel(name="train", s3_uri="s3://bucket/train/"),),
        environment={"MY_FLAG": "on"},
        metric_definitions=(("train:loss", r"loss=([0-9.]+)"),),
        instance_type="ml.m5.xlarge",
        hosts=("algo-1",),
        current_host="algo-1",
        num_cpus=2,
        num_gpus=0,
    )
    fields.update(overrides)
    return ScriptRun(**fields)


class Run:
    def __init__(self, tmp_path):
        self.tree = MLTree(str(tmp_path / "ml"))
        self.cache = str(tmp_path / "cache")
        self.logs: list[str] = []
        self.metrics: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.staged: list[str] = []

    @contextlib.contextmanager
    def stage(self, tree: MLTree) -> Iterator[None]:
        # What the caller's data staging does: the channel's files in place before the script starts.
        os.makedirs(tree.channel_dir("train"), exist_ok=True)
        with open(os.path.join(tree.channel_dir("train"), "part-0.csv"), "w") as f:
            f.write("1,2\n")
        self.staged.append("enter")
        try:
            yield
        finally:
            self.staged.append("exit")

    def __call__(self, spec: ScriptRun, **kw) -> None:
        kw.setdefault("stage_data", self.stage)
        run_script(spec, self.tree, on_log=self.logs.append, on_metrics=self.metrics.append, stop=self.stop,
                   cache_root=self.cache, extra_env={"FROM_CALLER": "1"}, **kw)


def test_python_script_sees_what_sagemaker_gives_it(tmp_path):
    run = Run(tmp_path)
    spec = spec_for(tmp_path, {"train.py": TRAIN_PY, "helper.py": "NAME = 'helper'\n"})
    run(spec)

    tree = run.tree
    with open(os.path.join(tree.model_dir, "seen.json")) as f:
        seen = json.load(f)
    # Hyperparameters as sorted --key value arguments; nothing reserved among them.
    assert seen["argv"] == ["--epochs", "3", "--lr", "0.1", "--optimizer", "adam"]
    assert seen["args"]["model_dir"] == tree.model_dir
    assert seen["cwd"] == tree.code_dir
    assert seen["helper"] == "helper"
    assert seen["train_files"] == ["part-0.csv"]  # staged before the script started
    env = seen["env"]
    assert env["SM_CHANNEL_TRAIN"] == tree.channel_dir("train")
    assert env["SM_HP_EPOCHS"] == "3" and env["SM_NUM_CPUS"] == "2"
    assert env["TRAINING_JOB_NAME"] == "job-1" and env["SAGEMAKER_BASE_DIR"] == tree.root
    assert env["MY_FLAG"] == "on" and env["FROM_CALLER"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == tree.code_dir
    assert json.loads(env["SM_TRAINING_ENV"])["user_entry_point"] == "train.py"

    assert os.path.exists(tree.success_file) and not os.path.exists(tree.failure_file)
    with open(tree.config_file("hyperparameters")) as f:
        assert json.load(f) == spec.hyperparameters
    assert run.staged == ["enter", "exit"]
    assert run.metrics == [{"train:loss": 1.0}, {"train:loss": 0.5}, {"train:loss": 0.333}]
    assert "epoch=2\tloss=0.333" in run.logs and "warning: on stderr" in run.logs
    assert any(line.startswith("Invoking script with the following command:") for line in run.logs)


def test_shell_script_gets_quoted_arguments(tmp_path):
    run = Run(tmp_path)
    spec = spec_for(tmp_path, {"train.sh": TRAIN_SH}, entry_point="train.sh",
                    hyperparameters={"msg": '"two words"', "n": "1"}, num_gpus=1)
    run(spec)
    with open(os.path.join(run.tree.model_dir, "argv.txt")) as f:
        assert f.read().splitlines() == ["--msg", "two words", "-n", "1"]
    with open(os.path.join(run.tree.model_dir, "env.txt")) as f:
        assert f.read().split() == ["algo-1", "1", run.tree.code_dir]
    assert run.metrics == []  # "loss: 0.5" does not match loss=(...)


def test_failure_file_written_by_the_script_is_the_reason(tmp_path):
    run = Run(tmp_path)
    script = ("import os, sys\n"
              "open(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('label column missing')\n"
              "sys.exit(1)\n")
    with pytest.raises(ScriptError) as e:
        run(spec_for(tmp_path, {"train.py": script}))
    assert e.value.reason == "label column missing"
    assert e.value.exit_code == 1
    assert not os.path.exists(run.tree.success_file)


def test_uncaught_exception_gives_sagemakers_reason(tmp_path):
    run = Run(tmp_path)
    with pytest.raises(ScriptError) as e:
        run(spec_for(tmp_path, {"train.py": "raise ValueError('learning rate must be positive')\n"}))
    reason = e.value.reason
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"Traceback")
    assert "ValueError: learning rate must be positive" in reason
    assert reason.endswith(", exit code: 1")
    assert run.staged == ["enter", "exit"]  # staging is left cleanly on failure too
    with open(run.tree.failure_file) as f:  # the toolkit's record of it, in the tree
        assert f.read().startswith("ExecuteUserScriptError:\nExitCode 1")
    # The reason crosses process boundaries (Ray) whole.
    again = pickle.loads(pickle.dumps(e.value))
    assert (again.reason, again.exit_code) == (reason, 1)


def test_requirements_are_installed_and_importable(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, value=7)
    monkeypatch.setenv(ep.FIND_LINKS_ENV, str(wheels))
    run = Run(tmp_path)
    script = "import rmdemo\nprint(f'value={rmdemo.VALUE}')\n"
    run(spec_for(tmp_path, {"train.py": script, "requirements.txt": "rmdemo\n"}))
    assert "value=7" in run.logs


def test_stop_terminates_the_script(tmp_path):
    run = Run(tmp_path)
    script = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"

    def on_log(line: str) -> None:
        if line == "ready":
            run.stop.set()

    start = time.monotonic()
    with pytest.raises(ScriptError) as e:
        run_script(spec_for(tmp_path, {"train.py": script}), run.tree, on_log=on_log,
                   on_metrics=run.metrics.append, stop=run.stop, cache_root=run.cache, grace_s=5)
    assert e.value.exit_code == 128 + 15  # SIGTERM, which Python does not handle by default
    assert time.monotonic() - start < 10


def test_missing_entry_point_is_named(tmp_path):
    with pytest.raises(ScriptError, match=r"ClientError: entry point 'train.py' is not in the source directory"):
        Run(tmp_path)(spec_for(tmp_path, {"main.py": ""}))


def test_missing_source_is_named(tmp_path):
    spec = spec_for(tmp_path, {"train.py": ""}, submit_directory=f"file://{tmp_path}/gone.tar.gz")
    with pytest.raises(ScriptError, match=r"ClientError: sagemaker_submit_directory .*gone.tar.gz does not exist"):
        Run(tmp_path)(spec)


def test_invalid_metric_regex_fails_before_anything_runs(tmp_path):
    spec = spec_for(tmp_path, {"train.py": ""}, metric_definitions=(("acc", "acc=([0-9"),))
    run = Run(tmp_path)
    with pytest.raises(ScriptError, match="ClientError: MetricDefinitions: metric 'acc'"):
        run(spec)
    assert run.staged == []


def test_script_run_is_plain_and_picklable(tmp_path):
    spec = spec_for(tmp_path, {"train.py": ""}, checkpoint={"S3Uri": "s3://b/c"}, distribution={"RANK": "0"})
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_a_package_entry_point_is_installed_and_run_as_a_module(tmp_path, monkeypatch):
    """Code with a setup.py: the toolkit installs it (``pip install .``) and runs ``python -m <module>``,
    so the script imports its own package by name."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv(ep.FIND_LINKS_ENV, str(wheels))  # no index: setuptools from this environment
    files = {
        "setup.py": "from setuptools import setup\nsetup(name='rmtrainer', version='0.1', packages=['rmtrainer'])\n",
        "rmtrainer/__init__.py": "GREETING = 'from the installed package'\n",
        "train.py": "import sys\nimport rmtrainer\nprint(rmtrainer.GREETING, sys.argv[1:])\n",
    }
    run = Run(tmp_path)
    run(spec_for(tmp_path, files))
    assert "from the installed package ['--epochs', '3', '--lr', '0.1', '--optimizer', 'adam']" in run.logs
