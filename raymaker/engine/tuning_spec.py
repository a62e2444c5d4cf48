"""CreateHyperParameterTuningJob validation: the request's shape against botocore's SageMaker model,
then SageMaker's documented tuning rules and raymaker's (the ranges must fit the built-in algorithm's
declared hyperparameters, the objective must be a metric it emits), turned into a ``TuningJobSpec``.
Pure Python, no Ray: the tuner builds each trial's CreateTrainingJob request with ``trial_request``.

Every failure is a ``ValidationError`` whose message says what to change. Sources for the rules
(SageMaker Developer Guide ``DG:<page>``, API reference ``API:<shape>``, botocore's model ``BOTO``):

- names: HyperParameterTuningJobName 1-32 characters, ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}`` (BOTO);
  trials are named ``<tuning job>-<NNN>-<8 hex>`` (SageMaker's trial naming) and carry the tuning
  job's Tags (BOTO, CreateHyperParameterTuningJob.Tags) and ``_tuning_objective_metric``
  (DG:automatic-model-tuning-define-ranges).
- scaling: Logarithmic only for ranges of values > 0; ReverseLogarithmic only for continuous ranges
  entirely within 0 <= x < 1 (DG:automatic-model-tuning-define-ranges, API:ContinuousParameterRange).
- at most 30 ranges in all, summed over the three kinds; at most 30 values per categorical range
  (API:ParameterRanges, DG:automatic-model-tuning-limits).
- Grid: categorical ranges only; MaxNumberOfTrainingJobs may be left out (it is the number of
  distinct combinations) and, if given, must equal it; at most 750 grid points
  (DG:automatic-model-tuning-how-it-works, DG:automatic-model-tuning-limits).
- Hyperband: TrainingJobEarlyStoppingType must be Off (API:HyperParameterTuningJobConfig);
  StrategyConfig only with Hyperband; MaxResource <= 20000, inferred from the static hyperparameter
  epochs | numepochs | n-epochs | n_epochs | num_epochs when not given, else a validation error
  (API:HyperbandStrategyConfig).
- warm start: 1-5 parent tuning jobs, type IdenticalDataAndAlgorithm | TransferLearning (BOTO,
  DG:automatic-model-tuning-warm-start; the rules that need the parents' records, such as "all
  parents terminal" and "same objective", are checked where the job store is at hand).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.algorithms import Algorithm, get_algorithm
from raymaker.algorithms.base import Hyperparameter, HyperparameterError
from raymaker.cluster.definition import InstanceType
from raymaker.engine.validation import (
    SCRIPT,
    _resolve_algorithm,
    is_custom_image,
    script_framework,
    validate_request,
    validate_training_job,
)
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.service_model import input_shape, service_model

# botocore's HyperParameterTuningJobName pattern (botocore does not enforce patterns, so raymaker does).
TUNING_JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
MAX_TRAINING_JOB_NAME = 63
MAX_RANGES = 30  # API:ParameterRanges, summed over Integer/Continuous/Categorical
MAX_GRID_POINTS = 750  # DG:automatic-model-tuning-limits ([Grid] training jobs per tuning job)
MAX_HYPERBAND_RESOURCE = 20000  # API:HyperbandStrategyConfig
HYPERBAND_EPOCH_KEYS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"

_RANGE_LISTS = (  # ParameterRanges member -> ParameterRange.kind (botocore's member order)
    ("IntegerParameterRanges", "integer"),
    ("ContinuousParameterRanges", "continuous"),
    ("CategoricalParameterRanges", "categorical"),
)
_LIST_OF_KIND = {kind: key for key, kind in _RANGE_LISTS}
# Which range kinds suit a hyperparameter of each declared kind (an integer range on a float
# hyperparameter is fine; a continuous range on an integer one would send "2.5").
_KINDS_FOR = {
    "int": ("integer", "categorical"),
    "float": ("continuous", "integer", "categorical"),
    "bool": ("categorical",),
    "str": ("categorical",),
    "list": ("categorical",),
}


@dataclass(frozen=True)
class ParameterRange:
    """One tunable hyperparameter: an integer or continuous interval, or categorical values. Values
    travel as strings, as CreateTrainingJob's HyperParameters map wants them (``to_wire``)."""

    name: str
    kind: str  # "continuous" | "integer" | "categorical"
    min_value: float | None = None
    max_value: float | None = None
    values: tuple[str, ...] = ()
    scaling: str = "Auto"  # Auto | Linear | Logarithmic | ReverseLogarithmic

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    def first_value(self) -> str:
        """The range's lowest value (its first, for a categorical range), as it travels."""
        return self.values[0] if self.is_categorical else self.to_wire(self.min_value)

    def last_value(self) -> str:
        """The range's highest value (its last, for a categorical range), as it travels."""
        return self.values[-1] if self.is_categorical else self.to_wire(self.max_value)

    def to_wire(self, value: Any) -> str:
        """How ``value`` travels: integers as "5", floats with ``repr`` (exact round trip),
        categorical values as given. ValueError if it is not a value of this range."""
        if self.is_categorical:
            text = value if isinstance(value, str) else str(value)
            if text not in self.values:
                raise ValueError(f"{text!r} is not one of {self.name!r}'s values {list(self.values)}")
            return text
        number = float(value)
        if self.kind == "integer":
            number = float(round(number))
        if not (self.min_value <= number <= self.max_value):  # type: ignore[operator]
            raise ValueError(
                f"{value!r} is outside {self.name!r}'s range [{self.min_value:g}, {self.max_value:g}]"
            )
        return str(int(number)) if self.kind == "integer" else repr(number)

    def contains(self, text: str) -> bool:
        """Whether the wire string ``text`` is a value of this range."""
        if self.is_categorical:
            return text in self.values
        try:
            number = float(text)
        except ValueError:
            return False
        if self.kind == "integer" and not number.is_integer():
            return False
        return self.min_value <= number <= self.max_value  # type: ignore[operator]

    def to_request(self) -> dict[str, Any]:
        """The range as a ParameterRanges entry (e.g. for DescribeHyperParameterTuningJob)."""
        if self.is_categorical:
            return {"Name": self.name, "Values": list(self.values)}
        return {
            "Name": self.name,
            "MinValue": self.to_wire(self.min_value),
            "MaxValue": self.to_wire(self.max_value),
            "ScalingType": self.scaling,
        }


