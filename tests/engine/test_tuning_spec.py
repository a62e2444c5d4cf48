"""CreateHyperParameterTuningJob validation: botocore's shape, SageMaker's tuning rules and the
algorithm's hyperparameters and metrics; every bad request is a ValidationError whose message names
the problem. Trials: their CreateTrainingJob requests, names and the Grid's points."""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import pytest

from raymaker.cluster.definition import InstanceType
from raymaker.engine.tuning_spec import (
    OBJECTIVE_HYPERPARAMETER,
    ParameterRange,
    TuningJobSpec,
    grid_points,
    to_wire,
    trial_request,
    validate_tuning_job,
)
from raymaker.engine.validation import validate_request, validate_training_job
from raymaker.protocol.errors import ValidationError

TYPES = {
    "local": InstanceType("local", cpus=None),
    "ml.m5.xlarge": InstanceType("ml.m5.xlarge", cpus=1, price_per_hour=0.23),
}
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _channel(name: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "ContentType": "text/csv",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://bucket/xgb/{name}/"}},
    }


def xgb_request() -> dict[str, Any]:
    """The sagemaker-contract §4.9 example, unchanged (its ranges fit raymaker's xgboost)."""
    return {
        "HyperParameterTuningJobName": "xgb-tune-01",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 3},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5", "ScalingType": "Auto"}
                ],
                "IntegerParameterRanges": [
                    {"Name": "max_depth", "MinValue": "0", "MaxValue": "10", "ScalingType": "Linear"}
                ],
                "CategoricalParameterRanges": [{"Name": "tree_method", "Values": ["auto", "hist"]}],
            },
            "TrainingJobEarlyStoppingType": "Off",
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {
                "num_round": "100",
                "objective": "binary:logistic",
                "eval_metric": "auc",
            },
            "AlgorithmSpecification": {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "InputDataConfig": [_channel("train"), _channel("validation")],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/xgb/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    }


def grid_request() -> dict[str, Any]:
    request = xgb_request()
    config = request["HyperParameterTuningJobConfig"]
    config["Strategy"] = "Grid"
    del config["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    config["ParameterRanges"] = {
        "CategoricalParameterRanges": [
            {"Name": "tree_method", "Values": ["auto", "hist", "approx"]},
            {"Name": "max_depth", "Values": ["2", "4"]},
            {"Name": "grow_policy", "Values": ["depthwise", "lossguide"]},
        ]
    }
    return request


def validate(request: dict[str, Any]) -> TuningJobSpec:
    return validate_tuning_job(request, instance_types=TYPES)


