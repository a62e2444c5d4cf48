"""SageMaker's built-in XGBoost algorithm ("algorithm mode") on xgboost 3.x.

Hyperparameters, metric names and the model file name (``xgboost-model``) are SageMaker's. Under the
engine this runs in each instance of an instance group, where ``xgboost.train`` joins the job's Rabit
collective (set up by the engine) by itself: each worker builds a DMatrix from its own shard and the trees are grown together.

On a worker given a GPU (``TrainContext.gpus``) it trains on that GPU, as xgboost >= 2 spells it:
``device="cuda:N"`` with ``tree_method="hist"`` (or "approx"; "exact" has no GPU implementation and
stays on the CPU). SageMaker's ``tree_method=gpu_hist`` is accepted as its XGBoost 1.7+ container
accepts it: xgboost 2 deprecated and xgboost 3 removed it, so it means hist on the GPU here, and on an
instance type without a GPU it is a HyperparameterError.

The model file is xgboost's UBJSON format (what ``Booster.save_model`` writes by default in xgboost
>= 2.1); SageMaker's own containers pickle the Booster, which this module does not load (unpickling
untrusted files runs code).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from raymaker.algorithms import devices as dv
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

xgb = LazyModule("xgboost")

MODEL_FILE = "xgboost-model"  # SageMaker's name inside model.tar.gz
_CKPT_MODEL = "xgboost-checkpoint.ubj"
_CKPT_STATE = "state.json"

# SageMaker's XGBoost container (constants/xgb_constants.py): every metric it accepts, by direction.
MAXIMIZE_METRICS = (
    "accuracy",
    "auc",
    "aucpr",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "map",
    "ndcg",
    "precision",
    "r2",
    "recall",
    "precision_macro",
    "precision_micro",
    "recall_macro",
    "recall_micro",
)
MINIMIZE_METRICS = (
    "aft-nloglik",
    "cox-nloglik",
    "error",
    "gamma-deviance",
    "gamma-nloglik",
    "interval-regression-accuracy",
    "logloss",
    "mae",
    "mape",
    "merror",
    "mlogloss",
    "mphe",
    "mse",
    "poisson-nloglik",
    "rmse",
    "rmsle",
    "tweedie-nloglik",
)
# Metrics xgboost does not compute itself; computed here from predictions (exactly, across workers).
_CLASS_METRICS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "f1",
        "f1_binary",
        "f1_macro",
        "precision",
        "recall",
        "precision_macro",
        "precision_micro",
        "recall_macro",
        "recall_micro",
    }
)
_REG_METRICS = frozenset({"mse", "r2"})
CUSTOM_METRICS = _CLASS_METRICS | _REG_METRICS

OBJECTIVES = (
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:logistic",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:quantileerror",
    "reg:gamma",
    "reg:tweedie",
    "survival:aft",
    "survival:cox",
)
_CLASSIFICATION_OBJECTIVES = ("binary:logistic", "binary:logitraw", "binary:hinge", "reg:logistic")
_MULTI_OBJECTIVES = ("multi:softmax", "multi:softprob")

# SageMaker's choices; gpu_hist is the pre-2.0 name of hist on the GPU (xgboost 3 removed it).
TREE_METHODS = ("auto", "exact", "approx", "hist", "gpu_hist")
GPU_TREE_METHOD = "gpu_hist"

# name -> xgboost parameter it sets (SageMaker accepts xgboost's aliases for these four)
_ALIASES = {"learning_rate": "eta", "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
# Hyperparameters this module consumes itself instead of handing them to xgboost as parameters.
_NOT_PARAMS = frozenset(
    {"num_round", "csv_weights", "early_stopping_rounds", "eval_metric", "nthread", "seed", "updater"}
    | set(_ALIASES)
)


def _hp(name: str, kind: str, default: Any = None, **kw: Any) -> Hyperparameter:
    return Hyperparameter(name, kind, default, **kw)


_HYPERPARAMETERS = (
    Hyperparameter("num_round", "int", low=1, doc="number of boosting rounds, an integer >= 1"),
    _hp("num_class", "int", low=2, doc="number of classes; required for multi:softmax and multi:softprob"),
    _hp("objective", "str", "reg:squarederror", choices=OBJECTIVES),
    _hp("booster", "str", "gbtree", choices=("gbtree", "gblinear", "dart")),
    _hp("eta", "float", 0.3, low=0, high=1),
    _hp("gamma", "float", 0.0, low=0),
    _hp("max_depth", "int", 6, low=0),
    _hp("min_child_weight", "float", 1.0, low=0),
    _hp("max_delta_step", "float", 0.0, low=0),
    _hp("subsample", "float", 1.0, low=0, high=1),  # (0, 1]: zero rejected in check_hyperparameters
    _hp("colsample_bytree", "float", 1.0, low=0, high=1),
    _hp("colsample_bylevel", "float", 1.0, low=0, high=1),
    _hp("colsample_bynode", "float", 1.0, low=0, high=1),
    _hp("lambda", "float", 1.0, low=0),
    _hp("alpha", "float", 0.0, low=0),
    _hp("tree_method", "str", "auto", choices=TREE_METHODS),
    _hp("scale_pos_weight", "float", 1.0, low=0),
    _hp("max_bin", "int", 256, low=2),
    _hp("grow_policy", "str", "depthwise", choices=("depthwise", "lossguide")),
    _hp("max_leaves", "int", 0, low=0),
    _hp("num_parallel_tree", "int", 1, low=1),
    _hp("sampling_method", "str", "uniform", choices=("uniform", "gradient_based")),
    _hp("monotone_constraints", "str", doc='e.g. "(1,0,-1)"'),
    _hp("interaction_constraints", "str", doc='e.g. "[[0,1],[2,3]]"'),
    _hp("updater", "list"),
    _hp("process_type", "str", choices=("default", "update")),
    _hp("refresh_leaf", "int", low=0, high=1),
    _hp("sample_type", "str", "uniform", choices=("uniform", "weighted")),  # dart
    _hp("normalize_type", "str", "tree", choices=("tree", "forest")),
    _hp("rate_drop", "float", 0.0, low=0, high=1),
    _hp("one_drop", "int", 0, low=0, high=1),
    _hp("skip_drop", "float", 0.0, low=0, high=1),
    _hp("tweedie_variance_power", "float", 1.5, low=1, high=2),  # (1, 2): ends rejected below
    _hp("huber_slope", "float", 1.0, low=0),
    _hp("quantile_alpha", "float", low=0, high=1),
    _hp("aft_loss_distribution", "str", "normal", choices=("normal", "logistic", "extreme")),
    _hp("aft_loss_distribution_scale", "float", 1.0, low=0),
    _hp("base_score", "float"),
    _hp("eval_metric", "list", doc="comma-separated metric names"),
    _hp("early_stopping_rounds", "int", low=1),
    _hp("csv_weights", "int", 0, low=0, high=1, doc="1: the first feature column is the instance weight"),
    _hp("seed", "int", low=-(2**31) + 1, high=2**31 - 2),
    _hp("verbosity", "int", low=0, high=3),
    _hp("nthread", "int", low=1),
    *(_hp(alias, "float", low=0, doc=f"alias of {target}") for alias, target in _ALIASES.items()),
)


class XGBoost(Algorithm):
    name = "xgboost"
    hyperparameters = _HYPERPARAMETERS
    channels = (ChannelSpec("train", required=True), ChannelSpec("validation"), ChannelSpec("model"))
    content_types = (
        "text/libsvm",
        "text/x-libsvm",  # SageMaker also takes a bare "libsvm": raymaker.io.formats has no such alias yet
        "text/csv",
        "application/x-parquet",
        "application/x-recordio-protobuf",
    )
    default_content_type = "text/libsvm"
    default_accept = "text/csv"  # the SageMaker XGBoost container's default
    inference_content_types = (
        "text/csv",
        "text/libsvm",
        "text/x-libsvm",
        "application/json",
        "application/jsonlines",
        "application/x-parquet",
        "application/x-recordio-protobuf",
    )
    metrics = tuple(
        MetricSpec(f"{channel}:{m}", maximize)
        for channel in ("train", "validation")
        for names, maximize in ((MAXIMIZE_METRICS, True), (MINIMIZE_METRICS, False))
        for m in names
    )
    distributed = True
    incremental = True
    checkpointing = True
    trainer = "xgboost"
    checkpoint_every: ClassVar[int] = 10  # rounds between checkpoints (and always the last round)
    conformance_cases = (
        # 12 rounds: a checkpoint at round 9 leaves rounds to resume
        ConformanceCase(
            {"num_round": "12", "objective": "binary:logistic", "eval_metric": "auc"},
            "binary",
            quality={"validation:auc": 0.9},
            steps="num_round",
        ),
        ConformanceCase(
            {"num_round": "5", "objective": "multi:softprob", "num_class": "3"},
            "multiclass",
            quality={"validation:mlogloss": 0.9},
            steps="num_round",
        ),
        ConformanceCase(
            {"num_round": "5", "objective": "reg:squarederror"},
            "regression",
            sparse=True,
            quality={"validation:rmse": 1.0},
            steps="num_round",
        ),
    )

    # --- hyperparameters ---------------------------------------------------------------------

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any]) -> None:
        for alias, target in _ALIASES.items():
            if hp.get(alias) is not None:
                hp[target] = hp[alias]
        if hp["eta"] is not None and hp["eta"] > 1:
            raise HyperparameterError(f"hyperparameter 'learning_rate': {hp['eta']} is outside [0, 1]")
        for name in ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode"):
            if hp[name] == 0:
                raise HyperparameterError(f"hyperparameter {name!r}: must be in (0, 1], not 0")
        if hp["tweedie_variance_power"] in (1.0, 2.0):
            raise HyperparameterError("hyperparameter 'tweedie_variance_power': must be in (1, 2)")
        objective = hp["objective"]
        if objective in _MULTI_OBJECTIVES and hp["num_class"] is None:
            raise HyperparameterError(
                f"objective {objective!r} needs hyperparameter 'num_class' (the number of classes, >= 2)"
            )
        for metric in hp["eval_metric"] or ():
            _check_eval_metric(metric, objective)

    @classmethod
    def check_gpus(cls, hp: dict[str, Any], gpus: int) -> None:
        if hp["tree_method"] == GPU_TREE_METHOD and gpus <= 0:
            raise HyperparameterError(
                "tree_method 'gpu_hist' trains on a GPU, but this job's instance type has none: choose "
                "an instance type with GPUs, or tree_method 'hist' (on a GPU instance type every "
                "tree_method but 'exact' trains on the GPU)"
            )

    # --- training ----------------------------------------------------------------------------

    def train(
        self, hp: dict[str, Any], data: TrainingData, ctx: TrainContext, model_dir: str
    ) -> dict[str, float]:
        if hp["tree_method"] == "exact" and ctx.world_size > 1:
            raise HyperparameterError(
                "tree_method 'exact' cannot train on several instances; use 'hist' or 'approx'"
            )
        devices = dv.context_devices(ctx, probe=_cuda_probe)
        params = _xgb_params(hp, ctx.seed, device=devices.xgboost)
        if devices.cuda and "device" not in params:
            ctx.log("xgboost: tree_method 'exact' has no GPU implementation; training on the CPU")
        elif devices.cuda:
            dv.log_devices(ctx, "xgboost", devices)
        native, custom, stop_metric = _split_eval_metrics(hp)
        if native:
            params["eval_metric"] = native

        train_batch = data.load("train")
        dtrain = _dmatrix(train_batch, "train", params["nthread"], weights=bool(hp["csv_weights"]))
        evals = [(dtrain, "train")]
        if "validation" in data:
            dval = _dmatrix(data.load("validation"), "validation", params["nthread"])
            evals.append((dval, "validation"))

        start_model, done = _resume_point(ctx, data)
        remaining = hp["num_round"] - done
        recorder = _round_callback_class()(
            ctx, first_step=done, last_step=hp["num_round"] - 1, every=self.checkpoint_every
        )
        callbacks: list[xgb.callback.TrainingCallback] = [recorder]  # first: EarlyStopping may end the loop
        if hp["early_stopping_rounds"] is not None:
            callbacks.append(
                xgb.callback.EarlyStopping(
                    rounds=hp["early_stopping_rounds"],
                    metric_name=stop_metric,
                    maximize=None if stop_metric is None else _maximize(stop_metric),
                    save_best=hp["booster"] != "gblinear",  # slicing needs trees
                )
            )
        if remaining > 0:
            booster = xgb.train(
                params,
                dtrain,
                num_boost_round=remaining,
                evals=evals,
                custom_metric=_custom_metric(custom, hp) if custom else None,
                callbacks=callbacks,
                xgb_model=start_model,
                verbose_eval=False,
            )
        else:  # the checkpoint already holds every round
            booster = start_model
        if ctx.rank == 0:
            os.makedirs(model_dir, exist_ok=True)
            _save_booster(booster, os.path.join(model_dir, MODEL_FILE))
        return dict(recorder.last)

    # --- hosting -----------------------------------------------------------------------------

    def load(self, model_dir: str) -> Any:
        path = os.path.join(model_dir, MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {MODEL_FILE!r} in model directory {model_dir}")
        return _load_booster(path)

    def num_features(self, model: Any) -> int:
        return int(model.num_features())

    def predict(self, model: Any, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(model, batch)
        learner = json.loads(model.save_config())["learner"]
        objective = learner["objective"]["name"]
        features = batch.features
        width = model.num_features()
        if sp.issparse(features) and features.shape[1] < width:
            # libsvm requests name only the columns they use; the model counts all of them
            features = sp.csr_matrix(features, shape=(features.shape[0], width))
        # Threads pay off for big batches only; for an endpoint's few rows they cost tail latency.
        threads = (os.cpu_count() or 1) if features.shape[0] >= 4096 else 1
        raw = model.predict(xgb.DMatrix(features, nthread=threads))
        return prediction_outputs(objective, raw)


def prediction_outputs(objective: str, raw: np.ndarray) -> dict[str, np.ndarray]:
    """SageMaker-style per-row outputs for an objective from ``Booster.predict``'s values."""
    if objective in ("binary:logistic", "reg:logistic"):
        return {"score": raw, "predicted_label": (raw > 0.5).astype(np.int64)}
    if objective == "binary:logitraw":
        return {"score": raw, "predicted_label": (raw > 0).astype(np.int64)}
    if objective == "binary:hinge":
        return {"score": raw, "predicted_label": raw.astype(np.int64)}
    if objective == "multi:softprob":
        probs = raw.reshape(raw.shape[0], -1)
        return {"score": probs, "predicted_label": probs.argmax(axis=1).astype(np.int64)}
    if objective == "multi:softmax":
        return {"predicted_label": raw.astype(np.int64)}
    return {"score": raw}


