"""Hyperparameter tuning jobs end to end on real Ray Tune: every trial a real training job (record,
metrics, artifacts), the tuning job's record, counters and best job (issue 5, first part)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from raymaker import Session
from raymaker.protocol.errors import ValidationError

pytestmark = pytest.mark.e2e

KEEP_ALIVE_S = 5  # the trials' warm pool: long enough for the next trial, gone soon after the last


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    d = tmp_path_factory.mktemp("tuning-data")
    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
    for name, (a, b) in {"train": (xt, yt), "validation": (xv, yv)}.items():
        (d / name).mkdir()
        np.savetxt(d / name / "part.csv", np.column_stack([b, a]), delimiter=",", fmt="%.7g")
    return d


@pytest.fixture(scope="module")
def session(ray_session):
    return Session()


def _request(
    name,
    channels,
    strategy,
    ranges,
    *,
    algorithm="xgboost",
    static=None,
    metric=("Maximize", "validation:auc"),
    max_jobs=4,
    parallel=2,
    instance_type="ml.m5.large",
):
    # "local" is one instance holding the machine's CPU budget (all but a CPU for Ray Data): on 2 CPUs two
    # of them never run together, so trials run on ml.m5.large (half a CPU each), and MaxParallelTrainingJobs
    # 2 runs two at once; one instance type also lets one test's trials take the warm pool the last left.
    config = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": metric[0], "MetricName": metric[1]},
        "ResourceLimits": {
            "MaxParallelTrainingJobs": parallel,
            **({"MaxNumberOfTrainingJobs": max_jobs} if max_jobs else {}),
        },
        "ParameterRanges": ranges,
        "TrainingJobEarlyStoppingType": "Off",
        "RandomSeed": 7,
    }
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": {
            "StaticHyperParameters": static or {"num_round": "15", "objective": "binary:logistic"},
            "AlgorithmSpecification": {"AlgorithmName": algorithm, "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
            "InputDataConfig": [
                {
                    "ChannelName": c,
                    "ContentType": "text/csv",
                    "DataSource": {
                        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{channels}/{c}/"}
                    },
                }
                for c in ("train", "validation")
            ],
            "OutputDataConfig": {"S3OutputPath": f"file://{channels}/output"},
            # A warm pool: each trial's training job runs on the instance the previous one left (a new
            # instance costs 1-8 s here, most of a short trial); only the first and those after a
            # stopped or failed trial start one.
            "ResourceConfig": {
                "InstanceType": instance_type,
                "InstanceCount": 1,
                "VolumeSizeInGB": 1,
                "KeepAlivePeriodInSeconds": KEEP_ALIVE_S,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    }


def _run(session, request):
    session.call("CreateHyperParameterTuningJob", request)
    return _run_wait(session, request["HyperParameterTuningJobName"])


def test_random_search_runs_each_trial_as_a_training_job(session, channels):
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [
            {"Name": "max_depth", "MinValue": "2", "MaxValue": "6", "ScalingType": "Linear"}
        ],
    }
    desc, trials = _run(session, _request("tune-random", channels, "Random", ranges))
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["TrainingJobStatusCounters"]["Completed"] == 4
    assert desc["ObjectiveStatusCounters"]["Succeeded"] == 4
    assert len(trials) == 4
    for t in trials:
        assert re.fullmatch(r"tune-random-\d{3}-[0-9a-f]{8}", t["TrainingJobName"]), t["TrainingJobName"]
        job = session.call("DescribeTrainingJob", {"TrainingJobName": t["TrainingJobName"]})
        assert job["HyperParameters"]["_tuning_objective_metric"] == "validation:auc"
        assert job["TuningJobArn"] == desc["HyperParameterTuningJobArn"]
        assert 0.05 <= float(t["TunedHyperParameters"]["eta"]) <= 0.5
        assert 2 <= int(t["TunedHyperParameters"]["max_depth"]) <= 6
    best = max(trials, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert desc["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]


def test_grid_enumerates_exactly_the_categorical_product(session, channels):
    ranges = {
        "CategoricalParameterRanges": [
            {"Name": "max_depth", "Values": ["2", "4"]},
            {"Name": "eta", "Values": ["0.1", "0.3"]},
        ]
    }
    desc, trials = _run(session, _request("tune-grid", channels, "Grid", ranges, max_jobs=None))
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    combos = sorted(
        (t["TunedHyperParameters"]["max_depth"], t["TunedHyperParameters"]["eta"]) for t in trials
    )
    assert combos == sorted(itertools.product(["2", "4"], ["0.1", "0.3"]))


def test_bayesian_search_on_linear_learner(session, channels):
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
        ]
    }
    static = {"predictor_type": "binary_classifier", "epochs": "3", "mini_batch_size": "100"}
    request = _request(
        "tune-bayes-ll",
        channels,
        "Bayesian",
        ranges,
        algorithm="linear-learner",
        static=static,
        metric=("Minimize", "validation:objective_loss"),
        max_jobs=3,
        parallel=1,
    )
    desc, trials = _run(session, request)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert len(trials) == 3
    # a learning rate that diverges may leave a trial without an objective; the best is among the rest
    scored = [t for t in trials if "FinalHyperParameterTuningJobObjectiveMetric" in t]
    assert len(scored) >= 2, trials
    best = min(scored, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert desc["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]


def test_bad_ranges_fail_at_create_and_store_nothing(session, channels):
    ranges = {"ContinuousParameterRanges": [{"Name": "no_such_thing", "MinValue": "0", "MaxValue": "1"}]}
    with pytest.raises(ValidationError, match="no_such_thing"):
        session.call("CreateHyperParameterTuningJob", _request("tune-bad", channels, "Random", ranges))
    with pytest.raises(ValidationError):
        session.call("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": "tune-bad"})


def test_sdk_tuner_fit_analytics_best_estimator_attach(session, channels):
    from raymaker import ContinuousParameter, Estimator, HyperparameterTuner, IntegerParameter, TrainingInput

    est = Estimator(
        "xgboost",
        instance_type="ml.m5.large",  # two at once (max_parallel_jobs=2), warm for the third: see _request
        keep_alive_period_in_seconds=KEEP_ALIVE_S,
        hyperparameters={"num_round": 10, "objective": "binary:logistic"},
        output_path=f"file://{channels}/sdk-output",
        session=session,
    )
    tuner = HyperparameterTuner(
        est,
        "validation:auc",
        {"eta": ContinuousParameter(0.05, 0.5, "Logarithmic"), "max_depth": IntegerParameter(2, 5)},
        strategy="Random",
        max_jobs=3,
        max_parallel_jobs=2,
        random_seed=3,
    )
    tuner.fit(
        {
            "train": TrainingInput(f"file://{channels}/train/", content_type="text/csv"),
            "validation": TrainingInput(f"file://{channels}/validation/", content_type="text/csv"),
        }
    )
    desc = tuner.describe()
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    df = tuner.analytics().dataframe()
    assert len(df) == 3
    assert {"eta", "max_depth", "TrainingJobName", "TrainingJobStatus", "FinalObjectiveValue"} <= set(
        df.columns
    )
    assert {"TrainingStartTime", "TrainingEndTime", "TrainingElapsedTimeSeconds"} <= set(df.columns)
    best = tuner.best_training_job()
    assert best == df.loc[df["FinalObjectiveValue"].idxmax(), "TrainingJobName"]
    best_est = tuner.best_estimator()
    assert best_est.model_data.endswith("model.tar.gz")
    again = HyperparameterTuner.attach(desc["HyperParameterTuningJobName"], session=session)
    assert again.best_training_job() == best
    predictor = tuner.deploy(1, "local", endpoint_name="tuned-best")
    try:
        row = np.loadtxt(channels / "validation" / "part.csv", delimiter=",")[0, 1:]
        score = float(predictor.predict(",".join(map(str, row)), initial_args={"ContentType": "text/csv"}))
        assert 0.0 <= score <= 1.0
    finally:
        predictor.delete_endpoint()


@pytest.fixture(scope="module")
def slow_channels(tmp_path_factory):
    """Data on which a trial takes a few seconds, so schedulers' decisions land while trials run."""
    d = tmp_path_factory.mktemp("slow-data")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_000, 20)).astype(np.float32)
    y = (x[:, :5].sum(axis=1) + rng.normal(scale=2.0, size=len(x)) > 0).astype(np.float32)
    for name, rows in {"train": slice(0, 30_000), "validation": slice(30_000, None)}.items():
        (d / name).mkdir()
        np.savetxt(d / name / "part.csv", np.column_stack([y[rows], x[rows]]), delimiter=",", fmt="%.5g")
    return d


