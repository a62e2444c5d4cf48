"""Hyperparameter tuning on a fixed real problem: Bayesian (Optuna TPE) against Random search at the
same budget over several seeds, and what a trial costs beyond its own training job.

Problem: sklearn's digits (1797 8x8 images, 10 classes), split 70/30 (random_state 0), as CSV on local
disk (file:// channels). xgboost ``multi:softmax``, ``num_round`` 20; tuned: eta (0.01-0.5, log),
max_depth (1-8), min_child_weight (1-20, log), subsample (0.3-1); objective ``validation:merror``
(minimized). Baseline, same run: plain ``xgboost.train`` with the default hyperparameters (its merror
and its wall time per fit).

Reported, per strategy: the best merror each seed reached and their mean. Per-trial overhead, for each
tuning job: (tuning wall time - the sum of its trials' pure training time) / trials, where pure training
is each trial's Training phase (SecondaryStatus Training, from its SecondaryStatusTransitions): Starting
and Downloading, Uploading, and everything between trials count as overhead. Also wall time / trials; with trials in parallel the first can go below zero, so "slot overhead" =
(wall * parallel - sum of the trials' time) / trials is printed too, and "at once", the most trials
whose training jobs overlapped (it should not exceed MaxParallelTrainingJobs).

A sequential tuning job (Bayesian, 1 at a time) then splits its wall time: tuning job created -> first
trial's training job created (once); a trial's TrainingEndTime -> Tune starting the next trial (the trial
sees its job end, reports, returns; Tune's loop; the searcher's next suggestion), the trial started ->
its training job created (the trial's submitter: CreateTrainingJob's checks); job created ->
TrainingStartTime (the job service picks it up); the last TrainingEndTime -> the tuning job's end. When
each trial started comes from Tune's own files (its first TensorBoard event), written by the job service
under the temp dir. Within the trials' own time: Starting + Downloading (the instance actor starting,
the data read) against Training. The same job runs again with KeepAlivePeriodInSeconds (an instance
reused from trial to trial).

    python benchmarks/tuning.py [--trials 12] [--parallel 2] [--seeds 3] [--rounds 20]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

METRIC = "validation:merror"


def make_data(root: str) -> tuple[str, tuple[np.ndarray, ...]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (a, b) in {"train": (xt, yt), "validation": (xv, yv)}.items():
        os.makedirs(os.path.join(root, name))
        np.savetxt(os.path.join(root, name, "part.csv"), np.column_stack([b, a]), delimiter=",", fmt="%g")
    return root, (xt, xv, yt, yv)


def plain_xgboost(data: tuple[np.ndarray, ...], rounds: int, repeats: int = 3) -> tuple[float, float]:
    """(validation merror, median wall seconds of a fit from NumPy arrays) at the default
    hyperparameters (eta 0.3, max_depth 6), one thread as each trial's instance gets on 2 cores."""
    import xgboost

    xt, xv, yt, yv = data
    params = {"objective": "multi:softmax", "num_class": 10, "eval_metric": "merror", "nthread": 1}
    times, log = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        dtrain, dval = xgboost.DMatrix(xt, label=yt), xgboost.DMatrix(xv, label=yv)
        xgboost.train(
            params, dtrain, rounds, evals=[(dval, "validation")], evals_result=log, verbose_eval=False
        )
        times.append(time.perf_counter() - t0)
    return log["validation"]["merror"][-1], statistics.median(times)