# --- hyperparameters -> xgboost ------------------------------------------------------------------


def _check_eval_metric(metric: str, objective: str) -> None:
    base, _, arg = metric.partition("@")
    if arg:
        if base not in ("error", "ndcg", "map"):
            raise HyperparameterError(
                f"eval_metric {metric!r}: only 'error', 'ndcg' and 'map' take an '@' argument"
            )
        try:
            float(arg.rstrip("-"))
        except ValueError:
            raise HyperparameterError(
                f"eval_metric {metric!r}: the part after '@' must be a number"
            ) from None
        return
    if metric not in MAXIMIZE_METRICS and metric not in MINIMIZE_METRICS:
        raise HyperparameterError(
            f"eval_metric {metric!r} is not supported; choose from "
            f"{', '.join(sorted(MAXIMIZE_METRICS + MINIMIZE_METRICS))}"
        )
    if metric == "auc" and not objective.startswith(("binary:", "rank:")):
        raise HyperparameterError("eval_metric 'auc' needs a binary: or rank: objective")
    if metric == "aft-nloglik" and objective != "survival:aft":
        raise HyperparameterError("eval_metric 'aft-nloglik' needs objective 'survival:aft'")
    if metric in _CLASS_METRICS and objective not in _CLASSIFICATION_OBJECTIVES + _MULTI_OBJECTIVES:
        raise HyperparameterError(
            f"eval_metric {metric!r} needs a classification objective (binary:*, multi:*, reg:logistic), "
            f"not {objective!r}"
        )
    if metric == "f1_binary" and objective in _MULTI_OBJECTIVES:
        raise HyperparameterError("eval_metric 'f1_binary' is for two classes; use 'f1_macro' with multi:*")


