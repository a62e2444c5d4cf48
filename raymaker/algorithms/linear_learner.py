"""SageMaker's built-in Linear Learner on PyTorch.

Like SageMaker's, it trains several linear models side by side (``num_models``: a grid over the
learning rates / weight decays left on "auto"), streaming mini-batches from the ``train`` channel every
epoch, and keeps the best one by ``binary_classifier_model_selection_criteria`` (binary) or the
objective loss, measured on ``validation`` when given. Binary classifiers get a calibrated threshold
(the one that maximises the criterion). Features are standardised from a first pass over up to
``num_point_for_scaler`` rows (for sparse rows the centring is an output shift, so they stay sparse),
regression labels too.

Under the engine it runs in each instance of an instance group: gradients are summed over workers with
``torch.distributed`` (gloo) every step, so the result equals one big mini-batch; evaluation outputs are
gathered so every worker takes the same decisions. With a LocalContext it is one process.

On a worker with a GPU (``TrainContext.gpus``) the models, the optimizer and every mini-batch live on
that GPU; models start from the same CPU-drawn weights as on the CPU, the statistics pass and the
evaluation metrics run on the CPU, and snapshots, checkpoints and the model file hold CPU tensors, so
a job resumes on either kind of instance.

Metrics: ``train:objective_loss`` is the epoch's mean training loss (for regressors in normalised label
units); ``validation:*`` are the best model's each epoch (epochs count from 0); ``test:*`` are the saved
model's, reported once at the end.

Model file: ``model.npz`` (NumPy, no pickle) holding ``weight`` (feature_dim x outputs) and ``bias``
in the raw feature space (the standardisation is folded in) and ``meta`` (JSON: predictor_type,
num_classes, threshold, feature_dim, loss). Checkpoints: ``state.pt`` (torch, tensors only).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from raymaker.algorithms import _streaming as st
from raymaker.algorithms import devices as dv
from raymaker.algorithms import linear_learner_metrics as llm
from raymaker.algorithms._lazy import LazyModule
from raymaker.algorithms.base import (
    Algorithm,
    ChannelSpec,
    ConformanceCase,
    Hyperparameter,
    HyperparameterError,
    MetricSpec,
    TrainContext,
    TrainingData,
)
from raymaker.io.batch import Batch

torch = LazyModule("torch")

MODEL_FILE = "model.npz"
_STATE_FILE = "state.pt"

_LOSSES = {
    "binary_classifier": ("logistic", "hinge_loss"),
    "multiclass_classifier": ("softmax_loss",),
    "regressor": (
        "squared_loss",
        "absolute_loss",
        "eps_insensitive_squared_loss",
        "eps_insensitive_absolute_loss",
        "quantile_loss",
        "huber_loss",
    ),
}
_AUTO_LOSS = {
    "binary_classifier": "logistic",
    "multiclass_classifier": "softmax_loss",
    "regressor": "squared_loss",
}
# "auto" grids: learning rates per optimizer family and weight decays (one model per combination)
_AUTO_LR = {
    "sgd": (0.3, 0.1, 0.03, 0.01),
    "adam": (0.1, 0.03, 0.01, 0.003),
    "rmsprop": (0.03, 0.01, 0.003, 0.001),
}
_AUTO_WD = (0.0, 1e-4)

_MAX = ("binary_classification_accuracy", "binary_f_beta", "precision", "recall", "roc_auc_score")
_MAX += ("multiclass_accuracy", "multiclass_top_k_accuracy", "macro_f_beta", "macro_precision")
_MAX += ("macro_recall", "dcg")
_MIN = ("objective_loss", "mse", "rmse", "absolute_loss")


def _hp(name: str, kind: str, default: Any = None, **kw: Any) -> Hyperparameter:
    return Hyperparameter(name, kind, default, **kw)


_HYPERPARAMETERS = (
    Hyperparameter(
        "predictor_type",
        "str",
        choices=tuple(_LOSSES),
        doc="binary_classifier, multiclass_classifier or regressor",
    ),
    _hp("num_classes", "int", low=3, high=1_000_000, doc="required for multiclass_classifier"),
    _hp("feature_dim", "int", "auto", low=1, auto=True),
    _hp("epochs", "int", 15, low=1),
    _hp("mini_batch_size", "int", 1000, low=1),
    _hp("learning_rate", "float", "auto", low=0, auto=True),
    _hp("optimizer", "str", "auto", choices=("auto", "sgd", "adam", "rmsprop")),
    _hp("momentum", "float", "auto", low=0, high=1, auto=True),
    _hp("loss", "str", "auto", choices=("auto", *sorted({x for v in _LOSSES.values() for x in v}))),
    _hp("wd", "float", "auto", low=0, auto=True),
    _hp("l1", "float", "auto", low=0, auto=True),
    _hp("bias_lr_mult", "float", "auto", low=0, auto=True),
    _hp("bias_wd_mult", "float", "auto", low=0, auto=True),
    _hp("use_bias", "bool", True),
    _hp("normalize_data", "bool", True),
    _hp("normalize_label", "bool", "auto", auto=True),
    _hp("unbias_data", "bool", "auto", auto=True),
    _hp("unbias_label", "bool", "auto", auto=True),
    _hp("num_point_for_scaler", "int", 10000, low=1),
    _hp("num_models", "int", "auto", low=1, auto=True),
    _hp("num_calibration_samples", "int", 10_000_000, low=1),
    _hp("init_method", "str", "uniform", choices=("uniform", "normal")),
    _hp("init_scale", "float", 0.07, low=0),
    _hp("init_sigma", "float", 0.01, low=0),
    _hp("init_bias", "float", 0.0),
    _hp("use_lr_scheduler", "bool", True),
    _hp("lr_scheduler_step", "int", "auto", low=1, auto=True),
    _hp("lr_scheduler_factor", "float", "auto", low=0, high=1, auto=True),
    _hp("lr_scheduler_minimum_lr", "float", "auto", low=0, auto=True),
    _hp("early_stopping_patience", "int", 3, low=1),
    _hp("early_stopping_tolerance", "float", 0.001, low=0),
    _hp("positive_example_weight_mult", "str", "1.0", doc="a number > 0, 'auto' or 'balanced'"),
    _hp("balance_multiclass_weights", "bool", False),
    _hp(
        "binary_classifier_model_selection_criteria",
        "str",
        "accuracy",
        choices=llm.BINARY_CRITERIA,
    ),
    _hp("beta", "float", 1.0, low=0),
    _hp("target_recall", "float", 0.8, low=0, high=1),
    _hp("target_precision", "float", 0.8, low=0, high=1),
    _hp("accuracy_top_k", "int", 3, low=1),
    _hp("margin", "float", 1.0, low=0),
    _hp("quantile", "float", 0.5, low=0, high=1),
    _hp("loss_insensitivity", "float", 0.01, low=0),
    _hp("huber_delta", "float", 1.0, low=0),
)


class LinearLearner(Algorithm):
    name = "linear-learner"
    hyperparameters = _HYPERPARAMETERS
    channels = (ChannelSpec("train", required=True), ChannelSpec("validation"), ChannelSpec("test"))
    content_types = ("application/x-recordio-protobuf", "text/csv")
    default_content_type = "application/x-recordio-protobuf"
    metrics = (
        MetricSpec("train:objective_loss", False),
        *(MetricSpec(f"{ch}:{m}", True) for ch in ("validation", "test") for m in _MAX),
        *(MetricSpec(f"{ch}:{m}", False) for ch in ("validation", "test") for m in _MIN),
    )
    distributed = True
    checkpointing = True
    trainer = "torch"
    # Two workers sum their gradients: one step sees both workers' mini-batches, a different sequence
    # of steps than one worker's, so distributed training is equivalent, not the same.
    conformance_cases = (
        ConformanceCase(
            {"predictor_type": "binary_classifier", "epochs": "3", "mini_batch_size": "64"},
            "binary",
            quality={"validation:binary_classification_accuracy": 0.85},
            distributed_result="equivalent",
        ),
        ConformanceCase(
            {"predictor_type": "regressor", "epochs": "3", "mini_batch_size": "64"},
            "regression",
            sparse=True,
            quality={"validation:rmse": 0.9},
            distributed_result="equivalent",
        ),
        ConformanceCase(
            {
                "predictor_type": "multiclass_classifier",
                "num_classes": "3",
                "epochs": "3",
                "mini_batch_size": "64",
            },
            "multiclass",
            quality={"validation:multiclass_accuracy": 0.7},
            distributed_result="equivalent",
        ),
    )

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any]) -> None:
        kind = hp["predictor_type"]
        if kind == "multiclass_classifier" and hp["num_classes"] is None:
            raise HyperparameterError(
                "predictor_type 'multiclass_classifier' needs hyperparameter 'num_classes' (3 to 1000000)"
            )
        if hp["loss"] != "auto" and hp["loss"] not in _LOSSES[kind]:
            raise HyperparameterError(
                f"loss {hp['loss']!r} does not fit predictor_type {kind!r}; use auto or one of "
                f"{', '.join(_LOSSES[kind])}"
            )
        if not 0 < hp["quantile"] < 1:
            raise HyperparameterError(f"hyperparameter 'quantile': {hp['quantile']} must be in (0, 1)")
        for name in ("target_recall", "target_precision"):
            if hp[name] == 0:
                raise HyperparameterError(f"hyperparameter {name!r}: must be in (0, 1], not 0")
        if hp["beta"] <= 0:
            raise HyperparameterError("hyperparameter 'beta': must be greater than 0")
        if hp["momentum"] != "auto" and hp["momentum"] >= 1:
            raise HyperparameterError("hyperparameter 'momentum': must be in [0, 1)")
        factor = hp["lr_scheduler_factor"]
        if factor != "auto" and factor <= 0:
            raise HyperparameterError("hyperparameter 'lr_scheduler_factor': must be in (0, 1]")
        weight = str(hp["positive_example_weight_mult"]).strip().lower()
        if weight not in ("auto", "balanced"):
            try:
                value = float(weight)
            except ValueError:
                value = -1.0
            if not (math.isfinite(value) and value > 0):
                raise HyperparameterError(
                    f"hyperparameter 'positive_example_weight_mult': {hp['positive_example_weight_mult']!r} "
                    "is not a number > 0, 'auto' or 'balanced'"
                )

    # --- training ----------------------------------------------------------------------------

    def train(
        self, hp: dict[str, Any], data: TrainingData, ctx: TrainContext, model_dir: str
    ) -> dict[str, float]:
        devices = dv.context_devices(ctx)
        device = dv.torch_device(devices)
        dv.log_devices(ctx, "linear-learner", devices)
        torch.manual_seed(ctx.seed)
        state = _load_state(ctx.load_checkpoint())
        setup = _Setup.from_hp(hp, data, state)
        trainer = _Trainer(setup, hp, ctx, data, state, device)
        final = trainer.fit()
        if ctx.rank == 0:
            os.makedirs(model_dir, exist_ok=True)
            _save_model(os.path.join(model_dir, MODEL_FILE), trainer.final_model(), setup)
        return final

    # --- hosting -----------------------------------------------------------------------------

    def load(self, model_dir: str) -> Any:
        path = os.path.join(model_dir, MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {MODEL_FILE!r} in model directory {model_dir}")
        with np.load(path, allow_pickle=False) as f:
            return {"weight": f["weight"], "bias": f["bias"], **json.loads(str(f["meta"]))}

    def num_features(self, model: Any) -> int:
        return int(model["feature_dim"])

    def predict(self, model: Any, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(model, batch)
        features = _fit_width(batch.features, model["feature_dim"], "request")
        z = np.asarray(features @ model["weight"], dtype=np.float64) + model["bias"]
        kind = model["predictor_type"]
        if kind == "binary_classifier":
            score = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return {"score": score, "predicted_label": (score > model["threshold"]).astype(np.int64)}
        if kind == "multiclass_classifier":
            z -= z.max(axis=1, keepdims=True)
            probs = np.exp(z)
            probs /= probs.sum(axis=1, keepdims=True)
            return {"score": probs, "predicted_label": probs.argmax(axis=1).astype(np.int64)}
        return {"score": z[:, 0]}


# --- set-up: resolved hyperparameters, data statistics ---------------------------------------------


@dataclass
class _Scaler:
    """x' = (x - mean) * scale per feature; y' = (y - label_mean) / label_std for regression."""

    mean: np.ndarray
    scale: np.ndarray
    label_mean: float = 0.0
    label_std: float = 1.0


@dataclass
class _Setup:
    kind: str
    loss: str
    outputs: int
    feature_dim: int
    scaler: _Scaler
    configs: list[tuple[float, float, float]]  # (learning rate, wd, l1) per model
    optimizer: str
    class_weights: np.ndarray | None = None  # per class (softmax / logistic); None = all 1

    @classmethod
    def from_hp(cls, hp: dict[str, Any], data: TrainingData, state: dict | None) -> _Setup:
        kind = hp["predictor_type"]
        loss = _AUTO_LOSS[kind] if hp["loss"] == "auto" else hp["loss"]
        outputs = hp["num_classes"] if kind == "multiclass_classifier" else 1
        optimizer = "adam" if hp["optimizer"] == "auto" else hp["optimizer"]
        if state is not None:  # resuming: the statistics of the first attempt, not a new sample
            scaler = _Scaler(
                state["mean"].numpy(), state["scale"].numpy(), state["label_mean"], state["label_std"]
            )
            dim, weights = int(state["feature_dim"]), state["class_weights"]
            weights = None if weights.numel() == 0 else weights.numpy()
        else:
            dim, scaler, weights = _statistics(hp, data, kind, outputs)
        lrs = _AUTO_LR[optimizer] if hp["learning_rate"] == "auto" else (hp["learning_rate"],)
        wds = _AUTO_WD if hp["wd"] == "auto" else (hp["wd"],)
        l1s = (0.0,) if hp["l1"] == "auto" else (hp["l1"],)
        grid = list(itertools.product(lrs, wds, l1s))
        count = len(grid) if hp["num_models"] == "auto" else hp["num_models"]
        configs = [grid[i % len(grid)] for i in range(count)]  # repeats differ by their random start
        return cls(kind, loss, outputs, dim, scaler, configs, optimizer, weights)


def _statistics(
    hp: dict[str, Any], data: TrainingData, kind: str, outputs: int
) -> tuple[int, _Scaler, np.ndarray | None]:
    """Feature dimension, scaler and class weights from a first pass over up to num_point_for_scaler
    rows (the whole channel when sparse rows must be read to learn feature_dim)."""
    limit = hp["num_point_for_scaler"]
    dim_hp = hp["feature_dim"]
    width, rows, sparse = 0, 0, False
    sums: np.ndarray | None = None
    label_stats = np.zeros(3)  # n, sum, sum of squares
    classes = np.zeros(max(outputs, 2))
    for batch in data.iter("train"):
        if not len(batch):
            continue
        sparse = sparse or sp.issparse(batch.features)
        width = max(width, batch.features.shape[1])
        if rows >= limit:
            if not sparse or dim_hp != "auto":
                break
            continue  # only the width is still needed
        take = (
            batch
            if rows + len(batch) <= limit
            else Batch(batch.features[: limit - rows], _labels(batch)[: limit - rows])
        )
        x = take.features
        y = _labels(take).astype(np.float64)
        xs = (
            np.vstack([np.asarray(x.sum(0)).ravel(), np.asarray(x.multiply(x).sum(0)).ravel()])
            if sp.issparse(x)
            else np.vstack([x.sum(0), (x.astype(np.float64) ** 2).sum(0)])
        )
        if sums is None or sums.shape[1] < xs.shape[1]:
            grown = np.zeros((2, xs.shape[1]))
            if sums is not None:
                grown[:, : sums.shape[1]] = sums
            sums = grown
        sums[:, : xs.shape[1]] += xs
        label_stats += [y.size, y.sum(), (y**2).sum()]
        if kind != "regressor":
            _check_labels(y, kind, outputs)
            classes += np.bincount(y.astype(np.int64), minlength=classes.size)[: classes.size]
        rows += len(take)
    if rows == 0 and not _distributed():
        raise ValueError("channel 'train' has no data")
    # workers agree on one set of statistics
    width = int(_allreduce(torch.tensor([float(width)]), op="max").item())
    dim = width if dim_hp == "auto" else dim_hp
    if width > dim:
        raise ValueError(f"the train data has {width} features but feature_dim is {dim}; raise feature_dim")
    padded = np.zeros((2, dim))
    if sums is not None:
        padded[:, : sums.shape[1]] = sums
    totals = _allreduce(torch.from_numpy(np.concatenate([padded.ravel(), label_stats, classes]))).numpy()
    padded, label_stats, classes = (
        totals[: 2 * dim].reshape(2, dim),
        totals[2 * dim : 2 * dim + 3],
        totals[2 * dim + 3 :],
    )
    n = max(label_stats[0], 1.0)
    mean = padded[0] / n
    std = np.sqrt(np.maximum(padded[1] / n - mean**2, 0.0))
    # constant features keep scale 1
    scale = 1.0 / np.where(std > 1e-12, std, 1.0) if hp["normalize_data"] else np.ones(dim)
    unbias = hp["normalize_data"] if hp["unbias_data"] == "auto" else hp["unbias_data"]
    center = mean if unbias else np.zeros(dim)
    scaler = _Scaler(center.astype(np.float32), scale.astype(np.float32))
    if kind == "regressor":
        normalize = True if hp["normalize_label"] == "auto" else hp["normalize_label"]
        unbias_label = normalize if hp["unbias_label"] == "auto" else hp["unbias_label"]
        y_mean = label_stats[1] / n
        y_std = math.sqrt(max(label_stats[2] / n - y_mean**2, 0.0))
        scaler.label_mean = float(y_mean) if unbias_label else 0.0
        scaler.label_std = float(y_std) if normalize and y_std > 1e-12 else 1.0
    return dim, scaler, _class_weights(hp, kind, classes)


def _class_weights(hp: dict[str, Any], kind: str, classes: np.ndarray) -> np.ndarray | None:
    if kind == "binary_classifier":
        mult = str(hp["positive_example_weight_mult"]).strip().lower()
        if mult == "auto":
            return None  # one weight for both classes
        if mult == "balanced":  # positives weigh as much, in total, as negatives
            return np.array([1.0, classes[0] / classes[1] if classes[0] and classes[1] else 1.0])
        return np.array([1.0, float(mult)])
    if kind == "multiclass_classifier" and hp["balance_multiclass_weights"]:
        counts = np.maximum(classes, 1.0)
        return classes.sum() / (len(classes) * counts)
    return None


def _labels(batch: Batch) -> np.ndarray:
    if batch.labels is None:
        raise ValueError("Linear Learner trains on labelled rows: the data has no label column")
    return np.asarray(batch.labels)


def _check_labels(y: np.ndarray, kind: str, outputs: int) -> None:
    if kind == "binary_classifier" and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("binary_classifier labels must be 0 or 1")
    if kind == "multiclass_classifier" and (
        (y < 0).any() or (y >= outputs).any() or (y != np.round(y)).any()
    ):
        raise ValueError(f"multiclass_classifier labels must be integers 0 .. num_classes-1 ({outputs - 1})")


def _fit_width(features: np.ndarray | sp.csr_matrix, dim: int, what: str) -> np.ndarray | sp.csr_matrix:
    """Rows as wide as the model: sparse rows may name fewer columns; more is an error."""
    width = features.shape[1]
    if width == dim:
        return features
    if sp.issparse(features) and width < dim:
        return sp.csr_matrix(features, shape=(features.shape[0], dim))
    raise ValueError(f"the {what} has {width} features; the model was trained on {dim} (feature_dim)")


# --- distributed helpers --------------------------------------------------------------------------


def _distributed() -> bool:
    return st.world()[1] > 1


def _allreduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A sum (or maximum) over workers, on ``t``'s device whatever device the backend needs."""
    return st.all_reduce_tensor(t, op)


