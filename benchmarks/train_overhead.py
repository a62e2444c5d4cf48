"""raymaker's XGBoost training job vs plain ``xgboost.train`` on the same data, same run.

Data: 1M x 28 float32 with a binary label (HIGGS-shaped, synthetic), as 4 RecordIO-protobuf files on
local disk (File mode). Both sides: 100 rounds, ``tree_method=hist``, the same total threads: one
instance with ``nthread``, two instances (ShardedByS3Key, half the files each, one xgboost collective)
with ``nthread / 2`` each.

Reported: wall time of each, their ratio, and the fixed overhead: seconds from ``fit()`` to the first
boosting round's metric report (raymaker) against data loading plus the first round (plain xgboost).
"cold" is the first job of its kind (no warm instance or instance group to take); "second job" runs
right after it on the same cluster, in the instance (group) the first one kept warm. The run's first
job also starts the job service.

Then the fixed cost alone, on 364 rows (CSV): xgboost (3 rounds) and linear-learner (3 epochs), one
and two instances, cold (no warm instance or group of the kind) and warm (the next job, in what the
cold one kept): seconds from ``fit()`` to the first round's (epoch's) metric report, and to the end.

    python benchmarks/train_overhead.py [--rows 1000000] [--rounds 100] [--nthread N] [--counts 1,2]
        [--address RAY_ADDRESS]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

import numpy as np

# Another instance type than the big jobs': none of their warm instances fits the small jobs.
SMALL_TYPE = "ml.m5.large"


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


def _distributed_worker(rank: int, path: str, rounds: int, nthread: int, comm: dict, out) -> None:
    import xgboost
    from xgboost.collective import CommunicatorContext

    shard = np.load(path)
    with CommunicatorContext(**comm, dmlc_task_id=f"rank-{rank:08}"):
        t0 = time.perf_counter()
        dtrain = xgboost.DMatrix(shard[:, 1:], label=shard[:, 0], nthread=nthread)
        params = {"objective": "binary:logistic", "tree_method": "hist", "nthread": nthread, "max_depth": 6}
        xgboost.train(params, dtrain, rounds, evals=[(dtrain, "train")], verbose_eval=False)
        out.put((rank, time.perf_counter() - t0))


def plain_xgboost_distributed(x, y, rounds: int, nthread: int, workers: int, tmp: str) -> float:
    """Wall seconds (DMatrix + train, on the slowest rank) of xgboost.train in ``workers`` local
    processes joined by xgboost's own Rabit tracker, no Ray: each on its share of the rows with
    ``nthread`` threads. What xgboost's collective itself costs against one process."""
    import multiprocessing
    import threading

    from xgboost.tracker import RabitTracker

    paths = []
    for rank, rows in enumerate(np.array_split(np.arange(len(y)), workers)):
        paths.append(os.path.join(tmp, f"shard-{rank}.npy"))
        np.save(paths[-1], np.column_stack([y[rows], x[rows]]))
    tracker = RabitTracker(n_workers=workers, host_ip="127.0.0.1", sortby="task")
    tracker.start()
    threading.Thread(target=tracker.wait_for, daemon=True).start()
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(nthread)
    try:
        procs = [
            spawn.Process(
                target=_distributed_worker, args=(r, paths[r], rounds, nthread, tracker.worker_args(), out)
            )
            for r in range(workers)
        ]
        for p in procs:
            p.start()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    times = [out.get(timeout=1800)[1] for _ in procs]
    for p in procs:
        p.join()
    return max(times)