def _xgb_params(hp: dict[str, Any], ctx_seed: int, device: str = "cpu") -> dict[str, Any]:
    """xgboost's parameters for the hyperparameters, training on ``device`` ("cpu" or "cuda:N", the
    worker's ``devices.Devices.xgboost``). HyperparameterError for gpu_hist on the CPU."""
    XGBoost.check_gpus(hp, 0 if device == "cpu" else 1)
    # Values equal to the default are xgboost's defaults too: leaving them out keeps xgboost from
    # warning that (say) dart's rate_drop is unused by gbtree. Keys with a leading "_" are SageMaker's
    # (_tuning_objective_metric), not xgboost's.
    defaults = {h.name: h.default for h in _HYPERPARAMETERS}
    params = {
        k: v
        for k, v in hp.items()
        if k not in _NOT_PARAMS and not k.startswith("_") and v is not None and v != defaults.get(k)
    }
    params["objective"] = hp["objective"]
    tree_method = hp["tree_method"]
    if hp["booster"] != "gblinear":
        # xgboost's own "auto" has meant hist since 2.0; say so, as SageMaker's docs promise. gpu_hist
        # is hist on the GPU (xgboost >= 2: tree_method="hist", device="cuda").
        params["tree_method"] = "hist" if tree_method in ("auto", GPU_TREE_METHOD) else tree_method
    if device != "cpu" and (hp["booster"] == "gblinear" or tree_method != "exact"):
        params["device"] = device  # exact has no GPU implementation: it stays on the CPU
    if params["objective"] == "reg:linear":
        params["objective"] = "reg:squarederror"  # removed name, same loss
    if params["objective"] not in _MULTI_OBJECTIVES:
        params.pop("num_class", None)  # xgboost rejects num_class for other objectives
    if hp["updater"]:
        params["updater"] = ",".join(hp["updater"])
    params["seed"] = hp["seed"] if hp["seed"] is not None else ctx_seed
    params["nthread"] = hp["nthread"] or os.cpu_count() or 1
    return params