def to_wire(range_: ParameterRange, value: Any) -> str:
    """How a sampled ``value`` of ``range_`` travels in HyperParameters (see ``ParameterRange.to_wire``)."""
    return range_.to_wire(value)


@dataclass(frozen=True)
class TuningJobSpec:
    """A validated CreateHyperParameterTuningJob request, parsed into what the tuner needs."""

    name: str
    algorithm: str  # raymaker built-in name, for get_algorithm()
    strategy: str  # Bayesian | Random | Hyperband | Grid
    objective_metric: str
    objective_type: str  # Maximize | Minimize
    max_jobs: int  # for Grid: the number of grid points (inferred when not given)
    max_parallel: int  # never above max_jobs
    early_stopping: str  # Off | Auto
    ranges: tuple[ParameterRange, ...]
    static_hyperparameters: dict[str, str]
    training_definition: dict[str, Any]  # TrainingJobDefinition, as given
    warm_start: dict[str, Any] | None  # {"type": ..., "parents": [names]}
    request: dict[str, Any] = field(repr=False)
    max_runtime_seconds: int | None = None  # ResourceLimits.MaxRuntimeInSeconds
    random_seed: int | None = None
    hyperband_min_resource: int | None = None  # Hyperband only: MinResource (default 1)
    hyperband_max_resource: int | None = None  # Hyperband only: given or inferred MaxResource
    completion_criteria: dict[str, Any] | None = None  # TuningJobCompletionCriteria, as given
    tags: tuple[dict[str, str], ...] = ()

    @property
    def algorithm_class(self) -> type[Algorithm]:
        return get_algorithm(self.algorithm)

    @property
    def maximize(self) -> bool:
        return self.objective_type == "Maximize"

    def range(self, name: str) -> ParameterRange:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(name)


