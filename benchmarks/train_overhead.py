"""raymaker's XGBoost training job vs plain ``xgboost.train`` on the same data, same run.

Data: 1M x 28 float32 with a binary label (HIGGS-shaped, synthetic), as 4 RecordIO-protobuf files on
local disk (File mode). Both sides: 100 rounds, ``tree_method=hist``, the same ``nthread``.

Reported: wall time of each, their ratio, and the fixed overhead: seconds from ``fit()`` to the first
boosting round's metric report (raymaker) against data loading plus the first round (plain xgboost).
"cold" is the first job after Ray started; "second job" runs right after it on the same cluster.

    python benchmarks/train_overhead.py [--rows 1000000] [--rounds 100] [--nthread N]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

import numpy as np


def make_data(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    w = rng.normal(size=cols).astype(np.float32)
    y = (x @ w + np.sin(3 * x[:, 0]) + 0.5 * rng.normal(size=rows) > 0).astype(np.float32)
    return x, y


def plain_xgboost(x, y, rounds: int, nthread: int) -> tuple[float, float]:
    """(wall seconds, seconds to the end of round 0) for xgboost.train from NumPy arrays."""
    import xgboost

    first = {}

    class FirstRound(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            first.setdefault("t", time.perf_counter())
            return False

    t0 = time.perf_counter()
    dtrain = xgboost.DMatrix(x, label=y, nthread=nthread)
    params = {"objective": "binary:logistic", "tree_method": "hist", "nthread": nthread, "max_depth": 6}
    xgboost.train(
        params, dtrain, rounds, evals=[(dtrain, "train")], verbose_eval=False, callbacks=[FirstRound()]
    )
    return time.perf_counter() - t0, first["t"] - t0


def raymaker_job(data_dir: str, rounds: int, nthread: int, name: str) -> tuple[float, float, dict]:
    """(wall seconds, seconds from fit() to round 0's report, describe) for one training job."""
    from raymaker import Estimator, Session, TrainingInput

    session = Session()
    est = Estimator(
        "xgboost",
        hyperparameters={
            "objective": "binary:logistic",
            "num_round": rounds,
            "tree_method": "hist",
            "nthread": nthread,
            "max_depth": 6,
        },
        keep_alive_period_in_seconds=300,
        session=session,
    )
    t0 = time.time()
    est.fit(
        TrainingInput(data_dir, content_type="application/x-recordio-protobuf"), logs=False, job_name=name
    )
    wall = time.time() - t0
    history = session.backend.store.metric_history(name)
    first_round = min(m["timestamp"] for m in history if m["step"] == 0) - t0
    return wall, first_round, est.latest_training_job.describe()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=28)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--nthread", type=int, default=os.cpu_count())
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="raymaker-bench-home-")
    os.environ["RAYMAKER_HOME"] = home
    x, y = make_data(args.rows, args.cols)
    data_dir = os.path.join(home, "data")
    os.makedirs(data_dir)
    from raymaker.io.recordio import write_numpy_to_dense_tensor

    for i, rows in enumerate(np.array_split(np.arange(args.rows), 4)):
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(buf, x[rows], y[rows])
        with open(os.path.join(data_dir, f"part-{i}.rec"), "wb") as f:
            f.write(buf.getvalue())
    mb = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)) / 1e6
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; data {args.rows} x {args.cols} float32 "
        f"({mb:.0f} MB RecordIO, 4 files), {args.rounds} rounds, nthread={args.nthread}"
    )

    base_wall, base_first = plain_xgboost(x, y, args.rounds, args.nthread)
    print(f"plain xgboost.train:       wall {base_wall:6.2f} s   data + first round {base_first:5.2f} s")
    results = []

    import ray

    t = time.time()
    from raymaker.cluster.runtime import ensure_ray

    ensure_ray()
    print(f"(Ray started in {time.time() - t:.1f} s; not counted; then 5 s for its start-up work to settle)")
    time.sleep(5)  # "cold" means Ray already running: not still starting its idle worker processes
    for label, name in (("raymaker, cold", "bench-cold"), ("raymaker, second job", "bench-second")):
        results.append((label, *raymaker_job(data_dir, args.rounds, args.nthread, name)))
    base_wall2, _ = plain_xgboost(x, y, args.rounds, args.nthread)
    print(f"plain xgboost.train again: wall {base_wall2:6.2f} s")
    # The baseline ran before and after the jobs; the machine's drift shows in the two figures.
    baseline = (base_wall + base_wall2) / 2
    for label, wall, first, desc in results:
        print(
            f"{label + ':':<26} wall {wall:6.2f} s   fit() to first round {first:5.2f} s "
            f"(+{first - base_first:4.2f} s)   ratio {wall / baseline:4.2f} to the mean baseline   "
            f"billable {desc.get('BillableTimeInSeconds')} s"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