def _cuda_probe() -> tuple[int, str]:
    """CUDA devices xgboost can train on: none when this xgboost build lacks CUDA (the xgboost-cpu
    wheel), else as many as torch sees."""
    if not xgb.build_info().get("USE_CUDA"):
        return 0, f"xgboost {xgb.__version__} was built without CUDA"
    return dv.torch_cuda_probe()


def _split_eval_metrics(hp: dict[str, Any]) -> tuple[list[str], list[str], str | None]:
    """(metrics xgboost computes, metrics computed here, metric early stopping watches)."""
    wanted = list(hp["eval_metric"] or ())
    tuning = hp.get("_tuning_objective_metric")  # SageMaker's tuner: make sure it is computed, and last
    if tuning:
        name = str(tuning).split(":", 1)[-1]
        wanted = [m for m in wanted if m != name] + [name]
    wanted = list(dict.fromkeys(wanted))
    native = [m for m in wanted if m not in CUSTOM_METRICS]
    custom = [m for m in wanted if m in CUSTOM_METRICS]
    return native, custom, (wanted[-1] if wanted else None)


def _maximize(metric: str) -> bool:
    base = metric.partition("@")[0]
    return base in MAXIMIZE_METRICS


# --- data ----------------------------------------------------------------------------------------


def _dmatrix(batch: Batch, channel: str, nthread: int, *, weights: bool = False) -> Any:
    if batch.labels is None:
        raise ValueError(f"channel {channel!r} has no labels: XGBoost trains on labelled rows")
    features, weight = batch.features, None
    if weights:  # csv_weights=1: the column after the label is the instance weight
        if features.shape[1] < 2:
            raise ValueError("csv_weights=1 needs a weight column and at least one feature column")
        col = features[:, 0]
        weight = np.asarray(col.toarray() if sp.issparse(col) else col, dtype=np.float32).ravel()
        features = features[:, 1:]
    return xgb.DMatrix(features, label=batch.labels, weight=weight, nthread=nthread)