def check(request: dict[str, Any], *fragments: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate(request)
    err = info.value
    assert err.code == "ValidationException" and err.http_status == 400
    for fragment in fragments:
        assert fragment in err.message, err.message
    return err


def config(request: dict[str, Any]) -> dict[str, Any]:
    return request["HyperParameterTuningJobConfig"]


def ranges(request: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return config(request)["ParameterRanges"].setdefault(kind, [])


# --- a valid request -----------------------------------------------------------------------------


def test_contract_example_validates() -> None:
    request = xgb_request()
    spec = validate(request)
    assert spec.name == "xgb-tune-01" and spec.algorithm == "xgboost"
    assert spec.strategy == "Bayesian" and spec.early_stopping == "Off"
    assert (spec.objective_metric, spec.objective_type, spec.maximize) == ("validation:auc", "Maximize", True)
    assert (spec.max_jobs, spec.max_parallel) == (20, 3)
    # Ranges keep the request's order.
    assert spec.ranges == (
        ParameterRange("eta", "continuous", 0.1, 0.5, scaling="Auto"),
        ParameterRange("max_depth", "integer", 0, 10, scaling="Linear"),
        ParameterRange("tree_method", "categorical", values=("auto", "hist")),
    )
    assert spec.static_hyperparameters == {
        "num_round": "100",
        "objective": "binary:logistic",
        "eval_metric": "auc",
    }
    assert spec.training_definition == request["TrainingJobDefinition"]
    assert spec.warm_start is None and spec.request == request and spec.request is not request
    assert spec.algorithm_class.name == "xgboost"


def test_objective_may_come_from_the_definition() -> None:
    request = xgb_request()
    objective = config(request).pop("HyperParameterTuningJobObjective")
    request["TrainingJobDefinition"]["TuningObjective"] = objective
    spec = validate(request)
    assert spec.objective_metric == "validation:auc" and spec.objective_type == "Maximize"


def test_missing_objective() -> None:
    request = xgb_request()
    del config(request)["HyperParameterTuningJobObjective"]
    check(request, "objective is missing", "HyperParameterTuningJobObjective")


def test_botocore_shape_is_checked_first() -> None:
    request = xgb_request()
    del config(request)["ResourceLimits"]["MaxParallelTrainingJobs"]
    check(request, "MaxParallelTrainingJobs")


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad_name", "-lead", "trail-", "a.b"])
def test_tuning_job_name_rules(name: str) -> None:
    request = xgb_request()
    request["HyperParameterTuningJobName"] = name
    check(request, "HyperParameterTuningJobName", "1-32 letters, digits and hyphens")


def test_tuning_job_name_at_most_32_characters() -> None:
    request = xgb_request()
    request["HyperParameterTuningJobName"] = "a" * 33
    check(request, "HyperParameterTuningJobName has 33 characters", "at most 32")


def test_32_character_name_is_fine() -> None:
    request = xgb_request()
    request["HyperParameterTuningJobName"] = "a" * 32
    assert validate(request).name == "a" * 32


# --- the training definition ---------------------------------------------------------------------


def test_plural_definitions_are_not_supported_yet() -> None:
    request = xgb_request()
    definition = request.pop("TrainingJobDefinition")
    request["TrainingJobDefinitions"] = [definition]
    check(request, "TrainingJobDefinitions", "not supported yet", "single TrainingJobDefinition")


def test_definition_is_required() -> None:
    request = xgb_request()
    del request["TrainingJobDefinition"]
    check(request, "TrainingJobDefinition is required")


def test_algorithm_resolves_as_for_training() -> None:
    request = xgb_request()
    request["TrainingJobDefinition"]["AlgorithmSpecification"] = {
        "AlgorithmName": "xgboost",
        "TrainingInputMode": "File",
    }
    assert validate(request).algorithm == "xgboost"
    request["TrainingJobDefinition"]["AlgorithmSpecification"]["AlgorithmName"] = "resnet"
    check(request, "TrainingJobDefinition.AlgorithmSpecification.AlgorithmName", "'resnet'")


def test_definition_is_checked_as_a_training_job() -> None:
    request = xgb_request()
    request["TrainingJobDefinition"]["ResourceConfig"]["InstanceType"] = "ml.p3.2xlarge"
    check(request, "TrainingJobDefinition does not make a valid training job", "ml.p3.2xlarge")

    request = xgb_request()
    request["TrainingJobDefinition"]["InputDataConfig"].append(_channel("extra"))
    check(request, "no channel 'extra'")

    request = xgb_request()
    request["TrainingJobDefinition"]["StaticHyperParameters"]["nope"] = "1"
    check(request, "no hyperparameter 'nope'")

    request = xgb_request()  # a rule between values, beyond the declared [0, 1]
    ranges(request, "ContinuousParameterRanges").append(
        {"Name": "subsample", "MinValue": "0", "MaxValue": "1"}
    )
    check(request, "first trial, with eta=0.1, subsample=0.0, max_depth=0", "'subsample'")


def test_tuning_resource_config_becomes_resource_config() -> None:
    request = xgb_request()
    definition = request["TrainingJobDefinition"]
    definition["HyperParameterTuningResourceConfig"] = definition.pop("ResourceConfig")
    spec = validate(request)
    trial = trial_request(spec, 1, {"eta": "0.2", "max_depth": "3", "tree_method": "hist"})
    assert trial["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 10,
    }
    assert "HyperParameterTuningResourceConfig" not in trial


def test_cross_parameter_rules_are_checked_for_the_ranges() -> None:
    request = xgb_request()
    # eval_metric auc needs a binary: objective; tuning the objective over a regression one fails.
    del request["TrainingJobDefinition"]["StaticHyperParameters"]["objective"]
    ranges(request, "CategoricalParameterRanges").append(
        {"Name": "objective", "Values": ["binary:logistic", "reg:squarederror"]}
    )
    check(request, "would fail", "objective=reg:squarederror", "auc")


# --- ranges --------------------------------------------------------------------------------------


def test_unknown_hyperparameter_lists_the_tunable_ones() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges").append(
        {"Name": "learning_rat", "MinValue": "0", "MaxValue": "1"}
    )
    err = check(request, "no hyperparameter 'learning_rat'", "tunable hyperparameters are")
    assert "colsample_bytree" in err.message and "max_depth" in err.message


def test_range_outside_the_valid_range() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges")[0]["MaxValue"] = "1.5"  # eta is in [0, 1]
    check(request, "'eta'", "MaxValue 1.5", "outside", "[0, 1]")

    request = xgb_request()
    ranges(request, "IntegerParameterRanges")[0]["MinValue"] = "-1"  # max_depth >= 0
    check(request, "'max_depth'", "MinValue -1", "outside", "[0, inf]")


def test_categorical_values_are_parsed_by_the_hyperparameter() -> None:
    request = xgb_request()
    ranges(request, "CategoricalParameterRanges")[0]["Values"] = ["auto", "gpu_exact"]
    check(request, "'tree_method'", "'gpu_exact'", "not one of")

    request = xgb_request()
    ranges(request, "CategoricalParameterRanges").append({"Name": "max_bin", "Values": ["16", "many"]})
    check(request, "'max_bin'", "'many'", "not an integer")

    request = xgb_request()
    ranges(request, "CategoricalParameterRanges")[0]["Values"] = ["auto", "hist", "auto"]
    check(request, "'auto'", "more than once")


def test_range_kind_must_suit_the_hyperparameter() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges").append(
        {"Name": "max_bin", "MinValue": "2", "MaxValue": "64"}
    )
    check(request, "'max_bin' is a int hyperparameter", "IntegerParameterRanges")

    request = xgb_request()
    ranges(request, "IntegerParameterRanges").append(
        {"Name": "grow_policy", "MinValue": "0", "MaxValue": "1"}
    )
    check(request, "'grow_policy'", "CategoricalParameterRanges")

    request = xgb_request()  # an integer range on a float hyperparameter is fine
    ranges(request, "IntegerParameterRanges").append({"Name": "gamma", "MinValue": "0", "MaxValue": "5"})
    assert validate(request).range("gamma").kind == "integer"