# --- validation ----------------------------------------------------------------------------------


def _enum(shape_name: str) -> list[str]:
    return list(service_model().shape_for(shape_name).enum)


def _check_enum(value: Any, shape_name: str, where: str) -> None:
    allowed = _enum(shape_name)
    if value not in allowed:
        raise ValidationError(f"{where} is {value!r}; use one of {', '.join(allowed)}")


def _number(text: str, where: str) -> float:
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValidationError(f"{where} is {text!r}, which is not a number; give a number") from None
    if not math.isfinite(number):
        raise ValidationError(f"{where} is {text!r}; give a finite number")
    return number


def _parse_ranges(
    ranges_request: Mapping[str, Any], algo: type[Algorithm], static: Mapping[str, str], where: str
) -> tuple[ParameterRange, ...]:
    if ranges_request.get("AutoParameters"):
        raise ValidationError(
            f"{where}.AutoParameters (Autotune) is not supported yet: give Integer, Continuous or "
            "Categorical parameter ranges instead"
        )
    declared = {hp.name: hp for hp in algo.hyperparameters}
    tunable = ", ".join(sorted(declared))
    free = algo is _Script  # a script takes any hyperparameter, of the range's kind
    seen: set[str] = set()
    out: list[ParameterRange] = []
    kinds = dict(_RANGE_LISTS)
    for key in [k for k in ranges_request if k in kinds]:  # the request's order
        kind = kinds[key]
        for item in ranges_request[key] or ():
            name = item["Name"]
            here = f"{where}.{key} {name!r}"
            hp = declared.get(name)
            if hp is None and free:
                hp = Hyperparameter(name, _FREE_KINDS[kind])
            if hp is None:
                raise ValidationError(
                    f"{here}: {algo.name} has no hyperparameter {name!r}; rename or remove the range. "
                    f"Its tunable hyperparameters are {tunable}"
                )
            if name in seen:
                raise ValidationError(f"{here}: {name!r} has more than one range; give it one range only")
            seen.add(name)
            if name in static:
                raise ValidationError(
                    f"{here}: {name!r} is also given in TrainingJobDefinition.StaticHyperParameters; "
                    "remove it from one of them (a hyperparameter is either tuned or static)"
                )
            allowed_kinds = ("categorical",) if hp.choices else _KINDS_FOR.get(hp.kind, ("categorical",))
            if kind not in allowed_kinds:
                use = " or ".join(_LIST_OF_KIND[k] for k in allowed_kinds)
                raise ValidationError(
                    f"{here}: {name!r} is a {hp.kind} hyperparameter of {algo.name}; give its range in {use}"
                )
            if kind == "categorical":
                out.append(_categorical_range(item, hp, algo, here))
            else:
                out.append(_numeric_range(item, kind, hp, algo, here))
    if len(out) > MAX_RANGES:
        raise ValidationError(
            f"{where} has {len(out)} ranges; SageMaker allows at most {MAX_RANGES} tuned hyperparameters "
            "in all: make some of them static"
        )
    return tuple(out)


def _categorical_range(
    item: Mapping[str, Any], hp: Hyperparameter, algo: type[Algorithm], here: str
) -> ParameterRange:
    values = tuple(item["Values"])
    for value in values:
        try:
            hp.parse(value)
        except HyperparameterError as e:
            raise ValidationError(
                f"{here}: value {value!r} is not valid for {algo.name}: {e}; remove or correct it"
            ) from None
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValidationError(
            f"{here}: Values lists {', '.join(map(repr, duplicates))} more than once; list each once"
        )
    return ParameterRange(hp.name, "categorical", values=values)