def _model_channel_dir(data: TrainingData) -> str | None:
    """The earlier model's directory from a ``model`` channel: a path (str / PathLike), or a callable
    returning one (TrainingData holds batch iterators; a model channel carries a directory instead)."""
    if "model" not in data:
        return None
    entry: Any = data.channels["model"]
    if callable(entry):
        entry = entry()
    if not isinstance(entry, (str, os.PathLike)):
        raise ValueError("the 'model' channel must give the directory of an earlier model (xgboost-model)")
    return os.fspath(entry)


def _resume_point(ctx: TrainContext, data: TrainingData) -> tuple[Any, int]:
    """(booster to continue from or None, rounds of this job already done). A checkpoint of this job
    wins over the ``model`` channel: it already contains the channel's trees."""
    ckpt = ctx.load_checkpoint()
    if ckpt is not None:
        with open(os.path.join(ckpt, _CKPT_STATE)) as f:
            step = int(json.load(f)["step"])
        ctx.log(f"xgboost: resuming after round {step} from checkpoint")
        return _load_booster(os.path.join(ckpt, _CKPT_MODEL)), step + 1
    model_dir = _model_channel_dir(data)
    if model_dir is not None:
        path = os.path.join(model_dir, MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the 'model' channel has no {MODEL_FILE!r} (looked in {model_dir})")
        return _load_booster(path), 0
    return None, 0


def _save_booster(booster: Any, path: str) -> None:
    with open(path, "wb") as f:
        f.write(booster.save_raw("ubj"))  # explicit format: the file name has no extension


def _load_booster(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read()
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))  # JSON or UBJSON, told apart by content
    return booster