def tuner(
    data_dir: str,
    strategy: str,
    trials: int,
    parallel: int,
    seed: int,
    rounds: int,
    keep_alive: int | None = None,
):
    from raymaker import ContinuousParameter, Estimator, HyperparameterTuner, IntegerParameter, TrainingInput

    est = Estimator(
        "xgboost",
        hyperparameters={"objective": "multi:softmax", "num_class": 10, "num_round": rounds},
        output_path=f"file://{data_dir}/output",
        keep_alive_period_in_seconds=keep_alive,
    )
    ranges = {
        "eta": ContinuousParameter(0.01, 0.5, "Logarithmic"),
        "max_depth": IntegerParameter(1, 8),
        "min_child_weight": ContinuousParameter(1, 20, "Logarithmic"),
        "subsample": ContinuousParameter(0.3, 1.0),
    }
    t = HyperparameterTuner(
        est,
        METRIC,
        ranges,
        strategy=strategy,
        objective_type="Minimize",
        max_jobs=trials,
        max_parallel_jobs=parallel,
        random_seed=seed,
    )
    inputs = {
        c: TrainingInput(f"file://{data_dir}/{c}/", content_type="text/csv") for c in ("train", "validation")
    }
    return t, inputs


def run(data_dir: str, name: str, strategy: str, trials: int, parallel: int, seed: int, rounds: int, **kw):
    """Run one tuning job to its end; its figures from the records."""
    t, inputs = tuner(data_dir, strategy, trials, parallel, seed, rounds, **kw)
    session = t.sagemaker_session
    t0 = time.time()
    t.fit(inputs, job_name=name, wait=False)
    while (desc := t.describe())["HyperParameterTuningJobStatus"] not in ("Completed", "Failed", "Stopped"):
        time.sleep(0.1)
    client_wall = time.time() - t0
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    summaries = session.call(
        "ListTrainingJobsForHyperParameterTuningJob", {"HyperParameterTuningJobName": name}
    )
    jobs = sorted(
        (
            session.call("DescribeTrainingJob", {"TrainingJobName": s["TrainingJobName"]})
            for s in summaries["TrainingJobSummaries"]
        ),
        key=lambda j: j["CreationTime"],
    )
    created = desc["CreationTime"].timestamp()
    ended = desc["HyperParameterTuningEndTime"].timestamp()
    own = [_phase(j, "Training") for j in jobs]  # pure training: the rest is overhead
    n = len(jobs)
    spans = [(j["CreationTime"].timestamp(), j["TrainingEndTime"].timestamp()) for j in jobs]
    return {
        "at_once": max(sum(a <= x < b for a, b in spans) for x, _ in spans),
        "name": name,
        "strategy": strategy,
        "seed": seed,
        "parallel": parallel,
        "best": desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
        "best_hp": desc["BestTrainingJob"]["TunedHyperParameters"],
        "trials": n,
        "wall": ended - created,
        "client_wall": client_wall,
        "own": sum(own),
        "overhead": (ended - created - sum(own)) / n,
        "slot_overhead": ((ended - created) * parallel - sum(own)) / n,
        "per_trial": (ended - created) / n,
        "jobs": jobs,
        "created": created,
        "ended": ended,
    }


def _phase(job: dict[str, Any], status: str) -> float:
    for t in job["SecondaryStatusTransitions"]:
        if t["Status"] == status and t.get("EndTime"):
            return (t["EndTime"] - t["StartTime"]).total_seconds()
    return 0.0