def _numeric_range(
    item: Mapping[str, Any], kind: str, hp: Hyperparameter, algo: type[Algorithm], here: str
) -> ParameterRange:
    bounds = []
    for side in ("MinValue", "MaxValue"):
        text = item[side]
        number = _number(text, f"{here}: {side}")
        if kind == "integer" and not number.is_integer():
            raise ValidationError(f"{here}: {side} is {text!r}; an integer range needs whole numbers")
        if (hp.low is not None and number < hp.low) or (hp.high is not None and number > hp.high):
            raise ValidationError(
                f"{here}: {side} {text} is outside {algo.name}'s valid range {hp.range_text()} for "
                f"{hp.name!r}; keep the range within it"
            )
        bounds.append(number)
    low, high = bounds
    if low > high:
        raise ValidationError(
            f"{here}: MinValue {item['MinValue']} is greater than MaxValue {item['MaxValue']}; swap them"
        )
    scaling = item.get("ScalingType", "Auto")
    _check_enum(scaling, "HyperParameterScalingType", f"{here}: ScalingType")
    if scaling == "Logarithmic" and low <= 0:
        raise ValidationError(
            f"{here}: Logarithmic scaling needs values greater than 0, but MinValue is {item['MinValue']}; "
            "raise MinValue above 0 or use Linear scaling"
        )
    if scaling == "ReverseLogarithmic":
        if kind == "integer":
            raise ValidationError(
                f"{here}: ReverseLogarithmic scaling is supported only for continuous ranges; "
                "use Linear or Logarithmic scaling"
            )
        if low < 0 or high >= 1:
            raise ValidationError(
                f"{here}: ReverseLogarithmic scaling needs the whole range within 0 <= x < 1, but it is "
                f"[{item['MinValue']}, {item['MaxValue']}]; narrow the range or use Linear scaling"
            )
    return ParameterRange(hp.name, kind, min_value=low, max_value=high, scaling=scaling)


def _objective(config: Mapping[str, Any], definition: Mapping[str, Any]) -> tuple[str, str]:
    top = config.get("HyperParameterTuningJobObjective")
    own = definition.get("TuningObjective")
    if top and own and (top["MetricName"], top["Type"]) != (own["MetricName"], own["Type"]):
        raise ValidationError(
            "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective and "
            "TrainingJobDefinition.TuningObjective differ; give the objective in one place"
        )
    objective = top or own
    if not objective:
        raise ValidationError(
            "the tuning objective is missing: give HyperParameterTuningJobConfig."
            "HyperParameterTuningJobObjective with Type (Maximize | Minimize) and MetricName"
        )
    where = ("HyperParameterTuningJobObjective" if top else "TrainingJobDefinition.TuningObjective") + ".Type"
    _check_enum(objective["Type"], "HyperParameterTuningJobObjectiveType", where)
    return objective["MetricName"], objective["Type"]


class _Script:
    """What tuning checks a script-mode definition against: any hyperparameter (the script parses its
    own arguments), and the metrics its MetricDefinitions name."""

    name = "the script"
    hyperparameters: tuple[Hyperparameter, ...] = ()


_FREE_KINDS = {"integer": "int", "continuous": "float", "categorical": "str"}