# --- per-round reporting, checkpoints, metrics xgboost lacks --------------------------------------


def _metric_name(channel: str, xgb_metric: str, declared: set[str]) -> str | None:
    for candidate in (xgb_metric, xgb_metric.partition("@")[0] if xgb_metric.startswith("tweedie") else None):
        if candidate and f"{channel}:{candidate}" in declared:
            return f"{channel}:{candidate}"
    return None


@functools.cache
def _round_callback_class() -> type:
    """Defined on first use: its base class comes from xgboost, which only training workers import."""

    class _RoundCallback(xgb.callback.TrainingCallback):
        """Reports every round's metrics (``train-auc`` -> ``train:auc``), logs them the way SageMaker's
        container does, and checkpoints every ``every`` rounds and on the last one."""

        def __init__(self, ctx: TrainContext, *, first_step: int, last_step: int, every: int):
            super().__init__()
            self.ctx, self.first_step, self.last_step, self.every = ctx, first_step, last_step, every
            self.declared = {m.name for m in XGBoost.metrics}
            self.last: dict[str, float] = {}

        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            step = self.first_step + epoch  # epoch counts from 0 in every xgboost.train call
            values: dict[str, float] = {}
            line = [f"[{step}]"]
            for channel, history in evals_log.items():
                for metric, scores in history.items():
                    line.append(f"{channel}-{metric}:{scores[-1]:.5f}")
                    name = _metric_name(channel, metric, self.declared)
                    if name is not None:
                        values[name] = float(scores[-1])
            if values:
                self.ctx.report(values, step=step)
                self.last = values
            if self.ctx.rank == 0:
                self.ctx.log("\t".join(line))
            if (step + 1) % self.every == 0 or step == self.last_step:
                with tempfile.TemporaryDirectory() as tmp:
                    _save_booster(model, os.path.join(tmp, _CKPT_MODEL))
                    with open(os.path.join(tmp, _CKPT_STATE), "w") as f:
                        json.dump({"step": step}, f)
                    self.ctx.save_checkpoint(tmp, step=step)
            return False

    return _RoundCallback