def test_early_stopping_auto_stops_trials_worse_than_the_median(session, slow_channels):
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.0005", "MaxValue": "0.3", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8"}],
    }
    # The median rule decides within a trial's first rounds; 30 rounds keep the completed trials short.
    static = {"num_round": "30", "objective": "binary:logistic", "tree_method": "exact"}
    # Seed 7's trials 1-3 complete (the rule compares with 3), and its trials 4 and 5 are poor enough to
    # stop within their first rounds: 5 trials leave two chances to stop (trial 6 is a slow complete one).
    request = _request(
        "tune-early-stop",
        slow_channels,
        "Random",
        ranges,
        static=static,
        max_jobs=5,
        parallel=1,
        instance_type="local",  # one trial at a time, on both cores
    )
    request["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] = "Auto"
    desc, trials = _run(session, request)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    statuses = [t["TrainingJobStatus"] for t in trials]
    assert "Stopped" in statuses and "Completed" in statuses, statuses


def test_hyperband_stops_poor_trials_before_their_last_iteration(session, slow_channels):
    """Slow enough trials (a few seconds each) that Tune's HyperBand decisions land while they run:
    the stopped trials' training jobs are Stopped, with fewer rounds than num_round."""
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.001", "MaxValue": "0.3", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "8"}],
    }
    rounds_max = 30  # rungs at 5 and 15 rounds (reduction factor 3), MaxResource at the last round
    static = {"num_round": str(rounds_max), "objective": "binary:logistic", "tree_method": "exact"}
    request = _request(
        "tune-hyperband", slow_channels, "Hyperband", ranges, static=static, max_jobs=6, parallel=2
    )
    request["HyperParameterTuningJobConfig"]["StrategyConfig"] = {
        "HyperbandStrategyConfig": {"MinResource": 5, "MaxResource": rounds_max}
    }
    desc, trials = _run(session, request)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    rounds = {}
    for t in trials:
        history = session.call("GetTrainingJobMetrics", {"TrainingJobName": t["TrainingJobName"]})["Metrics"]
        auc = [m for m in history if m["MetricName"] == "validation:auc"]
        rounds[t["TrainingJobName"]] = (t["TrainingJobStatus"], len(auc))
    # at least one trial was stopped early, and its record says so; the best ran to the end
    assert any(status == "Stopped" and 0 < n < rounds_max for status, n in rounds.values()), rounds
    assert any(status == "Completed" and n == rounds_max for status, n in rounds.values()), rounds