def _check_script_metric(metric: str, definition: Mapping[str, Any]) -> None:
    names = [d["Name"] for d in (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []]
    if metric not in names:
        listed = f"it defines {', '.join(names)}" if names else "it defines none"
        raise ValidationError(
            f"objective metric {metric!r} is not one of TrainingJobDefinition.AlgorithmSpecification."
            f"MetricDefinitions ({listed}): add a MetricDefinition with that Name and a Regex that "
            "captures its value in the script's log (the SDK's metric_definitions)"
        )


def _check_metric(metric: str, algo: type[Algorithm], definition: Mapping[str, Any]) -> None:
    names = [m.name for m in algo.metrics]
    if metric not in names:
        raise ValidationError(
            f"objective metric {metric!r} is not a metric {algo.name} emits; use one of {', '.join(names)}"
        )
    # "validation:auc" is computed on the validation channel: without it no trial would report it.
    channel = metric.split(":", 1)[0]
    given = {c.get("ChannelName") for c in definition.get("InputDataConfig") or ()}
    if channel in {c.name for c in algo.channels} and channel not in given:
        raise ValidationError(
            f"objective metric {metric!r} is computed on the {channel!r} channel, which "
            "TrainingJobDefinition.InputDataConfig does not have: add the channel or pick another metric"
        )


def _hyperband(config: Mapping[str, Any], static: Mapping[str, str]) -> tuple[int, int]:
    hb = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
    where = "HyperParameterTuningJobConfig.StrategyConfig.HyperbandStrategyConfig"
    max_resource = hb.get("MaxResource")
    if max_resource is None:
        key = next((k for k in HYPERBAND_EPOCH_KEYS if k in static), None)
        if key is None:
            raise ValidationError(
                f"Hyperband needs {where}.MaxResource (the most epochs or rounds a trial may run); "
                "give it, or give one of the static hyperparameters "
                f"{', '.join(HYPERBAND_EPOCH_KEYS)} to infer it from"
            )
        max_resource = _number(static[key], f"TrainingJobDefinition.StaticHyperParameters[{key!r}]")
        if not max_resource.is_integer() or max_resource < 1:
            raise ValidationError(
                f"Hyperband infers MaxResource from StaticHyperParameters[{key!r}] = {static[key]!r}, "
                f"which is not a whole number >= 1; fix it or give {where}.MaxResource"
            )
        max_resource = int(max_resource)
    if max_resource > MAX_HYPERBAND_RESOURCE:
        raise ValidationError(
            f"{where}.MaxResource is {max_resource}; Hyperband allows at most {MAX_HYPERBAND_RESOURCE}"
        )
    min_resource = hb.get("MinResource", 1)
    if min_resource > max_resource:
        raise ValidationError(
            f"{where}.MinResource ({min_resource}) is greater than MaxResource ({max_resource}); lower it"
        )
    return min_resource, max_resource


def _warm_start(request: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    config = request.get("WarmStartConfig")
    if not config:
        return None
    _check_enum(
        config["WarmStartType"], "HyperParameterTuningJobWarmStartType", "WarmStartConfig.WarmStartType"
    )
    parents = [p.get("HyperParameterTuningJobName") for p in config["ParentHyperParameterTuningJobs"]]
    if not parents or len(parents) > 5:
        raise ValidationError(
            f"WarmStartConfig.ParentHyperParameterTuningJobs has {len(parents)} entries; give 1 to 5 parent "
            "tuning jobs"
        )
    for parent in parents:
        if not parent or not TUNING_JOB_NAME_RE.match(parent):
            raise ValidationError(
                f"WarmStartConfig.ParentHyperParameterTuningJobs: {parent!r} is not a tuning job name; "
                "give the HyperParameterTuningJobName of each parent"
            )
    if len({p.lower() for p in parents}) != len(parents):
        raise ValidationError(
            "WarmStartConfig.ParentHyperParameterTuningJobs names a job twice; list each once"
        )
    if name.lower() in {p.lower() for p in parents}:
        raise ValidationError(
            f"WarmStartConfig.ParentHyperParameterTuningJobs names this job ({name!r}); "
            "a tuning job cannot warm-start from itself"
        )
    return {"type": config["WarmStartType"], "parents": parents}


def trial_resources(spec: TuningJobSpec) -> dict[str, Any]:
    """Each trial's ResourceConfig (InstanceType, InstanceCount, ...)."""
    return _resources(spec.training_definition)["ResourceConfig"]


def _resources(definition: Mapping[str, Any]) -> dict[str, Any]:
    """TrainingJobDefinition with HyperParameterTuningResourceConfig turned into a ResourceConfig."""
    tuning_resources = definition.get("HyperParameterTuningResourceConfig")
    if not tuning_resources:
        return dict(definition)
    if definition.get("ResourceConfig"):
        raise ValidationError(
            "TrainingJobDefinition has both ResourceConfig and HyperParameterTuningResourceConfig; give one"
        )
    if tuning_resources.get("InstanceConfigs") or tuning_resources.get("AllocationStrategy"):
        raise ValidationError(
            "TrainingJobDefinition.HyperParameterTuningResourceConfig.InstanceConfigs (instance type "
            "flexibility) is not supported yet: give InstanceType and InstanceCount instead"
        )
    keys = ("InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId")
    out = {k: v for k, v in definition.items() if k != "HyperParameterTuningResourceConfig"}
    out["ResourceConfig"] = {k: tuning_resources[k] for k in keys if k in tuning_resources}
    return out


def validate_tuning_job(
    request: Mapping[str, Any], *, instance_types: Mapping[str, InstanceType] | None = None
) -> TuningJobSpec:
    """Validate a CreateHyperParameterTuningJob request (botocore's shape, SageMaker's tuning rules,
    the algorithm's hyperparameters and metrics) and parse it. The TrainingJobDefinition is checked
    at once as the first trial's CreateTrainingJob request, with ``instance_types`` as in
    ``validate_training_job`` (default: the cluster YAML's)."""
    validate_request("CreateHyperParameterTuningJob", request)
    request = copy.deepcopy(dict(request))
    name = request["HyperParameterTuningJobName"]
    if not TUNING_JOB_NAME_RE.match(name):
        raise ValidationError(
            f"HyperParameterTuningJobName {name!r} is invalid: use 1-32 letters, digits and hyphens, "
            "starting and ending with a letter or digit (pattern ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$)"
        )
    if request.get("Autotune"):
        raise ValidationError(
            "Autotune is not supported yet: remove it and give the ranges and limits yourself"
        )
    if request.get("TrainingJobDefinitions"):
        raise ValidationError(
            "TrainingJobDefinitions (tuning several algorithms in one job) is not supported yet: "
            "give a single TrainingJobDefinition"
        )
    definition = request.get("TrainingJobDefinition")
    if not definition:
        raise ValidationError(
            "TrainingJobDefinition is required: give the algorithm, role, channels, output path, resources "
            "and stopping condition every trial shares"
        )

    config = request["HyperParameterTuningJobConfig"]
    strategy = config["Strategy"]
    _check_enum(strategy, "HyperParameterTuningJobStrategyType", "HyperParameterTuningJobConfig.Strategy")
    early_stopping = config.get("TrainingJobEarlyStoppingType", "Off")
    _check_enum(
        early_stopping,
        "TrainingJobEarlyStoppingType",
        "HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType",
    )

    static = dict(definition.get("StaticHyperParameters") or {})
    try:
        # A script or the user's own container reads its own hyperparameters: any name is tunable.
        image = definition["AlgorithmSpecification"].get("TrainingImage")
        script = bool(image and is_custom_image(image)) or script_framework(
            definition["AlgorithmSpecification"], static
        ) is not None
        algorithm_name = SCRIPT if script else _resolve_algorithm(definition["AlgorithmSpecification"])
    except ValidationError as e:
        raise ValidationError(f"TrainingJobDefinition.{e.message}") from None
    algo: Any = _Script if script else get_algorithm(algorithm_name)

    metric, objective_type = _objective(config, definition)
    if script:
        _check_script_metric(metric, definition)
    else:
        _check_metric(metric, algo, definition)

    if config.get("ParameterRanges") and definition.get("HyperParameterRanges"):
        raise ValidationError(
            "ranges are given both in HyperParameterTuningJobConfig.ParameterRanges and in "
            "TrainingJobDefinition.HyperParameterRanges; give them in ParameterRanges only"
        )
    where = (
        "ParameterRanges" if config.get("ParameterRanges") else "TrainingJobDefinition.HyperParameterRanges"
    )
    ranges = _parse_ranges(
        config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {}, algo, static, where
    )
    if not ranges:
        raise ValidationError(
            "HyperParameterTuningJobConfig.ParameterRanges is empty: give at least one Integer, Continuous "
            "or Categorical range to tune"
        )

    limits = config["ResourceLimits"]
    max_jobs = limits.get("MaxNumberOfTrainingJobs")
    max_parallel = limits["MaxParallelTrainingJobs"]
    if strategy == "Grid":
        numeric = [r.name for r in ranges if not r.is_categorical]
        if numeric:
            raise ValidationError(
                f"the Grid strategy takes only categorical ranges, but {', '.join(map(repr, numeric))} "
                "have Integer/Continuous ranges: list their values as CategoricalParameterRanges or use "
                "another strategy"
            )
        points = math.prod(len(r.values) for r in ranges)
        if points > MAX_GRID_POINTS:
            raise ValidationError(
                f"the Grid has {points} combinations; SageMaker allows at most {MAX_GRID_POINTS}: drop values"
            )
        if max_jobs is not None and max_jobs != points:
            raise ValidationError(
                f"ResourceLimits.MaxNumberOfTrainingJobs is {max_jobs}, but the Grid has {points} combinations; "
                f"set it to {points} or leave it out (Grid runs every combination once)"
            )
        if max_jobs is None:
            max_parallel = min(max_parallel, points)  # nothing more could run at once
        max_jobs = points
    elif max_jobs is None:
        raise ValidationError(
            f"ResourceLimits.MaxNumberOfTrainingJobs is required for the {strategy} strategy (only Grid "
            "infers it): give the number of training jobs to run"
        )
    if max_parallel > max_jobs:
        raise ValidationError(
            f"ResourceLimits.MaxParallelTrainingJobs ({max_parallel}) is above MaxNumberOfTrainingJobs "
            f"({max_jobs}); lower it to {max_jobs} or less"
        )

    min_resource = max_resource = None
    if strategy == "Hyperband":
        if early_stopping != "Off":
            raise ValidationError(
                "TrainingJobEarlyStoppingType must be Off with the Hyperband strategy (Hyperband stops "
                "poor trials itself); set it to Off or use another strategy"
            )
        min_resource, max_resource = _hyperband(config, static)
    elif config.get("StrategyConfig"):
        raise ValidationError(
            f"HyperParameterTuningJobConfig.StrategyConfig is for the Hyperband strategy only; remove it "
            f"or set Strategy to Hyperband (it is {strategy})"
        )
    criteria = config.get("TuningJobCompletionCriteria")
    if criteria and "ConvergenceDetected" in criteria:
        _check_enum(
            criteria["ConvergenceDetected"].get("CompleteOnConvergence", "Disabled"),
            "CompleteOnConvergence",
            "TuningJobCompletionCriteria.ConvergenceDetected.CompleteOnConvergence",
        )

    warm_start = _warm_start(request, name)

    spec = TuningJobSpec(
        name=name,
        algorithm=algorithm_name,
        strategy=strategy,
        objective_metric=metric,
        objective_type=objective_type,
        max_jobs=max_jobs,
        max_parallel=max_parallel,
        early_stopping=early_stopping,
        ranges=ranges,
        static_hyperparameters=static,
        training_definition=definition,
        warm_start=warm_start,
        request=request,
        max_runtime_seconds=limits.get("MaxRuntimeInSeconds"),
        random_seed=config.get("RandomSeed"),
        hyperband_min_resource=min_resource,
        hyperband_max_resource=max_resource,
        completion_criteria=criteria,
        tags=tuple(request.get("Tags") or ()),
    )
    _resources(definition)  # fails now on a resource configuration trials could not use
    first = {r.name: r.first_value() for r in ranges}
    try:
        validate_training_job(trial_request(spec, 1, first), instance_types=instance_types)
    except ValidationError as e:
        values = ", ".join(f"{k}={v}" for k, v in first.items())
        raise ValidationError(
            "TrainingJobDefinition does not make a valid training job (checked as the first trial, "
            f"with {values}): {e.message}"
        ) from None
    if not script:
        _check_combinations(spec, algo)
    return spec


def _check_combinations(spec: TuningJobSpec, algo: type[Algorithm]) -> None:
    """Rules between hyperparameters (e.g. xgboost's eval_metric vs objective) at every Grid point, or
    at the ranges' lowest and highest corners for the other strategies."""
    if spec.strategy == "Grid":
        points = grid_points(spec)
    else:
        points = [
            {r.name: r.first_value() for r in spec.ranges},
            {r.name: r.last_value() for r in spec.ranges},
        ]
    for point in points:
        try:
            algo.validate_hyperparameters({**spec.static_hyperparameters, **point})
        except HyperparameterError as e:
            values = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ValidationError(
                f"the trial with {values} would fail: {e}; change the ranges or StaticHyperParameters"
            ) from None


# --- trials --------------------------------------------------------------------------------------


def grid_points(spec: TuningJobSpec) -> list[dict[str, str]]:
    """Every combination of the categorical ranges' values, in a stable order: ranges in the
    request's order, values in the order given, the last range varying fastest."""
    numeric = [r.name for r in spec.ranges if not r.is_categorical]
    if numeric:
        raise ValueError(f"grid_points needs categorical ranges only; {numeric} are not")
    names = [r.name for r in spec.ranges]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*(r.values for r in spec.ranges))
    ]


