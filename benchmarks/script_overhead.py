"""Script mode's fixed cost: ``fit()`` to the training script's first line of output, against the same
script run directly (``python train.py``) on the same data, same run.

The script is a scikit-learn training script written as SageMaker's examples write them (imports,
argparse over ``SM_*`` defaults, read the train channel, fit, save with joblib); its first line, printed
right after its imports, carries ``time.time()``. Both sides read the same CSV (569 x 30): the direct
run from a local folder, the job from a ``file://`` channel (File mode).

"cold": the first job on an instance type (a new instance actor starts); "warm": the next jobs, in the
instance the previous one kept (``keep_alive_period_in_seconds``). Ray and the job service are up before
the first job (not counted). Reported: the median over ``--repeats`` of each side and the difference.

    python benchmarks/script_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

SCRIPT = '''
import argparse
import os
import time

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

print(f"first-line {time.time()!r}", flush=True)
parser = argparse.ArgumentParser()
parser.add_argument("--max-iter", type=int, default=200)
parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "train"))
args = parser.parse_args()
data = np.loadtxt(os.path.join(args.train, "train.csv"), delimiter=",")
clf = LogisticRegression(max_iter=args.max_iter).fit(data[:, 1:], data[:, 0])
print(f"accuracy={clf.score(data[:, 1:], data[:, 0]):.4f}", flush=True)
joblib.dump(clf, os.path.join(args.model_dir, "model.joblib"))
'''


def first_line_time(lines: list[str]) -> float | None:
    for line in lines:
        if line.startswith("first-line "):
            return float(line.split()[1])
    return None


def direct(source: str, data_dir: str, model_dir: str) -> float:
    """Seconds from starting ``python train.py`` to its first line."""
    env = dict(os.environ, SM_CHANNEL_TRAIN=data_dir, SM_MODEL_DIR=model_dir)
    t0 = time.time()
    out = subprocess.run([sys.executable, "train.py", "--max-iter", "200"], cwd=source, env=env, check=True,
                         capture_output=True, text=True).stdout
    return first_line_time(out.splitlines()) - t0


def job(session, source: str, data_uri: str, output: str, keep_alive: int) -> float:
    """Seconds from ``fit()`` to the job's first line."""
    from raymaker.sklearn import SKLearn

    est = SKLearn(entry_point="train.py", source_dir=source, framework_version="1.2-1",
                  instance_type="ml.m5.large", hyperparameters={"max-iter": 200}, output_path=output,
                  keep_alive_period_in_seconds=keep_alive, session=session)
    t0 = time.time()
    est.fit({"train": data_uri}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    lines = [e["line"] for e in session.backend.store.logs(desc["TrainingJobName"])]
    return first_line_time(lines) - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="raymaker-bench-script-")
    os.environ["RAYMAKER_HOME"] = os.path.join(root, "home")
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    data_dir = os.path.join(root, "data")
    os.makedirs(data_dir)
    np.savetxt(os.path.join(data_dir, "train.csv"), np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    source = os.path.join(root, "src")
    os.makedirs(source)
    with open(os.path.join(source, "train.py"), "w") as f:
        f.write(textwrap.dedent(SCRIPT))
    model_dir = os.path.join(root, "model")
    os.makedirs(model_dir)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    import ray

    from raymaker import Session

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    session = Session()
    session.backend.ensure_ready()
    time.sleep(5)  # Ray's own start-up work settles (not counted)
    data_uri, output = f"file://{data_dir}", f"file://{os.path.join(root, 'output')}"

    base = [direct(source, data_dir, model_dir) for _ in range(args.repeats)]
    cold = []
    for _ in range(args.repeats):  # keep_alive 0: every job starts a new instance
        cold.append(job(session, source, data_uri, output, keep_alive=0))
    job(session, source, data_uri, output, keep_alive=600)  # leaves a warm instance
    warm = [job(session, source, data_uri, output, keep_alive=600) for _ in range(args.repeats)]
    base2 = [direct(source, data_dir, model_dir) for _ in range(args.repeats)]

    b = statistics.median(base + base2)
    print(f"to the script's first line, median of {args.repeats} (scikit-learn script, 569 x 30 CSV):")
    print(f"  python train.py directly: {b:5.2f} s")
    for label, values in (("cold (new instance)", cold), ("warm (kept instance)", warm)):
        m = statistics.median(values)
        print(f"  raymaker fit(), {label:21s} {m:5.2f} s   ({m - b:+.2f} s against the direct run)")
    ray.shutdown()


if __name__ == "__main__":
    main()
