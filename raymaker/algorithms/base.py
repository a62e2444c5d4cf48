"""The contract every built-in algorithm follows (scikit-learn's ``base.py`` idea).

An algorithm declares, once and exactly as SageMaker names them: its hyperparameters (type, default,
valid range or choices, required), the channels and training content types it takes, whether it
trains distributed, resumes from checkpoints or continues an earlier model, its metric names, and the
small problems (``ConformanceCase``) the conformance suite trains it on. It implements ``train`` (runs
inside one instance of a training job, or in-process with a ``LocalContext``), ``load`` of the model directory that
becomes ``model.tar.gz``, and ``predict`` for hosting and batch transform.

``raymaker.testing.conformance`` (a layer above this one) runs every algorithm through the same checks.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from raymaker.io.batch import Batch

_REQUIRED = object()


class HyperparameterError(ValueError):
    """A hyperparameter is unknown, missing, of the wrong type or out of range."""


class FeatureCountError(ValueError):
    """Rows to score have a different number of features than the model was trained on (the
    request's fault: hosting answers 400)."""


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter as SageMaker documents it. Values arrive as strings (CreateTrainingJob's
    ``HyperParameters`` is a string map) and are parsed to ``kind``.

    kind: "int", "float", "bool", "str", or "list" (comma-separated or JSON list of strings);
    ``auto=True`` also accepts the string "auto" (SageMaker's "let the algorithm decide")."""

    name: str
    kind: str
    default: Any = _REQUIRED
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    auto: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def parse(self, raw: Any) -> Any:
        """The typed value of ``raw`` (a string or an already-typed value); HyperparameterError if invalid."""
        text = raw.strip() if isinstance(raw, str) else raw
        if self.auto and isinstance(text, str) and text.lower() == "auto":
            return "auto"
        try:
            value = _PARSERS[self.kind](text)
        except (TypeError, ValueError):
            expected = {"int": "an integer", "float": "a number", "bool": "true or false", "list": "a list"}
            raise HyperparameterError(
                f"hyperparameter {self.name!r}: {raw!r} is not {expected.get(self.kind, self.kind)}"
                + (" or 'auto'" if self.auto else "")
            ) from None
        if self.choices is not None and value not in self.choices:
            raise HyperparameterError(
                f"hyperparameter {self.name!r}: {raw!r} is not one of {', '.join(map(str, self.choices))}"
            )
        if self.kind in ("int", "float"):
            if isinstance(value, float) and not math.isfinite(value):
                raise HyperparameterError(f"hyperparameter {self.name!r}: {raw!r} is not a finite number")
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise HyperparameterError(
                    f"hyperparameter {self.name!r}: {raw!r} is outside the valid range {self.range_text()}"
                )
        return value

    def range_text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"[{lo}, {hi}]"


def _parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise ValueError(v)


def _parse_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, int):
        return v
    f = float(v)  # SageMaker's tuner sends integers as "3.0" at times
    if not f.is_integer():
        raise ValueError(v)
    return int(f)


def _parse_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    s = str(v).strip()
    if s.startswith("["):
        import json

        return [str(x) for x in json.loads(s)]
    return [p.strip() for p in s.split(",") if p.strip()]


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "int": _parse_int,
    "float": lambda v: float(v) if not isinstance(v, bool) else float("nan"),
    "bool": _parse_bool,
    "str": lambda v: str(v),
    "list": _parse_list,
}


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    required: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """A metric the algorithm reports, e.g. ``validation:auc``; ``maximize`` says which way is better."""

    name: str
    maximize: bool


@dataclass(frozen=True)
class ConformanceCase:
    """A small problem the conformance suite (``raymaker.testing.conformance``) trains an algorithm on;
    each algorithm declares its own in ``Algorithm.conformance_cases``, next to its hyperparameters.

    The suite draws ``features`` Gaussian columns (300 training rows, 100 held out) for ``problem``:
    "binary", "multiclass" (3 classes), "regression", or "clusters" (3 clusters, no labels); CSR rows
    with small values zeroed when ``sparse``. The held-out rows go to the ``validation`` channel, else
    to ``test``, whichever the algorithm declares."""

    hyperparameters: Mapping[str, str]  # as on the wire: strings
    problem: str
    sparse: bool = False
    features: int = 6
    # Inference request formats the hosting check sends; () means every one the algorithm serves.
    content_types: tuple[str, ...] = ()
    # Final metric -> bound on the held-out rows: a minimum for a metric that maximizes, else a maximum.
    quality: Mapping[str, float] = field(default_factory=dict)
    # What 2 workers on halves of the rows give, against 1 worker on all of them: "same" (the same
    # predictions, to rounding) or "equivalent" (both models meet ``quality``; e.g. mini-batch k-means
    # visits the rows in another order).
    distributed_result: str = "same"
    # The hyperparameter counting training steps (num_round, epochs): the incremental check trains n
    # steps, continues n more from the ``model`` channel, and expects the model of 2n steps.
    steps: str | None = None