def test_integer_range_needs_whole_numbers() -> None:
    request = xgb_request()
    ranges(request, "IntegerParameterRanges")[0]["MaxValue"] = "7.5"
    check(request, "'max_depth'", "MaxValue is '7.5'", "whole numbers")


def test_range_on_a_static_hyperparameter() -> None:
    request = xgb_request()
    request["TrainingJobDefinition"]["StaticHyperParameters"]["eta"] = "0.3"
    check(request, "'eta' is also given in TrainingJobDefinition.StaticHyperParameters")


def test_hyperparameter_with_two_ranges() -> None:
    request = xgb_request()
    ranges(request, "CategoricalParameterRanges").append({"Name": "eta", "Values": ["0.1", "0.2"]})
    check(request, "'eta' has more than one range")


def test_min_greater_than_max() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges")[0].update(MinValue="0.5", MaxValue="0.1")
    check(request, "'eta'", "MinValue 0.5 is greater than MaxValue 0.1")


def test_non_numeric_bounds() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges")[0]["MinValue"] = "low"
    check(request, "'eta'", "MinValue is 'low'", "not a number")


def test_logarithmic_scaling_needs_positive_values() -> None:
    request = xgb_request()
    ranges(request, "IntegerParameterRanges")[0]["ScalingType"] = "Logarithmic"  # max_depth from 0
    check(request, "'max_depth'", "Logarithmic scaling needs values greater than 0", "MinValue is 0")

    request = xgb_request()
    ranges(request, "ContinuousParameterRanges")[0]["ScalingType"] = "Logarithmic"  # eta from 0.1
    assert validate(request).range("eta").scaling == "Logarithmic"


