"""``raymaker tune`` and ``raymaker tuning-jobs list|describe|stop|trials|plot``: hyperparameter tuning jobs
from the shell. ``tune`` takes ``raymaker train``'s options for the training job every trial runs, plus
the objective, the strategy, the limits and the ranges; it builds the request with the SDK's
``HyperparameterTuner``."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from raymaker.cli.common import (
    ENDED,
    NO_WAIT,
    RESOURCES,
    STATUSES,
    TRAINING_OPTIONS,
    Subparsers,
    add_options,
    add_resource_commands,
    describe,
    estimator_options,
    get_session,
    print_table,
    require_lasting_cluster,
    training_inputs,
)
from raymaker.sdk import (
    CategoricalParameter,
    ContinuousParameter,
    Estimator,
    HyperparameterTuner,
    HyperparameterTuningJobAnalytics,
    IntegerParameter,
    Session,
    progress,
)
from raymaker.sdk.waiter import TUNING_JOB

TUNING_JOBS = RESOURCES["tuning-jobs"]
_SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")


# --- ranges -----------------------------------------------------------------------------------------


def _scaling(option: str, text: str) -> str:
    for name in _SCALINGS:
        if text.lower() == name.lower():
            return name
    raise SystemExit(f"{option}: scaling {text!r} is not one of {', '.join(_SCALINGS)}")


def _numeric_range(option: str, text: str, cast: type) -> tuple[str, Any, Any, str]:
    """``NAME=MIN:MAX[:SCALING]`` as (name, min, max, scaling)."""
    name, sep, spec = text.partition("=")
    parts = spec.split(":")
    if not sep or not name or len(parts) not in (2, 3):
        raise SystemExit(f"{option} {text!r}: write the range as NAME=MIN:MAX[:SCALING]")
    try:
        lo, hi = cast(parts[0]), cast(parts[1])
    except ValueError:
        kind = "integers" if cast is int else "numbers"
        raise SystemExit(f"{option} {text!r}: MIN and MAX must be {kind}") from None
    if lo > hi:
        raise SystemExit(f"{option} {text!r}: MIN is above MAX")
    return name, lo, hi, _scaling(option, parts[2]) if len(parts) == 3 else "Auto"


def ranges_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--continuous``, ``--integer`` and ``--categorical`` as the tuner's hyperparameter ranges."""
    ranges: dict[str, Any] = {}

    def add(option: str, name: str, parameter: Any) -> None:
        if name in ranges:
            raise SystemExit(f"{option} {name}: {name} already has a range")
        ranges[name] = parameter

    for text in args.continuous:
        name, lo, hi, scaling = _numeric_range("--continuous", text, float)
        add("--continuous", name, ContinuousParameter(lo, hi, scaling))
    for text in args.integer:
        name, lo, hi, scaling = _numeric_range("--integer", text, int)
        add("--integer", name, IntegerParameter(lo, hi, scaling))
    for text in args.categorical:
        name, sep, spec = text.partition("=")
        values = spec.split(",")
        if not sep or not name or not spec or not all(values):
            raise SystemExit(f"--categorical {text!r}: write the values as NAME=a,b,c")
        add("--categorical", name, CategoricalParameter(values))
    if not ranges:
        raise SystemExit("give at least one range to tune: --continuous, --integer or --categorical")
    return ranges


# --- tables -----------------------------------------------------------------------------------------


def _tuned_names(desc: dict[str, Any]) -> list[str]:
    ranges = desc["HyperParameterTuningJobConfig"].get("ParameterRanges") or {}
    return [r["Name"] for kind in ranges.values() for r in kind or ()]