def _custom_metric(
    names: list[str], hp: dict[str, Any]
) -> Callable[[np.ndarray, Any], list[tuple[str, float]]]:
    """An xgboost ``custom_metric`` computing SageMaker's extra metrics from confusion counts / sums
    that are summed over all workers first, so the values are exact in distributed training."""
    objective = hp["objective"]
    k = hp["num_class"] if objective in _MULTI_OBJECTIVES else 2

    def metric(predt: np.ndarray, dmat: Any) -> list[tuple[str, float]]:
        labels = dmat.get_label()
        out: dict[str, float] = {}
        if any(n in _CLASS_METRICS for n in names):
            confusion = _allreduce(_confusion(labels, _predicted_classes(objective, predt, k), k))
            out.update(_classification_metrics(confusion))
        if any(n in _REG_METRICS for n in names):
            values = predt.reshape(labels.shape[0], -1)[:, 0]
            err = labels - values
            n, s, s2, sse = _allreduce(
                np.array([labels.size, labels.sum(), (labels**2).sum(), (err**2).sum()], dtype=np.float64)
            )
            sst = s2 - s * s / n if n else 0.0
            out["mse"] = sse / n if n else float("nan")
            out["r2"] = (1.0 - sse / sst) if sst > 0 else (1.0 if sse == 0 else 0.0)
        return [(name, float(out[name])) for name in names]

    return metric


def _allreduce(values: np.ndarray) -> np.ndarray:
    from xgboost import collective

    if collective.is_distributed():
        summed = collective.allreduce(np.ascontiguousarray(values, dtype=np.float64), collective.Op.SUM)
        return summed.reshape(values.shape)  # allreduce hands back a flat array
    return values


def _predicted_classes(objective: str, predt: np.ndarray, k: int) -> np.ndarray:
    if objective == "multi:softprob":
        return predt.reshape(-1, k).argmax(axis=1)
    if objective in ("multi:softmax", "binary:hinge"):
        return predt.astype(np.int64)
    threshold = 0.0 if objective == "binary:logitraw" else 0.5
    return (predt > threshold).astype(np.int64)


def _confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    truth = np.clip(np.rint(labels), 0, k - 1).astype(np.int64)  # binary labels may be probabilities
    predicted = np.clip(predicted, 0, k - 1)
    return np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).astype(np.float64)


def _classification_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Rows are true classes, columns predicted ones (sklearn's conventions for the averages)."""
    total = confusion.sum()
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (predicted + actual) > 0
    accuracy = float(tp.sum() / total) if total else float("nan")
    macro = {
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    }
    binary = len(confusion) == 2
    return {
        "accuracy": accuracy,
        "balanced_accuracy": float(recall[actual > 0].mean()) if (actual > 0).any() else 0.0,
        "precision_micro": accuracy,  # single-label: micro averages equal accuracy
        "recall_micro": accuracy,
        **macro,
        "f1_binary": float(f1[1]),
        "precision": float(precision[1]) if binary else macro["precision_macro"],
        "recall": float(recall[1]) if binary else macro["recall_macro"],
        "f1": float(f1[1]) if binary else macro["f1_macro"],
    }


__all__ = ["MODEL_FILE", "TREE_METHODS", "XGBoost", "prediction_outputs"]