def _gather(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Every worker's arrays, concatenated in rank order (identical on all workers)."""
    if not _distributed():
        return arrays
    parts = st.all_gather_object(arrays)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))


# --- the model: M linear models side by side ------------------------------------------------------


def _to_torch(
    features: np.ndarray | sp.csr_matrix, scaler: _Scaler, dim: int, device: Any = "cpu"
) -> torch.Tensor:
    """Scaled rows, x * scale, on ``device``; the centring (- mean * scale) is applied by
    ``_Models.forward`` as a shift of the outputs, so sparse rows stay sparse."""
    features = _fit_width(features, dim, "data")
    if sp.issparse(features):
        csr = features.tocsr().astype(np.float32)
        values = csr.data * scaler.scale[csr.indices]
        coo = sp.csr_matrix((values, csr.indices, csr.indptr), shape=csr.shape).tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        return torch.sparse_coo_tensor(
            indices, torch.from_numpy(coo.data), coo.shape, check_invariants=False
        ).to(device)
    x = np.asarray(features, dtype=np.float32) * scaler.scale
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


class _Models:
    def __init__(self, setup: _Setup, hp: dict[str, Any], device: Any = "cpu"):
        d, o = setup.feature_dim, setup.outputs
        self.shift = torch.from_numpy(setup.scaler.mean * setup.scaler.scale).float().to(device)
        self.weights, self.biases = [], []
        for _ in setup.configs:
            w = torch.empty(d, o)  # drawn on the CPU: the same start on every device
            if hp["init_method"] == "uniform":
                w.uniform_(-hp["init_scale"], hp["init_scale"])
            else:
                w.normal_(0.0, hp["init_sigma"])
            self.weights.append(w.to(device).requires_grad_())
            bias = float(hp["init_bias"]) if hp["use_bias"] else 0.0
            self.biases.append(torch.full((o,), bias, device=device, requires_grad=hp["use_bias"]))
        self.outputs = o

    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *(b for b in self.biases if b.requires_grad)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (rows, models, outputs) in the normalised label space, for rows from _to_torch:
        ((x - mean) * scale) @ w  ==  (x * scale) @ w  -  (mean * scale) @ w."""
        w = torch.cat(self.weights, dim=1)
        z = torch.sparse.mm(x, w) if x.is_sparse else x @ w
        z = z + (torch.cat(self.biases) - self.shift @ w)
        return z.view(z.shape[0], len(self.weights), self.outputs)


def _loss(z: torch.Tensor, y: torch.Tensor, loss: str, p: dict[str, float]) -> torch.Tensor:
    """Per-row, per-model loss (rows, models). ``p``: margin, quantile, eps, delta in label units."""
    if loss == "softmax_loss":
        logp = torch.log_softmax(z, dim=2)
        return -logp.gather(2, y.long().view(-1, 1, 1).expand(-1, z.shape[1], 1)).squeeze(2)
    s, t = z[..., 0], y.view(-1, 1)
    if loss == "logistic":
        return torch.nn.functional.softplus(s) - t * s
    if loss == "hinge_loss":
        return torch.clamp(p["margin"] - (2 * t - 1) * s, min=0)
    r = t - s
    if loss == "squared_loss":
        return r * r
    if loss == "absolute_loss":
        return r.abs()
    if loss == "eps_insensitive_squared_loss":
        return torch.clamp(r.abs() - p["eps"], min=0) ** 2
    if loss == "eps_insensitive_absolute_loss":
        return torch.clamp(r.abs() - p["eps"], min=0)
    if loss == "quantile_loss":
        return torch.maximum(p["quantile"] * r, (p["quantile"] - 1) * r)
    if loss == "huber_loss":
        a, d = r.abs(), p["delta"]
        return torch.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))
    raise ValueError(f"unknown loss {loss!r}")


def _minibatches(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Re-cut decoded batches into mini-batches of ``size`` rows (the last may be shorter)."""
    buffer: list[Batch] = []
    held = 0
    for batch in batches:
        start = 0
        while start < len(batch):
            take = min(size - held, len(batch) - start)
            buffer.append(Batch(batch.features[start : start + take], _labels(batch)[start : start + take]))
            held += take
            start += take
            if held == size:
                yield Batch.concat(buffer)
                buffer, held = [], 0
    if buffer:
        yield Batch.concat(buffer)