class TrainContext(ABC):
    """What ``Algorithm.train`` may ask of where it runs: its place among the workers, a way to report
    metrics, checkpoints, and the GPUs it was given. ``LocalContext`` runs in-process; the engine
    provides one per instance.

    ``gpus``: the GPU ids assigned to this worker, as ``ray.get_gpu_ids()`` reports them inside it
    (empty: train on the CPU). ``devices.choose_devices`` turns them into torch / xgboost devices."""

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    gpus: tuple[int | str, ...] = ()

    @abstractmethod
    def report(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Record metric values (``train:loss``, ``validation:auc``, ...) at a step (epoch / round)."""

    @abstractmethod
    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        """Persist the files in ``state_dir`` as the checkpoint for ``step`` (rank 0's is kept)."""

    @abstractmethod
    def load_checkpoint(self) -> str | None:
        """A local directory holding the latest checkpoint, or None for a fresh start."""

    def log(self, message: str) -> None:
        print(message, flush=True)


class LocalContext(TrainContext):
    """Single-process training, no Ray: used by the conformance suite and for quick local runs."""

    def __init__(self, checkpoint_dir: str | None = None, seed: int = 0, gpus: Iterable[int | str] = ()):
        self.seed = seed
        self.gpus = tuple(gpus)
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.checkpoint_dir = checkpoint_dir
        self.checkpoints: list[int] = []

    def report(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.metrics.append((step, {k: float(v) for k, v in metrics.items()}))

    def save_checkpoint(self, state_dir: str, *, step: int) -> None:
        if self.checkpoint_dir is None:
            return
        import shutil

        dest = os.path.join(self.checkpoint_dir, "latest")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(state_dir, dest)
        self.checkpoints.append(step)

    def load_checkpoint(self) -> str | None:
        if self.checkpoint_dir is None:
            return None
        path = os.path.join(self.checkpoint_dir, "latest")
        return path if os.path.isdir(path) else None

    def final_metrics(self) -> dict[str, float]:
        """The last reported value of every metric (SageMaker's FinalMetricDataList)."""
        out: dict[str, float] = {}
        for _, values in self.metrics:
            out.update(values)
        return out


@dataclass
class TrainingData:
    """The channels of a training job as this worker sees them (its shard for ShardedByS3Key).

    Each channel is a callable returning a fresh iterator of Batches, so an algorithm can make several
    passes (epochs) over streamed data; ``load`` concatenates a channel into one Batch for algorithms
    that need it all in memory (XGBoost's DMatrix, PCA's covariance)."""

    channels: dict[str, Callable[[], Iterator[Batch]]] = field(default_factory=dict)

    @classmethod
    def from_batches(cls, **channels: Batch | None) -> TrainingData:
        return cls({name: (lambda b=b: iter([b])) for name, b in channels.items() if b is not None})

    def __contains__(self, name: str) -> bool:
        return name in self.channels

    def iter(self, name: str) -> Iterator[Batch]:
        return self.channels[name]()

    def load(self, name: str) -> Batch:
        batches = [b for b in self.iter(name) if len(b)]
        if not batches:
            raise ValueError(f"channel {name!r} has no data on this worker")
        return Batch.concat(batches)


class Algorithm(ABC):
    """One built-in algorithm. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]
    hyperparameters: ClassVar[tuple[Hyperparameter, ...]]
    channels: ClassVar[tuple[ChannelSpec, ...]]
    content_types: ClassVar[tuple[str, ...]]  # training content types
    default_content_type: ClassVar[str]
    inference_content_types: ClassVar[tuple[str, ...]] = (
        "text/csv",
        "application/json",
        "application/jsonlines",
    )
    # Hosting: the Accept used when a request names none (or */*), and the JSON envelope key
    # (``{"predictions": [...]}``; PCA answers ``{"projections": [...]}``).
    default_accept: ClassVar[str] = "application/json"
    response_envelope: ClassVar[str] = "predictions"
    metrics: ClassVar[tuple[MetricSpec, ...]]
    distributed: ClassVar[bool] = True  # trains on several instances at once
    incremental: ClassVar[bool] = False  # warm-starts from a ``model`` channel
    checkpointing: ClassVar[bool] = False  # saves checkpoints through ``ctx`` and resumes from the latest
    trainer: ClassVar[str] = (
        "data_parallel"  # which Ray trainer runs it: "xgboost" | "torch" | "data_parallel"
    )
    # The problems the conformance suite trains it on (at least one for a registered algorithm).
    conformance_cases: ClassVar[tuple[ConformanceCase, ...]] = ()

    # --- hyperparameters -----------------------------------------------------------------------

    @classmethod
    def hyperparameter(cls, name: str) -> Hyperparameter:
        for hp in cls.hyperparameters:
            if hp.name == name:
                return hp
        raise KeyError(name)

    @classmethod
    def validate_hyperparameters(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed hyperparameters with defaults filled in; HyperparameterError naming the first problem.

        Keys SageMaker itself adds (``_tuning_objective_metric``, ``sagemaker_*``) are not the
        algorithm's to check; ``_tuning_objective_metric`` is kept in the result."""
        known = {hp.name: hp for hp in cls.hyperparameters}
        unknown = sorted(k for k in raw if k not in known and not _reserved(k))
        if unknown:
            raise HyperparameterError(
                f"{cls.name} has no hyperparameter {', '.join(map(repr, unknown))}; "
                f"valid ones: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, hp in known.items():
            if name in raw:
                values[name] = hp.parse(raw[name])
            elif hp.required:
                raise HyperparameterError(f"{cls.name} needs hyperparameter {name!r} ({hp.doc or hp.kind})")
            else:
                values[name] = hp.default
        cls.check_hyperparameters(values)
        if "_tuning_objective_metric" in raw:
            # The tuner's objective travels on, so an algorithm can make sure it computes it.
            values["_tuning_objective_metric"] = str(raw["_tuning_objective_metric"])
        return values

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any]) -> None:
        """Rules that involve several hyperparameters (e.g. ``num_class`` for multiclass objectives)."""
        return None

    @classmethod
    def check_gpus(cls, hp: dict[str, Any], gpus: int) -> None:
        """Rules that involve the GPUs of one instance (``gpus``; 0 for a CPU instance type), e.g.
        XGBoost's ``tree_method=gpu_hist`` needs one: HyperparameterError. ``train`` applies them again
        to the GPUs its worker was given; a caller that knows the instance type can fail sooner."""
        return None

    @classmethod
    def metric(cls, name: str) -> MetricSpec:
        for m in cls.metrics:
            if m.name == name:
                return m
        raise KeyError(
            f"{cls.name} reports no metric {name!r}; it reports {', '.join(m.name for m in cls.metrics)}"
        )

    # --- the work --------------------------------------------------------------------------------

    @abstractmethod
    def train(
        self, hp: dict[str, Any], data: TrainingData, ctx: TrainContext, model_dir: str
    ) -> dict[str, float]:
        """Train on ``data`` and, on rank 0, write the model files into ``model_dir``. Returns the final
        metrics (also reported through ``ctx``). A ``model`` channel, when present and the algorithm is
        ``incremental``, holds an earlier model directory to start from."""

    @abstractmethod
    def load(self, model_dir: str) -> Any:
        """The model object from a directory ``train`` wrote (the extracted ``model.tar.gz``)."""

    @abstractmethod
    def predict(self, model: Any, batch: Batch) -> dict[str, np.ndarray]:
        """Per-row outputs named as SageMaker's responses name them (``score``, ``predicted_label``,
        ``closest_cluster``, ``projection``, ...), each an array with one entry (or row) per input row.
        Call ``self.check_features(model, batch)`` first."""

    def num_features(self, model: Any) -> int | None:
        """How many features ``model`` was trained on; None when it takes rows of any width."""
        return None

    def check_features(self, model: Any, batch: Batch) -> None:
        """FeatureCountError naming both counts unless ``batch``'s rows fit ``model``. Sparse rows may be
        narrower: libsvm and sparse JSON requests need not reach the last column."""
        trained = self.num_features(model)
        features = batch.features
        if trained is None or features.ndim != 2:
            return
        width = features.shape[1]
        if width == trained or (sp.issparse(features) and width < trained):
            return
        raise FeatureCountError(f"the model was trained on {trained} features; the request has {width}")


def _reserved(key: str) -> bool:
    return key.startswith("sagemaker_") or key == "_tuning_objective_metric"