def test_reverse_logarithmic_scaling_rules() -> None:
    request = xgb_request()
    ranges(request, "IntegerParameterRanges")[0].update(
        MinValue="0", MaxValue="0", ScalingType="ReverseLogarithmic"
    )
    check(request, "'max_depth'", "ReverseLogarithmic scaling is supported only for continuous ranges")

    request = xgb_request()
    ranges(request, "ContinuousParameterRanges").append(
        {"Name": "subsample", "MinValue": "0.5", "MaxValue": "1", "ScalingType": "ReverseLogarithmic"}
    )
    check(request, "'subsample'", "within 0 <= x < 1", "[0.5, 1]")

    request = xgb_request()
    ranges(request, "ContinuousParameterRanges").append(
        {"Name": "subsample", "MinValue": "0.5", "MaxValue": "0.99", "ScalingType": "ReverseLogarithmic"}
    )
    assert validate(request).range("subsample").scaling == "ReverseLogarithmic"


def test_unknown_scaling_type() -> None:
    request = xgb_request()
    ranges(request, "ContinuousParameterRanges")[0]["ScalingType"] = "Exponential"
    check(request, "ScalingType is 'Exponential'", "Auto, Linear, Logarithmic, ReverseLogarithmic")


def test_at_most_30_ranges_in_all() -> None:
    from raymaker.algorithms import get_algorithm

    def some_value(hp: Any) -> str:
        if isinstance(hp.default, (bool, int, float, str)):
            return str(hp.default)
        if hp.choices:
            return str(hp.choices[0])
        if hp.kind in ("int", "float"):
            return str(int(hp.low) if hp.low is not None else 1)
        return str(hp.default)

    request = xgb_request()
    taken = {"eta", "max_depth", "tree_method", *request["TrainingJobDefinition"]["StaticHyperParameters"]}
    extra = [
        hp
        for hp in get_algorithm("xgboost").hyperparameters
        if hp.name not in taken and (hp.kind in ("int", "float", "bool") or hp.choices)
    ]
    assert len(extra) >= 28
    for hp in extra[:28]:  # 3 + 28 = 31
        ranges(request, "CategoricalParameterRanges").append({"Name": hp.name, "Values": [some_value(hp)]})
    check(request, "31 ranges", "at most 30")
    del ranges(request, "CategoricalParameterRanges")[-1]
    assert len(validate(request).ranges) == 30


def test_autotune_parameters_are_not_supported_yet() -> None:
    request = xgb_request()
    config(request)["ParameterRanges"]["AutoParameters"] = [{"Name": "eta", "ValueHint": "0.2"}]
    check(request, "AutoParameters", "not supported yet")


def test_no_ranges() -> None:
    request = xgb_request()
    config(request)["ParameterRanges"] = {}
    check(request, "ParameterRanges is empty")


# --- objective -----------------------------------------------------------------------------------


def test_metric_the_algorithm_does_not_emit() -> None:
    request = xgb_request()
    config(request)["HyperParameterTuningJobObjective"]["MetricName"] = "validation:accuracy_score"
    err = check(request, "'validation:accuracy_score' is not a metric xgboost emits", "use one of")
    assert "validation:auc" in err.message and "validation:rmse" in err.message


def test_metric_needs_its_channel() -> None:
    request = xgb_request()
    request["TrainingJobDefinition"]["InputDataConfig"] = [_channel("train")]
    check(request, "'validation:auc' is computed on the 'validation' channel", "InputDataConfig")


def test_objective_type_enum() -> None:
    request = xgb_request()
    config(request)["HyperParameterTuningJobObjective"]["Type"] = "Maximise"
    check(request, "Type is 'Maximise'", "Maximize, Minimize")


def test_conflicting_objectives() -> None:
    request = xgb_request()
    request["TrainingJobDefinition"]["TuningObjective"] = {
        "Type": "Minimize",
        "MetricName": "validation:rmse",
    }
    check(request, "differ", "one place")


# --- limits and strategies -----------------------------------------------------------------------


def test_parallel_above_max_jobs() -> None:
    request = xgb_request()
    config(request)["ResourceLimits"].update(MaxNumberOfTrainingJobs=2, MaxParallelTrainingJobs=3)
    check(request, "MaxParallelTrainingJobs (3) is above MaxNumberOfTrainingJobs (2)")