# --- the training loop ---------------------------------------------------------------------------


@dataclass
class _Eval:
    """One channel's evaluation of every model: selection scores and per-model metrics."""

    metrics: list[dict[str, float]]
    scores: list[float]  # selection value per model (higher is better)
    thresholds: list[float]
    losses: list[float]  # objective loss per model

    def key(self, m: int) -> tuple[float, float]:
        """Model m's rank: its selection criterion, ties broken by the lower objective loss."""
        return (self.scores[m], -self.losses[m])

    def best(self) -> int:
        return max(range(len(self.scores)), key=self.key)


class _Trainer:
    def __init__(
        self,
        setup: _Setup,
        hp: dict[str, Any],
        ctx: TrainContext,
        data: TrainingData,
        state: dict | None,
        device: Any = "cpu",
    ):
        self.setup, self.hp, self.ctx, self.data = setup, hp, ctx, data
        self.device = torch.device(device)
        self.models = _Models(setup, hp, self.device)
        self.optimizer = self._optimizer()
        self.start_epoch, self.steps, self.stale = 0, 0, 0
        self.best_key = (-math.inf, -math.inf)  # (selection criterion, -objective loss) of self.best
        self.best_loss = math.inf  # the lowest objective loss so far, for early stopping
        self.best: dict[str, Any] | None = None  # the best model so far: weight, bias, threshold, metrics
        y_std = setup.scaler.label_std
        # loss parameters in the normalised label space (training) and in label units (evaluation)
        base = {"margin": hp["margin"], "quantile": hp["quantile"], "eps": hp["loss_insensitivity"]}
        base["delta"] = hp["huber_delta"]
        self.train_params = {**base, "eps": base["eps"] / y_std, "delta": base["delta"] / y_std}
        self.eval_params = base
        if state is not None:
            self._restore(state)

    # set-up ----------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        hp, groups = self.hp, []
        bias_lr = 1.0 if hp["bias_lr_mult"] == "auto" else hp["bias_lr_mult"]
        for (lr, _, _), w, b in zip(self.setup.configs, self.models.weights, self.models.biases, strict=True):
            groups.append({"params": [w], "lr": lr, "base_lr": lr})
            if b.requires_grad:
                groups.append({"params": [b], "lr": lr * bias_lr, "base_lr": lr * bias_lr})
        if self.setup.optimizer == "sgd":
            momentum = 0.0 if hp["momentum"] == "auto" else hp["momentum"]
            return torch.optim.SGD(groups, lr=0.1, momentum=momentum)
        if self.setup.optimizer == "rmsprop":
            return torch.optim.RMSprop(groups, lr=0.01)
        return torch.optim.Adam(groups, lr=0.001)

    def _restore(self, state: dict) -> None:
        with torch.no_grad():
            for w, saved in zip(self.models.weights, state["weights"], strict=True):
                w.copy_(saved)
            for b, saved in zip(self.models.biases, state["biases"], strict=True):
                b.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"]) + 1
        self.steps, self.stale = int(state["steps"]), int(state["stale"])
        self.best_key = (float(state["best_key"][0]), float(state["best_key"][1]))
        self.best_loss = float(state["best_loss"])
        self.best = state["best"] or None
        self.ctx.log(f"linear-learner: resuming after epoch {int(state['epoch'])} from checkpoint")

    # epochs ----------------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        hp, final = self.hp, {}
        has_validation = "validation" in self.data
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, hp["epochs"]):
            train_loss = self._train_epoch()
            if has_validation:
                ev = self._evaluate("validation")
                m = ev.best()
                values = {"train:objective_loss": float(train_loss[m])}
                values.update({f"validation:{k}": v for k, v in ev.metrics[m].items()})
                if ev.key(m) > self.best_key:
                    self.best, self.best_key = self._snapshot(m, ev.thresholds[m], epoch), ev.key(m)
                loss = min(ev.losses)
            else:
                m = int(np.argmin(train_loss))
                values = {"train:objective_loss": float(train_loss[m])}
                loss = float(train_loss[m])
            self.ctx.report(values, step=epoch)
            final.update(values)
            stop = self._early_stop(loss)
            self._checkpoint(epoch)
            if stop:
                self.ctx.log(f"linear-learner: early stopping after epoch {epoch}")
                break
        if not has_validation:  # choose among the final models on the training data itself
            ev = self._evaluate("train")
            m = ev.best()
            self.best = self._snapshot(m, ev.thresholds[m], epoch)
        if self.best is None:  # resumed after the last epoch with nothing new to compare
            self.best = self._snapshot(0, 0.5, epoch)
        if "test" in self.data:
            values = {f"test:{k}": v for k, v in self._evaluate("test", final=True).metrics[0].items()}
            self.ctx.report(values, step=max(epoch, 0))
            final.update(values)
        return final

    def _train_epoch(self) -> np.ndarray:
        """One pass over ``train``; the mean training loss of every model (normalised label units)."""
        setup, hp, params = self.setup, self.hp, self.models.params()
        n_models = len(setup.configs)
        device = self.device
        weights = (
            None if setup.class_weights is None else torch.from_numpy(setup.class_weights).float().to(device)
        )
        batches = _minibatches(self.data.iter("train"), hp["mini_batch_size"])
        totals = torch.zeros(n_models + 1, dtype=torch.float64, device=device)  # loss sums per model, rows
        while True:
            batch = next(batches, None)
            self.optimizer.zero_grad(set_to_none=False)
            local = torch.zeros(n_models + 1, dtype=torch.float64, device=device)
            if batch is not None:
                y = torch.from_numpy(self._normalised_labels(_labels(batch))).float().to(device)
                z = self.models.forward(_to_torch(batch.features, setup.scaler, setup.feature_dim, device))
                per_row = _loss(z, y, setup.loss, self.train_params)
                if weights is not None:
                    per_row = per_row * weights[y.long()].view(-1, 1)
                per_row.sum().backward()  # models are independent: one backward for all
                local[:n_models] = per_row.detach().sum(0).double()
                local[n_models] = len(batch)
            # one all-reduce per step: gradients, then loss sums and row count
            flat = torch.cat([p.grad.reshape(-1).double() for p in params] + [local])
            flat = _allreduce(flat)
            rows = flat[-1].item()
            if rows == 0:
                break  # every worker has run out of data
            offset = 0
            for p in params:
                p.grad.copy_((flat[offset : offset + p.numel()] / rows).view_as(p.grad))
                offset += p.numel()
            totals += flat[offset:]
            self._regularise()
            self.optimizer.step()
            self._schedule()
        return (totals[:n_models] / max(totals[n_models].item(), 1.0)).cpu().numpy()

    def _normalised_labels(self, y: np.ndarray) -> np.ndarray:
        if self.setup.kind != "regressor":
            return y.astype(np.float32)
        s = self.setup.scaler
        return ((y - s.label_mean) / s.label_std).astype(np.float32)

    def _regularise(self) -> None:
        bias_wd = 0.0 if self.hp["bias_wd_mult"] == "auto" else self.hp["bias_wd_mult"]
        with torch.no_grad():
            for (_, wd, l1), w, b in zip(
                self.setup.configs, self.models.weights, self.models.biases, strict=True
            ):
                if wd:
                    w.grad.add_(w, alpha=wd)
                    if b.requires_grad and bias_wd:
                        b.grad.add_(b, alpha=wd * bias_wd)
                if l1:
                    w.grad.add_(torch.sign(w), alpha=l1)

    def _schedule(self) -> None:
        """SageMaker's step decay: every lr_scheduler_step updates, lr *= factor, down to a floor."""
        self.steps += 1
        hp = self.hp
        if not hp["use_lr_scheduler"]:
            return
        step = 100 if hp["lr_scheduler_step"] == "auto" else hp["lr_scheduler_step"]
        if self.steps % step:
            return
        factor = 0.99 if hp["lr_scheduler_factor"] == "auto" else hp["lr_scheduler_factor"]
        floor = 1e-5 if hp["lr_scheduler_minimum_lr"] == "auto" else hp["lr_scheduler_minimum_lr"]
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, min(floor, group["base_lr"]))

    def _early_stop(self, loss: float) -> bool:
        """Stop after early_stopping_patience epochs in which the objective loss (validation, else
        training) did not improve on the best so far by early_stopping_tolerance, relatively. The loss
        rather than an accuracy-like criterion: on small validation sets those plateau at once."""
        improved = loss < self.best_loss - self.hp["early_stopping_tolerance"] * abs(self.best_loss)
        self.stale = 0 if improved or not math.isfinite(self.best_loss) else self.stale + 1
        self.best_loss = min(self.best_loss, loss)
        return self.stale >= self.hp["early_stopping_patience"]

    # evaluation ------------------------------------------------------------------------------

    def _outputs(self, channel: str, model: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """(outputs (rows, models, outputs) in label units, labels) of every worker's rows."""
        setup, chunks, labels = self.setup, [], []
        with torch.no_grad():
            for batch in _minibatches(self.data.iter(channel), max(self.hp["mini_batch_size"], 1024)):
                if model is None:
                    z = (
                        self.models.forward(
                            _to_torch(batch.features, setup.scaler, setup.feature_dim, self.device)
                        )
                        .cpu()
                        .numpy()
                    )
                    z = (
                        z * setup.scaler.label_std + setup.scaler.label_mean
                        if setup.kind == "regressor"
                        else z
                    )
                else:  # the final model, in raw feature space like predict()
                    feats = _fit_width(batch.features, setup.feature_dim, channel)
                    z = (np.asarray(feats @ model["weight"]) + model["bias"])[:, None, :]
                chunks.append(z.astype(np.float32))
                labels.append(_labels(batch).astype(np.float64))
        empty = (
            np.zeros((0, len(setup.configs) if model is None else 1, setup.outputs), np.float32),
            np.zeros(0),
        )
        out = (np.concatenate(chunks), np.concatenate(labels)) if chunks else empty
        return _gather(out)

    def _evaluate(self, channel: str, final: bool = False) -> _Eval:
        hp, setup = self.hp, self.setup
        z, y = self._outputs(channel, self.final_model() if final else None)
        if y.size == 0:
            raise ValueError(f"channel {channel!r} has no data")
        if setup.kind != "regressor":
            _check_labels(y, setup.kind, setup.outputs)
        losses = _loss(torch.from_numpy(z).double(), torch.from_numpy(y), setup.loss, self.eval_params).mean(
            0
        )
        criterion = hp["binary_classifier_model_selection_criteria"]
        metrics, scores, thresholds = [], [], []
        for m in range(z.shape[1]):
            values = {"objective_loss": float(losses[m])}
            threshold, selection = 0.5, -float(losses[m])
            if setup.kind == "binary_classifier":
                prob = 1.0 / (1.0 + np.exp(-z[:, m, 0].astype(np.float64)))
                if final:
                    threshold = self.best["threshold"]
                else:
                    cap = hp["num_calibration_samples"]
                    threshold, value = llm.calibrate_threshold(
                        prob[:cap],
                        y[:cap],
                        criterion,
                        beta=hp["beta"],
                        target_recall=hp["target_recall"],
                        target_precision=hp["target_precision"],
                    )
                    if criterion != "loss_function":
                        selection = value
                values.update(llm.binary_metrics(prob, y, threshold, hp["beta"]))
            elif setup.kind == "multiclass_classifier":
                logits = z[:, m, :].astype(np.float64)
                logits -= logits.max(axis=1, keepdims=True)
                probs = np.exp(logits)
                probs /= probs.sum(axis=1, keepdims=True)
                values.update(llm.multiclass_metrics(probs, y, hp["accuracy_top_k"], hp["beta"]))
            else:
                values.update(llm.regression_metrics(z[:, m, 0], y))
            metrics.append(values)
            scores.append(selection)
            thresholds.append(threshold)
        return _Eval(metrics, scores, thresholds, [float(x) for x in losses])

    # models and checkpoints --------------------------------------------------------------------

    def _snapshot(self, m: int, threshold: float, epoch: int) -> dict[str, Any]:
        """Model m as CPU tensors (what final_model and checkpoints read)."""
        return {
            "weight": self.models.weights[m].detach().to("cpu", copy=True),
            "bias": self.models.biases[m].detach().to("cpu", copy=True),
            "threshold": float(threshold),
            "epoch": int(epoch),
        }

    def final_model(self) -> dict[str, Any]:
        """The chosen model in raw feature / label units (normalisation folded in)."""
        s, best = self.setup.scaler, self.best
        w = best["weight"].double().numpy() * s.scale[:, None]  # x' = (x - mean) * scale
        b = best["bias"].double().numpy() - s.mean.astype(np.float64) @ w
        if self.setup.kind == "regressor":  # y = y' * std + mean
            w, b = w * s.label_std, b * s.label_std + s.label_mean
        return {"weight": w.astype(np.float32), "bias": b, "threshold": best["threshold"]}

    def _checkpoint(self, epoch: int) -> None:
        s = self.setup
        state = {
            "epoch": epoch,
            "steps": self.steps,
            "stale": self.stale,
            "best_key": list(self.best_key),
            "best_loss": self.best_loss,
            "best": self.best or {},
            "weights": [w.detach().cpu() for w in self.models.weights],
            "biases": [b.detach().cpu() for b in self.models.biases],
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            "feature_dim": s.feature_dim,
            "mean": torch.from_numpy(s.scaler.mean),
            "scale": torch.from_numpy(s.scaler.scale),
            "label_mean": s.scaler.label_mean,
            "label_std": s.scaler.label_std,
            "class_weights": torch.from_numpy(s.class_weights)
            if s.class_weights is not None
            else torch.zeros(0),
        }
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, os.path.join(tmp, _STATE_FILE))
            self.ctx.save_checkpoint(tmp, step=epoch)


def _on_cpu(obj: Any) -> Any:
    """``obj`` (an optimizer's state_dict) with every tensor in it copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def _load_state(path: str | None) -> dict | None:
    """A checkpoint's state, on the CPU whichever device wrote it (the optimizer moves its state to
    its parameters' device when loaded)."""
    if path is None:
        return None
    return torch.load(os.path.join(path, _STATE_FILE), weights_only=True, map_location="cpu")


def _save_model(path: str, model: dict[str, Any], setup: _Setup) -> None:
    meta = {
        "predictor_type": setup.kind,
        "num_classes": setup.outputs if setup.kind == "multiclass_classifier" else None,
        "threshold": model["threshold"],
        "feature_dim": setup.feature_dim,
        "loss": setup.loss,
    }
    with open(path, "wb") as f:
        np.savez(f, weight=model["weight"], bias=model["bias"], meta=np.array(json.dumps(meta)))


__all__ = ["MODEL_FILE", "LinearLearner"]