def _objective(desc: dict[str, Any]) -> dict[str, str]:
    return desc["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]


def _show_value(value: str | None) -> str:
    """A tuned value as it reads best: floats to 4 significant digits, the rest as sent."""
    if value is None:
        return "-"
    if "." in value or "e" in value.lower():
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def _objective_value(summary: dict[str, Any]) -> float | None:
    return (summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")


def _trials(session: Session, name: str, status: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
    if status:
        params["StatusEquals"] = status
    out: list[dict[str, Any]] = []
    while True:
        page = session.call("ListTrainingJobsForHyperParameterTuningJob", params)
        out.extend(page["TrainingJobSummaries"])
        if not page.get("NextToken"):
            return out
        params["NextToken"] = page["NextToken"]


def _print_trials(desc: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    """One row per trial: name, status, the tuned values, the objective; the best one marked ``*``."""
    tuned = _tuned_names(desc)
    best = (desc.get("BestTrainingJob") or {}).get("TrainingJobName")
    rows = []
    for t in trials:
        value = _objective_value(t)
        values = [_show_value((t.get("TunedHyperParameters") or {}).get(n)) for n in tuned]
        objective = "-" if value is None else f"{value:.6g}"
        mark = " *" if t["TrainingJobName"] == best else ""
        rows.append([t["TrainingJobName"], t["TrainingJobStatus"], *values, objective + mark])
    print_table(["TRAINING JOB", "STATUS", *tuned, _objective(desc)["MetricName"]], rows)


def _print_best(session: Session, desc: dict[str, Any]) -> None:
    best = desc.get("BestTrainingJob")
    if not best:
        print("best training job: none (no trial reported its objective)")
        return
    metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
    print(f"best training job: {best['TrainingJobName']} ({metric['MetricName']} = {metric['Value']:.6g})")
    tuned = ", ".join(f"{k}={v}" for k, v in (best.get("TunedHyperParameters") or {}).items())
    print(f"  hyperparameters: {tuned}")
    job = session.call("DescribeTrainingJob", {"TrainingJobName": best["TrainingJobName"]})
    model = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if model:
        print(f"  model: {model}")


def _counts(desc: dict[str, Any]) -> str:
    counters = desc.get("TrainingJobStatusCounters") or {}
    total = sum(counters.values())
    parts = ", ".join(f"{v} {k}" for k, v in counters.items() if v)
    return f"{total} training job(s)" + (f": {parts}" if parts else "")


# --- commands ---------------------------------------------------------------------------------------


def _wait(session: Session, name: str, poll: float = 0.5) -> dict[str, Any]:
    """Poll until the tuning job ends, printing each trial as it ends, under the SDK's progress display
    (trials done of the maximum, the best objective so far, elapsed and remaining)."""
    shown: set[str] = set()
    metric = None
    with progress.watch(TUNING_JOB, session, name) as display:
        while True:
            desc = session.call(TUNING_JOBS.describe_op, {TUNING_JOBS.name_key: name})
            metric = metric or _objective(desc)["MetricName"]
            for t in _trials(session, name):
                if t["TrainingJobName"] in shown or t["TrainingJobStatus"] not in ENDED:
                    continue
                shown.add(t["TrainingJobName"])
                value = _objective_value(t)
                what = f"{metric} = {value:.6g}" if value is not None else t.get("FailureReason", "no objective")
                display.line(f"  {t['TrainingJobName']}: {t['TrainingJobStatus']} ({what})")
            display.on_describe(desc)
            if desc["HyperParameterTuningJobStatus"] in ENDED:
                return desc
            time.sleep(poll)


def cmd_tune(args: argparse.Namespace) -> int:
    if args.max_jobs is None and args.strategy != "Grid":
        raise SystemExit("--max-jobs is needed (only --strategy Grid runs every combination without one)")
    ranges = ranges_from_args(args)
    inputs = training_inputs(args)
    session = get_session(args)
    estimator = Estimator(args.algorithm, **estimator_options(args), session=session)
    tuner = HyperparameterTuner(
        estimator,
        args.objective_metric,
        ranges,
        strategy=args.strategy,
        objective_type=args.objective_type,
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        early_stopping_type=args.early_stopping,
        random_seed=args.random_seed,
    )
    if args.no_wait:
        require_lasting_cluster(session, "tune --no-wait", "the tuning job")
    tuner.fit(inputs, job_name=args.job_name, wait=False)
    name = tuner.latest_tuning_job.name
    print(f"tuning job: {name}", flush=True)
    if args.no_wait:
        status = tuner.describe()["HyperParameterTuningJobStatus"]
        print(f"status: {status} (follow it with `raymaker tuning-jobs trials {name}`)")
        return 0
    desc = _wait(session, name)
    print()
    _print_trials(desc, _trials(session, name))
    print()
    status = desc["HyperParameterTuningJobStatus"]
    print(f"status: {status} ({_counts(desc)})")
    if status == "Failed":
        raise ValueError(f"tuning job {name} Failed: {desc.get('FailureReason', '(no reason given)')}")
    _print_best(session, desc)
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    session = get_session(args)
    desc = describe(session, TUNING_JOBS, args.name)
    trials = _trials(session, args.name, args.status)
    if args.best_first:
        maximize = _objective(desc)["Type"] == "Maximize"
        scored = [t for t in trials if _objective_value(t) is not None]
        scored.sort(key=_objective_value, reverse=maximize)
        trials = scored + [t for t in trials if _objective_value(t) is None]
    _print_trials(desc, trials)
    print()
    print(f"status: {desc['HyperParameterTuningJobStatus']} ({_counts(desc)})")
    if desc.get("FailureReason"):
        print(f"failure reason: {desc['FailureReason']}")
    _print_best(session, desc)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    session = get_session(args)
    describe(session, TUNING_JOBS, args.name)  # an unknown name says where to look
    out = args.out or f"{args.name}-trials.png"
    HyperparameterTuningJobAnalytics(args.name, session).plot(out)
    print(f"wrote {os.path.abspath(out)}")
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser(
        "tune",
        help="run a hyperparameter tuning job with a built-in algorithm",
        description="Each trial is a training job with `raymaker train`'s options and the tuned values. "
        "Ranges: --continuous eta=0.01:0.5:Logarithmic --integer max_depth=2:8 "
        "--categorical booster=gbtree,dart (scaling: Auto, Linear, Logarithmic, ReverseLogarithmic).",
    )
    add_options(p, *TRAINING_OPTIONS)
    p.add_argument("--objective-metric", required=True, help="the metric to tune, e.g. validation:auc")
    p.add_argument("--objective-type", default="Maximize", choices=["Maximize", "Minimize"])
    p.add_argument("--strategy", default="Bayesian", choices=["Bayesian", "Random", "Hyperband", "Grid"])
    p.add_argument("--max-jobs", type=int, help="MaxNumberOfTrainingJobs (Grid: every combination)")
    p.add_argument("--max-parallel-jobs", type=int, default=1)
    p.add_argument("--early-stopping", default="Off", choices=["Off", "Auto"])
    p.add_argument("--random-seed", type=int, help="RandomSeed, for a reproducible search")
    for option in ("--continuous", "--integer"):
        p.add_argument(option, action="append", default=[], metavar="NAME=MIN:MAX[:SCALING]", help="(repeat)")
    p.add_argument("--categorical", action="append", default=[], metavar="NAME=A,B,C", help="(repeat)")
    p.add_argument("--job-name", help="the tuning job's name, at most 32 characters")
    add_options(p, NO_WAIT)
    p.set_defaults(func=cmd_tune)

    jobs = add_resource_commands(sub, TUNING_JOBS)
    p = jobs.add_parser("trials", help="the trials: tuned values, status, objective; and the best one")
    p.add_argument("name")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--best-first", action="store_true", help="sort by the objective, best first")
    p.set_defaults(func=cmd_trials)
    p = jobs.add_parser(
        "plot",
        help="the trials as a PNG: objective per trial, best so far, each hyperparameter",
        description="On top the objective of each trial (in the order they started) and the best so far; "
        "below, the objective against each tuned hyperparameter, the best trial starred.",
    )
    p.add_argument("name")
    p.add_argument("--out", "-o", metavar="PNG", help="where to write it (default: NAME-trials.png)")
    p.set_defaults(func=cmd_plot)