@pytest.mark.parametrize("strategy", ["Bayesian", "Random", "Hyperband"])
def test_max_jobs_required_unless_grid(strategy: str) -> None:
    request = xgb_request()
    config(request)["Strategy"] = strategy
    del config(request)["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    check(request, "MaxNumberOfTrainingJobs is required", strategy)


def test_unknown_strategy() -> None:
    request = xgb_request()
    config(request)["Strategy"] = "Evolutionary"
    check(request, "Strategy is 'Evolutionary'", "Bayesian, Random, Hyperband, Grid")


def test_grid_infers_max_jobs() -> None:
    request = grid_request()
    config(request)["ResourceLimits"]["MaxParallelTrainingJobs"] = 20
    spec = validate(request)
    assert spec.max_jobs == 12
    assert spec.max_parallel == 12  # no more than the grid could run at once


def test_grid_with_matching_max_jobs() -> None:
    request = grid_request()
    config(request)["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 12
    assert validate(request).max_jobs == 12


def test_grid_with_other_max_jobs() -> None:
    request = grid_request()
    config(request)["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 10
    check(
        request, "MaxNumberOfTrainingJobs is 10", "Grid has 12 combinations", "set it to 12 or leave it out"
    )


def test_grid_with_non_categorical_range() -> None:
    request = grid_request()
    ranges(request, "ContinuousParameterRanges").append({"Name": "eta", "MinValue": "0.1", "MaxValue": "0.3"})
    check(request, "Grid strategy takes only categorical ranges", "'eta'")


def test_grid_size_limit() -> None:
    request = grid_request()
    config(request)["ParameterRanges"]["CategoricalParameterRanges"] = [
        {"Name": "max_depth", "Values": [str(i) for i in range(30)]},
        {"Name": "max_bin", "Values": [str(i) for i in range(2, 32)]},
    ]
    check(request, "900 combinations", "at most 750")


def test_grid_points_are_the_categorical_product() -> None:
    spec = validate(grid_request())
    points = grid_points(spec)
    expected = [
        {"tree_method": t, "max_depth": d, "grow_policy": g}
        for t, d, g in itertools.product(["auto", "hist", "approx"], ["2", "4"], ["depthwise", "lossguide"])
    ]
    assert points == expected
    assert grid_points(spec) == points  # stable
    assert len({tuple(p.items()) for p in points}) == spec.max_jobs == 12
    with pytest.raises(ValueError, match="categorical ranges only"):
        grid_points(validate(xgb_request()))


def test_hyperband_rejects_early_stopping_auto() -> None:
    request = xgb_request()
    config(request).update(
        Strategy="Hyperband",
        TrainingJobEarlyStoppingType="Auto",
        StrategyConfig={"HyperbandStrategyConfig": {"MaxResource": 100}},
    )
    check(request, "TrainingJobEarlyStoppingType must be Off with the Hyperband strategy")


def test_early_stopping_auto_is_fine_for_bayesian() -> None:
    request = xgb_request()
    config(request)["TrainingJobEarlyStoppingType"] = "Auto"
    assert validate(request).early_stopping == "Auto"
    config(request)["TrainingJobEarlyStoppingType"] = "On"
    check(request, "TrainingJobEarlyStoppingType is 'On'", "Off, Auto")


def test_hyperband_max_resource() -> None:
    request = xgb_request()
    config(request)["Strategy"] = "Hyperband"
    # xgboost's num_round is not one of the keys SageMaker infers MaxResource from.
    check(request, "Hyperband needs", "MaxResource", "epochs")
    config(request)["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 5, "MaxResource": 100}}
    spec = validate(request)
    assert (spec.hyperband_min_resource, spec.hyperband_max_resource) == (5, 100)
    config(request)["StrategyConfig"]["HyperbandStrategyConfig"].update(MinResource=200)
    check(request, "MinResource (200) is greater than MaxResource (100)")
    config(request)["StrategyConfig"]["HyperbandStrategyConfig"].update(MinResource=1, MaxResource=20001)
    check(request, "MaxResource is 20001", "at most 20000")


def test_hyperband_infers_max_resource_from_epochs() -> None:
    request = xgb_request()
    definition = request["TrainingJobDefinition"]
    definition["AlgorithmSpecification"] = {"AlgorithmName": "linear-learner", "TrainingInputMode": "File"}
    definition["StaticHyperParameters"] = {"predictor_type": "binary_classifier", "epochs": "12"}
    config(request).update(
        Strategy="Hyperband",
        HyperParameterTuningJobObjective={
            "Type": "Maximize",
            "MetricName": "validation:binary_classification_accuracy",
        },
        ParameterRanges={
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"}
            ],
            "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "10", "MaxValue": "1000"}],
        },
    )
    spec = validate(request)
    assert spec.algorithm == "linear-learner"
    assert (spec.hyperband_min_resource, spec.hyperband_max_resource) == (1, 12)


def test_strategy_config_only_for_hyperband() -> None:
    request = xgb_request()
    config(request)["StrategyConfig"] = {"HyperbandStrategyConfig": {"MaxResource": 10}}
    check(request, "StrategyConfig is for the Hyperband strategy only")


# --- warm start ----------------------------------------------------------------------------------


def _warm(request: dict[str, Any], parents: list[str], kind: str = "IdenticalDataAndAlgorithm") -> None:
    request["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": p} for p in parents],
        "WarmStartType": kind,
    }


def test_warm_start_is_parsed() -> None:
    request = xgb_request()
    _warm(request, ["parent-1", "parent-2"], "TransferLearning")
    assert validate(request).warm_start == {"type": "TransferLearning", "parents": ["parent-1", "parent-2"]}


def test_warm_start_without_parents() -> None:
    request = xgb_request()
    _warm(request, [])
    check(request, "ParentHyperParameterTuningJobs", "valid min length: 1")


def test_warm_start_with_more_than_5_parents() -> None:
    request = xgb_request()
    _warm(request, [f"p{i}" for i in range(6)])
    check(request, "ParentHyperParameterTuningJobs has 6 entries", "at most 5")


def test_warm_start_type() -> None:
    request = xgb_request()
    _warm(request, ["parent-1"], "SameEverything")
    check(request, "WarmStartType is 'SameEverything'", "IdenticalDataAndAlgorithm, TransferLearning")


def test_warm_start_parent_names() -> None:
    request = xgb_request()
    _warm(request, ["parent-1", "PARENT-1"])
    check(request, "names a job twice")
    _warm(request, ["xgb-tune-01"])
    check(request, "cannot warm-start from itself")
    _warm(request, ["bad_name"])
    check(request, "'bad_name' is not a tuning job name")


# --- trials --------------------------------------------------------------------------------------


def test_trial_request_is_a_valid_training_job() -> None:
    request = xgb_request()
    request["Tags"] = [{"Key": "team", "Value": "ml"}]
    spec = validate(request)
    trial = trial_request(spec, 7, {"eta": 0.25, "max_depth": 3.0, "tree_method": "hist"})
    validate_request("CreateTrainingJob", trial)
    training = validate_training_job(trial, instance_types=TYPES)
    assert training.algorithm == "xgboost"
    assert training.hyperparameters["eta"] == 0.25 and training.hyperparameters["max_depth"] == 3
    assert trial["HyperParameters"] == {
        "num_round": "100",
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "eta": "0.25",
        "max_depth": "3",
        "tree_method": "hist",
        OBJECTIVE_HYPERPARAMETER: "validation:auc",
    }
    definition = request["TrainingJobDefinition"]
    for key in ("AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig"):
        assert trial[key] == definition[key]
    assert trial["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert trial["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert "StaticHyperParameters" not in trial and "TuningObjective" not in trial
    assert trial["TrainingJobName"].startswith("xgb-tune-01-007-")


def test_trial_request_copies_optional_members() -> None:
    request = xgb_request()
    definition = request["TrainingJobDefinition"]
    definition["CheckpointConfig"] = {"S3Uri": "s3://bucket/ckpt"}
    definition["Environment"] = {"A": "1"}
    definition["RetryStrategy"] = {"MaximumRetryAttempts": 2}
    definition["DefinitionName"] = "xgb"
    spec = validate(request)
    trial = trial_request(spec, 1, {"eta": "0.1", "max_depth": "0", "tree_method": "auto"})
    assert trial["CheckpointConfig"] == {"S3Uri": "s3://bucket/ckpt"}
    assert trial["Environment"] == {"A": "1"} and trial["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert "DefinitionName" not in trial
    trial["Environment"]["A"] = "2"  # the trial's request is a copy
    assert spec.training_definition["Environment"] == {"A": "1"}


def test_trial_names_are_unique_and_stable() -> None:
    spec = validate(xgb_request())
    a = {"eta": "0.2", "max_depth": "3", "tree_method": "hist"}
    b = {"eta": "0.2", "max_depth": "4", "tree_method": "hist"}
    name_a = trial_request(spec, 1, a)["TrainingJobName"]
    assert trial_request(spec, 1, dict(reversed(a.items())))["TrainingJobName"] == name_a
    same = {"eta": 0.2, "max_depth": "3.0", "tree_method": "hist"}  # one spelling per value
    assert trial_request(spec, 1, same)["TrainingJobName"] == name_a
    assert trial_request(spec, 1, b)["TrainingJobName"] != name_a
    assert trial_request(spec, 2, a)["TrainingJobName"] != name_a
    prefix, index, digest = name_a.rsplit("-", 2)
    assert prefix == "xgb-tune-01" and index == "001" and re.fullmatch("[0-9a-f]{8}", digest)


def test_trial_names_fit_63_characters() -> None:
    request = xgb_request()
    request["HyperParameterTuningJobName"] = "n" * 32
    spec = validate(request)
    point = {"eta": "0.2", "max_depth": "3", "tree_method": "hist"}
    for index in (1, 999, 10000, 10**30):
        name = trial_request(spec, index, point)["TrainingJobName"]
        assert len(name) <= 63 and name.endswith(f"-{index:03d}-" + name[-8:])
        validate_request("CreateTrainingJob", {**trial_request(spec, index, point)})


def test_trial_values_must_fit_the_ranges() -> None:
    spec = validate(xgb_request())
    with pytest.raises(ValueError, match="outside"):
        trial_request(spec, 1, {"eta": "0.9", "max_depth": "3", "tree_method": "hist"})
    with pytest.raises(ValueError, match="'exact' for 'tree_method' is outside"):
        trial_request(spec, 1, {"eta": 0.2, "max_depth": 3, "tree_method": "exact"})
    with pytest.raises(ValueError, match="missing"):
        trial_request(spec, 1, {"eta": "0.2", "max_depth": "3"})
    with pytest.raises(ValueError, match="unknown"):
        trial_request(spec, 1, {"eta": "0.2", "max_depth": "3", "tree_method": "hist", "gamma": "1"})
    with pytest.raises(ValueError, match="index"):
        trial_request(spec, 0, {"eta": "0.2", "max_depth": "3", "tree_method": "hist"})


def test_to_wire() -> None:
    integer = ParameterRange("max_depth", "integer", 0, 10)
    continuous = ParameterRange("eta", "continuous", 1e-6, 0.5)
    categorical = ParameterRange("tree_method", "categorical", values=("auto", "hist"))
    assert to_wire(integer, 5) == "5" and to_wire(integer, 5.0) == "5" and to_wire(integer, 4.6) == "5"
    assert to_wire(continuous, 0.1) == "0.1" and float(to_wire(continuous, 1e-5)) == 1e-5
    value = 0.1 + 0.2  # repr keeps every digit
    assert float(to_wire(continuous, value)) == value
    assert to_wire(categorical, "hist") == "hist"
    with pytest.raises(ValueError):
        to_wire(categorical, "exact")
    with pytest.raises(ValueError):
        to_wire(integer, 11)
    assert integer.contains("3") and not integer.contains("3.5") and not continuous.contains("x")
    assert integer.to_request() == {
        "Name": "max_depth",
        "MinValue": "0",
        "MaxValue": "10",
        "ScalingType": "Auto",
    }


def test_request_is_not_modified() -> None:
    request = xgb_request()
    before = copy.deepcopy(request)
    spec = validate(request)
    trial_request(spec, 1, {"eta": "0.2", "max_depth": "3", "tree_method": "hist"})
    assert request == before