def _tune_trials(name: str) -> dict[str, tuple[float, int]]:
    """From Tune's own files for tuning job ``name`` (written by the job service under the temp dir):
    training job -> (when Tune started its trial, the trial's process id). The start is the wall time
    of the trial's first TensorBoard event, which Tune writes when the trial starts."""
    dirs = sorted(
        glob.glob(os.path.join(tempfile.gettempdir(), f"raymaker-tune-{name}-*", name)), key=os.path.getmtime
    )
    out: dict[str, tuple[float, int]] = {}
    for trial in glob.glob(os.path.join(dirs[-1], "trial_*")) if dirs else ():
        try:
            with open(os.path.join(trial, "result.json")) as f:
                first = json.loads(f.readline())
            with open(glob.glob(os.path.join(trial, "events.out.tfevents.*"))[0], "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                f.read(4)
                event = f.read(size)
        except (OSError, IndexError, ValueError):
            continue
        if event[:1] == b"\x09":  # Event.wall_time, a double, field 1
            out[first["training_job"]] = (struct.unpack("<d", event[1:9])[0], first["pid"])
    return out


def breakdown(r: dict[str, Any], label: str) -> None:
    """Where a sequential tuning job's wall time goes, every interval from the records (and Tune's
    files for when each trial started)."""
    jobs, n, mean = r["jobs"], r["trials"], statistics.mean
    ts = lambda v: v.timestamp()  # noqa: E731
    tune_side = _tune_trials(r["name"])
    print(
        f"{label}: wall {r['wall']:.2f} s for {n} trials = {r['per_trial']:.2f} s/trial; trials' pure "
        f"training (Training phase) {r['own']:.2f} s; overhead {r['overhead']:+.2f} s/trial; at most "
        f"{r['at_once']} trial(s) at once"
    )
    first = ts(jobs[0]["CreationTime"]) - r["created"]
    print(
        f"    tuning job created -> first trial's job created    {first:6.2f} s once ({first / n:.2f} s/trial)"
    )
    gaps = [ts(b["CreationTime"]) - ts(a["TrainingEndTime"]) for a, b in zip(jobs, jobs[1:], strict=False)]
    print(
        f"    a trial's TrainingEndTime -> next trial's job created {mean(gaps):6.3f} s/trial "
        f"(min {min(gaps):.3f}, max {max(gaps):.3f}); of which:"
    )
    if len(tune_side) == n:
        starts = [tune_side[j["TrainingJobName"]][0] for j in jobs]
        loop = [s - ts(a["TrainingEndTime"]) for a, s in zip(jobs, starts[1:], strict=False)]
        setup = [ts(j["CreationTime"]) - s for j, s in zip(jobs, starts, strict=True)]
        pids = {tune_side[j["TrainingJobName"]][1] for j in jobs}
        print(
            f"        TrainingEndTime -> Tune starts the next trial      {mean(loop):6.3f} s/trial "
            f"(min {min(loop):.3f}, max {max(loop):.3f})"
        )
        print(
            f"        trial started -> its training job created          {mean(setup[1:]):6.3f} s/trial "
            f"(first trial {setup[0]:.2f}); {len(pids)} trial process(es) for {n} trials"
        )
    else:
        print(f"        (Tune's trial files not found for {r['name']}: no split)")
    handoff = [(j["TrainingStartTime"] - j["CreationTime"]).total_seconds() for j in jobs]
    print(f"    trial job created -> TrainingStartTime (hand-off)  {mean(handoff):6.3f} s/trial")
    end = r["ended"] - ts(jobs[-1]["TrainingEndTime"])
    print(f"    last TrainingEndTime -> tuning job ended           {end:6.2f} s once ({end / n:.2f} s/trial)")
    prep = [_phase(j, "Starting") + _phase(j, "Downloading") for j in jobs]
    print(
        f"    inside the trials' own time, per trial: Starting+Downloading {mean(prep):.3f} s (first "
        f"{prep[0]:.2f}, then {mean(prep[1:]):.3f}), Training {mean(_phase(j, 'Training') for j in jobs):.3f} s, "
        f"Uploading {mean(_phase(j, 'Uploading') for j in jobs):.3f} s"
    )


def fresh_process_setup() -> float:
    """Seconds a new Python process takes to import raymaker's engine and load botocore's SageMaker
    model (what a trial in a new process pays before its CreateTrainingJob is checked)."""
    code = (
        "import time; t = time.perf_counter(); from raymaker.engine.validation import validate_request; "
        "validate_request('DescribeTrainingJob', {'TrainingJobName': 'x'}); print(time.perf_counter() - t)"
    )
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="raymaker-bench-home-")
    os.environ["RAYMAKER_HOME"] = home
    from raymaker.cluster.runtime import ensure_ray, ray_env_for_serving

    ray_env_for_serving(os.environ)
    data_dir, data = make_data(os.path.join(home, "data"))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load} at the start; "
        f"digits {len(data[0])} train / {len(data[1])} validation rows x 64, xgboost {args.rounds} rounds"
    )
    print(
        f"budget: {args.trials} trials, {args.parallel} in parallel, seeds 1..{args.seeds}; "
        f"objective {METRIC} (minimize)"
    )
    base_err, base_fit = plain_xgboost(data, args.rounds)
    print(f"baseline, plain xgboost.train at the defaults: {METRIC} {base_err:.4f}, {base_fit:.3f} s per fit")

    import ray

    t = time.time()
    ensure_ray()
    print(f"(Ray started in {time.time() - t:.1f} s; not counted; then 5 s for its start-up work to settle)")
    time.sleep(5)
    cold = run(data_dir, "bench-cold", "Bayesian", 2, 1, 0, args.rounds)
    print(
        f"cold tuning job (the first on this cluster, 2 trials; not counted): wall {cold['wall']:.2f} s, "
        f"tuning job created -> first trial's job created "
        f"{cold['jobs'][0]['CreationTime'].timestamp() - cold['created']:.2f} s"
    )

    results: list[dict[str, Any]] = []
    for seed in range(1, args.seeds + 1):
        for strategy in ("Bayesian", "Random"):  # interleaved: the machine's drift hits both alike
            name = f"bench-{strategy[:5].lower()}-{seed}"
            r = run(data_dir, name, strategy, args.trials, args.parallel, seed, args.rounds)
            results.append(r)
            hp = ", ".join(f"{k}={float(v):.3g}" for k, v in sorted(r["best_hp"].items()))
            print(
                f"  {strategy:<8} seed {seed}: best {METRIC} {r['best']:.4f} ({hp}); wall {r['wall']:.2f} s "
                f"(client {r['client_wall']:.2f}), {r['per_trial']:.2f} s/trial, overhead "
                f"{r['overhead']:+.2f} s/trial, slot overhead {r['slot_overhead']:.2f} s/trial, "
                f"at most {r['at_once']} trials at once"
            )
    print()
    print(
        f"{'strategy':<10} {'best ' + METRIC + ' per seed':<34} {'mean':>7} {'wall/trial':>11} "
        f"{'overhead':>9} {'slot ovh':>9} {'at once':>8}"
    )
    for strategy in ("Bayesian", "Random"):
        rs = [r for r in results if r["strategy"] == strategy]
        bests = " ".join(f"{r['best']:.4f}" for r in rs)
        print(
            f"{strategy:<10} {bests:<34} {statistics.mean(r['best'] for r in rs):7.4f} "
            f"{statistics.mean(r['per_trial'] for r in rs):9.2f} s "
            f"{statistics.mean(r['overhead'] for r in rs):+7.2f} s "
            f"{statistics.mean(r['slot_overhead'] for r in rs):7.2f} s {max(r['at_once'] for r in rs):8d}"
        )
    print(f"{'baseline':<10} {'(defaults, plain xgboost)':<34} {base_err:7.4f}")
    print()

    # Bayesian: its ConcurrencyLimiter keeps MaxParallelTrainingJobs=1 (see the "at once" figures).
    seq = run(data_dir, "bench-seq", "Bayesian", args.trials, 1, 1, args.rounds)
    breakdown(seq, f"sequential Bayesian, {args.trials} trials, 1 at a time")
    warm = run(data_dir, "bench-seq-warm", "Bayesian", args.trials, 1, 1, args.rounds, keep_alive=60)
    breakdown(warm, "the same with KeepAlivePeriodInSeconds=60 (a warm instance reused)")
    print(
        f"a new process importing the engine and loading botocore's SageMaker model: {fresh_process_setup():.2f} s"
    )
    print(f"baseline: a plain xgboost.train fit of the same size takes {base_fit:.3f} s")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ray.shutdown()


if __name__ == "__main__":
    main()