def test_every_trial_failing_fails_the_tuning_job_with_the_reason(session, tmp_path):
    for name in ("train", "validation"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.csv").write_text("1,0.5,0.25\n0,oops,0.5\n")
    ranges = {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "4"}]}
    desc, trials = _run(
        session, _request("tune-all-fail", tmp_path, "Random", ranges, max_jobs=2, parallel=1)
    )
    assert desc["HyperParameterTuningJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("Every training job failed")
    assert "line 2" in desc["FailureReason"], desc["FailureReason"]
    assert [t["TrainingJobStatus"] for t in trials] == ["Failed", "Failed"]


def test_stop_mid_way_stops_the_running_trial(session, channels):
    import time

    ranges = {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}]}
    static = {"num_round": "400", "objective": "binary:logistic", "eta": "0.01", "tree_method": "exact"}
    request = _request("tune-stop", channels, "Random", ranges, static=static, max_jobs=6, parallel=1)
    session.call("CreateHyperParameterTuningJob", request)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        trials = session.call(
            "ListTrainingJobsForHyperParameterTuningJob", {"HyperParameterTuningJobName": "tune-stop"}
        )
        if trials["TrainingJobSummaries"]:
            break
        time.sleep(0.1)
    session.call("StopHyperParameterTuningJob", {"HyperParameterTuningJobName": "tune-stop"})
    desc, trials = _run_wait(session, "tune-stop")
    assert desc["HyperParameterTuningJobStatus"] == "Stopped"
    assert 1 <= len(trials) < 6
    assert all(t["TrainingJobStatus"] in ("Stopped", "Completed") for t in trials)