def trial_hash(hyperparameters: Mapping[str, str]) -> str:
    """Eight hex digits that identify a trial's tuned hyperparameter values."""
    text = json.dumps(dict(hyperparameters), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def trial_name(spec_or_name: TuningJobSpec | str, index: int, hyperparameters: Mapping[str, str]) -> str:
    """``<tuning job>-<NNN>-<hash8>``, at most 63 characters (the tuning job's name is shortened if
    it must be)."""
    base = spec_or_name.name if isinstance(spec_or_name, TuningJobSpec) else spec_or_name
    suffix = f"-{index:03d}-{trial_hash(hyperparameters)}"
    return base[: MAX_TRAINING_JOB_NAME - len(suffix)] + suffix


def _conform(value: Any, shape: Any) -> Any:
    """``value`` with the structure members ``shape`` does not have dropped, at every depth."""
    if shape.type_name == "structure" and isinstance(value, Mapping):
        return {k: _conform(v, shape.members[k]) for k, v in value.items() if k in shape.members}
    if shape.type_name == "list" and isinstance(value, list):
        return [_conform(v, shape.member) for v in value]
    return copy.deepcopy(value)


def trial_request(spec: TuningJobSpec, index: int, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The CreateTrainingJob request for trial ``index`` (1-based) with the tuned ``hyperparameters``
    (wire strings, or numbers that ``to_wire`` turns into them): the TrainingJobDefinition's members
    that CreateTrainingJob also has, HyperParameters = static + tuned + ``_tuning_objective_metric``,
    and the tuning job's Tags. ValueError if the values do not fit the ranges."""
    if index < 1:
        raise ValueError(f"trial index {index} must be 1 or more")
    by_name = {r.name: r for r in spec.ranges}
    unknown = sorted(set(hyperparameters) - set(by_name))
    missing = sorted(set(by_name) - set(hyperparameters))
    if unknown or missing:
        raise ValueError(
            f"trial hyperparameters must be exactly the tuned ones: unknown {unknown}, missing {missing}"
        )
    tuned: dict[str, str] = {}
    for hp_name, value in hyperparameters.items():
        r = by_name[hp_name]
        if isinstance(value, str):
            if not r.contains(value):
                raise ValueError(
                    f"trial value {value!r} for {hp_name!r} is outside its range {r.to_request()}"
                )
            value = value if r.is_categorical else float(value)
        tuned[hp_name] = r.to_wire(value)  # one spelling per value: "3.0" -> "3"

    target = input_shape("CreateTrainingJob")
    request: dict[str, Any] = {"TrainingJobName": trial_name(spec, index, tuned)}
    request["HyperParameters"] = {
        **spec.static_hyperparameters,
        **tuned,
        OBJECTIVE_HYPERPARAMETER: spec.objective_metric,
    }
    for key, value in _resources(spec.training_definition).items():
        if key in target.members and key not in request:
            request[key] = _conform(value, target.members[key])
    if spec.tags:
        request["Tags"] = [dict(t) for t in spec.tags]
    return request