def raymaker_job(
    algorithm: str,
    hyperparameters: dict,
    data: object,
    name: str,
    instance_count: int = 1,
    keep_alive: int = 300,
    instance_type: str = "local",
) -> tuple[float, float, dict]:
    """(wall seconds, seconds from fit() to the first round's (epoch's) report, describe) for one job."""
    from raymaker import Estimator, Session

    session = Session()
    est = Estimator(
        algorithm,
        hyperparameters=hyperparameters,
        instance_count=instance_count,
        instance_type=instance_type,
        keep_alive_period_in_seconds=keep_alive,
        session=session,
    )
    t0 = time.time()
    est.fit(data, logs=False, job_name=name)
    wall = time.time() - t0
    desc = est.latest_training_job.describe()
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    history = session.backend.store.metric_history(name)
    first_round = min(m["timestamp"] for m in history if m["step"] == 0) - t0
    return wall, first_round, desc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=28)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--nthread", type=int, default=os.cpu_count())
    ap.add_argument("--counts", default="1,2", help="instance counts of the xgboost jobs")
    ap.add_argument("--address", help="a Ray cluster to run the jobs on (default: start a private one)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]

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
    dist_walls = {}
    for count in (c for c in counts if c > 1):
        nthread = max(1, args.nthread // count)
        dist_wall = dist_walls[count] = plain_xgboost_distributed(x, y, args.rounds, nthread, count, home)
        print(
            f"plain xgboost.train in {count} processes (Rabit, no Ray), nthread={nthread} each: wall "
            f"{dist_wall:6.2f} s",
            flush=True,
        )
    results = []

    import ray

    t = time.time()
    if args.address:
        from raymaker.cluster.runtime import ensure_ray

        os.environ["RAY_ADDRESS"] = args.address
        ensure_ray()
    else:  # a private Ray of this machine: never a cluster someone else started here
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    print(f"(Ray started in {time.time() - t:.1f} s; not counted; then 5 s for its start-up work to settle)")
    time.sleep(5)  # "cold" means Ray already running: not still starting its idle worker processes
    from raymaker import TrainingInput

    big = TrainingInput(
        data_dir, content_type="application/x-recordio-protobuf", distribution="ShardedByS3Key"
    )
    for count in counts:
        hp = {
            "objective": "binary:logistic",
            "num_round": args.rounds,
            "tree_method": "hist",
            "nthread": max(1, args.nthread // count),  # the same total threads as the baseline
            "max_depth": 6,
        }
        tag = "raymaker" if count == 1 else f"raymaker x{count}"
        # The first job keeps its instance(s) warm for the second, which gives them back: the next
        # instance count starts cold.
        for label, name, keep in (
            (f"{tag}, cold", f"bench-cold-{count}", 300),
            (f"{tag}, second job", f"bench-second-{count}", 0),
        ):
            results.append((label, count, *raymaker_job("xgboost", hp, big, name, count, keep)))
            print(f"  ({label}: {results[-1][2]:.2f} s)", flush=True)
    base_wall2, _ = plain_xgboost(x, y, args.rounds, args.nthread)
    print(f"plain xgboost.train again: wall {base_wall2:6.2f} s")
    # The baseline ran before and after the jobs; the machine's drift shows in the two figures.
    baseline = (base_wall + base_wall2) / 2
    for label, count, wall, first, desc in results:
        own = f" ({wall / dist_walls[count]:4.2f} to xgboost's own {count}-process run)" if count > 1 else ""
        print(
            f"{label + ':':<30} wall {wall:6.2f} s   fit() to first round {first:5.2f} s "
            f"(+{first - base_first:4.2f} s)   ratio {wall / baseline:4.2f} to the mean baseline{own}   "
            f"billable {desc.get('BillableTimeInSeconds')} s"
        )

    # The fixed cost alone: a few hundred rows, so nearly all of it is the job's start and end.
    small_dir = os.path.join(home, "small")
    os.makedirs(small_dir)
    xs, ys = make_data(364, 30, seed=1)
    np.savetxt(os.path.join(small_dir, "train.csv"), np.column_stack([ys, xs]), delimiter=",", fmt="%.6g")
    small = TrainingInput(small_dir, content_type="text/csv")
    print(f"fixed cost: 364 x 30 CSV (File mode), {SMALL_TYPE}, Ray and the job service already up:")
    for algorithm, hp in (
        ("xgboost", {"objective": "binary:logistic", "num_round": 3}),
        ("linear-learner", {"predictor_type": "binary_classifier", "epochs": 3, "mini_batch_size": 32}),
    ):
        for count in (1, 2):
            for label, keep in (("cold", 300), ("warm", 0)):
                name = f"bench-small-{algorithm}-{count}-{label}"
                wall, first, _ = raymaker_job(algorithm, hp, small, name, count, keep, SMALL_TYPE)
                print(
                    f"  {algorithm:<14} x{count} {label}: fit() to first iteration {first:5.2f} s   "
                    f"wall {wall:5.2f} s",
                    flush=True,
                )
    ray.shutdown()


if __name__ == "__main__":
    main()