def _run_wait(session, name):
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        desc = session.call("DescribeHyperParameterTuningJob", {"HyperParameterTuningJobName": name})
        if desc["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.2)
    trials = session.call("ListTrainingJobsForHyperParameterTuningJob", {"HyperParameterTuningJobName": name})
    return desc, trials["TrainingJobSummaries"]


def test_warm_start_learns_from_the_parent_job(session, channels):
    ranges = {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "6"}],
    }
    parent, parent_trials = _run(
        session, _request("tune-parent", channels, "Random", ranges, max_jobs=3, parallel=2)
    )
    assert parent["HyperParameterTuningJobStatus"] == "Completed"
    child_request = _request("tune-child", channels, "Bayesian", ranges, max_jobs=2, parallel=1)
    child_request["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "tune-parent"}],
        "WarmStartType": "IdenticalDataAndAlgorithm",
    }
    child, child_trials = _run(session, child_request)
    assert child["HyperParameterTuningJobStatus"] == "Completed", child.get("FailureReason")
    assert len(child_trials) == 2  # the parent's 3 results are reused, not run again
    parent_points = {tuple(sorted(t["TunedHyperParameters"].items())) for t in parent_trials}
    assert not parent_points & {tuple(sorted(t["TunedHyperParameters"].items())) for t in child_trials}
    # The control: the same child, same seed, without the parent. Its searcher sees no results yet, so
    # its first point is a seeded random draw (the same every run); the warm child's searcher has the
    # parent's 3 results (past TPE's 2 start-up trials) and proposes from its model. Only the parent's
    # results differ between the two.
    cold, cold_trials = _run(
        session, _request("tune-cold", channels, "Bayesian", ranges, max_jobs=2, parallel=1)
    )
    assert cold["HyperParameterTuningJobStatus"] == "Completed"
    first = lambda trials: min(trials, key=lambda t: t["TrainingJobName"])["TunedHyperParameters"]  # noqa: E731
    assert first(child_trials) != first(cold_trials), "the parent's results must change the child's search"
    everything = parent_trials + child_trials
    best = max(everything, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    overall = child["OverallBestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert overall == best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]


@pytest.mark.parametrize("strategy", ["Random", "Grid", "Hyperband"])
def test_linear_learner_with_every_strategy(session, channels, strategy):
    if strategy == "Grid":
        ranges = {"CategoricalParameterRanges": [{"Name": "learning_rate", "Values": ["0.01", "0.1"]}]}
    else:
        ranges = {
            "ContinuousParameterRanges": [
                {
                    "Name": "learning_rate",
                    "MinValue": "0.001",
                    "MaxValue": "0.5",
                    "ScalingType": "Logarithmic",
                }
            ]
        }
    static = {"predictor_type": "binary_classifier", "epochs": "4", "mini_batch_size": "100"}
    request = _request(
        f"tune-ll-{strategy.lower()}",
        channels,
        strategy,
        ranges,
        algorithm="linear-learner",
        static=static,
        metric=("Minimize", "validation:objective_loss"),
        max_jobs=None if strategy == "Grid" else 3,
        parallel=2,
    )
    desc, trials = _run(session, request)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert len(trials) == (2 if strategy == "Grid" else 3)
    assert desc["BestTrainingJob"]["TrainingJobStatus"] in ("Completed", "Stopped")


def test_a_failed_trial_does_not_fail_the_tuning_job(session, channels):
    # reg:gamma needs positive labels: on 0/1 labels its trial fails while training; the other succeeds
    ranges = {
        "CategoricalParameterRanges": [{"Name": "objective", "Values": ["binary:logistic", "reg:gamma"]}]
    }
    request = _request(
        "tune-one-fails", channels, "Grid", ranges, static={"num_round": "5"}, max_jobs=None, parallel=1
    )
    desc, trials = _run(session, request)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    by_objective = {t["TunedHyperParameters"]["objective"]: t for t in trials}
    assert by_objective["reg:gamma"]["TrainingJobStatus"] == "Failed"
    assert by_objective["binary:logistic"]["TrainingJobStatus"] == "Completed"
    assert desc["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    assert desc["BestTrainingJob"]["TrainingJobName"] == by_objective["binary:logistic"]["TrainingJobName"]
