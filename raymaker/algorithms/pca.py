"""SageMaker's PCA, in its two modes.

``regular``: one streaming pass accumulates the row count, the column sums and the Gram matrix X^T X
(float64); the covariance (X^T X - n mu mu^T) / (n - 1) is then exact and its top eigenvectors are
the components. ``randomized``: a randomized range finder (Halko, Martinsson & Tropp, 2011) on the
implicit covariance with ``num_components + extra_components`` columns (``extra_components=-1`` means
max(10, num_components), SageMaker's documented rule): one pass computes C G for a Gaussian G, three
more passes are subspace (power) iterations, and the top eigenvectors of the small projected matrix
Q^T C Q give the components. Nothing bigger than feature_dim x (num_components + extra) is held, so it
suits a feature_dim whose d x d Gram matrix would not fit. (SageMaker's randomized mode describes a
one-pass sketch; the extra passes buy accuracy.)

Every pass works the same on one worker or many: with ``torch.distributed`` up, the per-pass sums are
all-reduced, so each worker ends with the model of the union of the shards. CSR input is never
densified. ``subtract_mean=false`` decomposes the uncentered second moment X^T X / n instead.

On a worker with a GPU (``TrainContext.gpus``) the passes over the data (column sums, X^T X or
X^T (X q)), the regular mode's eigendecomposition and the test scoring run in torch on that GPU, in
float64 like the NumPy path; the randomized mode's QR and small eigenproblems stay in NumPy. Without
a GPU nothing imports torch.

Model files (``model_dir``): ``pca-components.npy`` (num_components x feature_dim, one component per
row, largest variance first, each signed so its largest-magnitude entry is positive, as scikit-learn
does), ``pca-mean.npy`` (feature_dim; zeros when subtract_mean is false), ``pca-explained-variance.npy``
(the eigenvalues), ``pca-singular-values.npy`` (sqrt(eigenvalue * (n - 1))), ``pca-model.json``.

Metrics (PCA has no SageMaker tuning metric; these are raymaker's): ``train:explained_variance_ratio``
(variance of the kept components over the total), and with a ``test`` channel
``test:explained_variance_ratio`` (1 - residual / total sum of squares of the test rows about the
training mean) and ``test:reconstruction_error`` (mean squared reconstruction error per test row).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from raymaker.algorithms import _streaming as st
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

COMPONENTS_FILE = "pca-components.npy"
MEAN_FILE = "pca-mean.npy"
VARIANCE_FILE = "pca-explained-variance.npy"
SINGULAR_FILE = "pca-singular-values.npy"
META_FILE = "pca-model.json"
_STATE_FILE = "pca-state.npz"
_FORMAT = "raymaker-pca/1"
_RANDOMIZED_PASSES = 4  # 1 range-finding pass + 3 power iterations


@dataclass
class PCAModel:
    components: np.ndarray  # (num_components, feature_dim)
    mean: np.ndarray  # (feature_dim,), zeros when subtract_mean is false
    explained_variance: np.ndarray
    subtract_mean: bool

    @property
    def feature_dim(self) -> int:
        return self.components.shape[1]

    def project(self, x: st.Matrix) -> np.ndarray:
        proj = np.asarray(x @ self.components.T)
        if self.subtract_mean:
            proj = proj - self.mean @ self.components.T  # (x - mu) W^T without densifying x
        return proj


class PCA(Algorithm):
    name = "pca"
    hyperparameters = (
        Hyperparameter("feature_dim", "int", low=1, doc="input dimension"),
        Hyperparameter("mini_batch_size", "int", low=1, doc="rows per mini-batch"),
        Hyperparameter("num_components", "int", low=1, doc="number of principal components"),
        Hyperparameter("algorithm_mode", "str", "regular", choices=("regular", "randomized")),
        Hyperparameter("subtract_mean", "bool", True),
        Hyperparameter(
            "extra_components",
            "int",
            -1,
            low=-1,
            doc="randomized mode oversampling; -1 = max(10, num_components)",
        ),
    )
    channels = (ChannelSpec("train", required=True), ChannelSpec("test"))
    content_types = ("application/x-recordio-protobuf", "text/csv")
    default_content_type = "application/x-recordio-protobuf"
    response_envelope = "projections"
    metrics = (
        MetricSpec("train:explained_variance_ratio", maximize=True),
        MetricSpec("test:explained_variance_ratio", maximize=True),
        MetricSpec("test:reconstruction_error", maximize=False),
    )
    distributed = True
    checkpointing = True
    trainer = "torch"
    # "auto": NumPy on the CPU, torch on the worker's GPU; "torch": torch on either (tests, benchmarks).
    compute: ClassVar[str] = "auto"
    conformance_cases = (
        ConformanceCase(
            {"num_components": "3", "feature_dim": "6", "mini_batch_size": "64"},
            "clusters",
            quality={"test:explained_variance_ratio": 0.9},
        ),
        ConformanceCase(
            {
                "num_components": "2",
                "feature_dim": "6",
                "mini_batch_size": "64",
                "algorithm_mode": "randomized",
            },
            "clusters",
            sparse=True,
            quality={"test:explained_variance_ratio": 0.85},
        ),
    )

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any]) -> None:
        if hp["num_components"] > hp["feature_dim"]:
            raise HyperparameterError(
                f"hyperparameter 'num_components': {hp['num_components']} is more than feature_dim "
                f"({hp['feature_dim']}); use at most {hp['feature_dim']}"
            )

    # --- training --------------------------------------------------------------------------------

    def train(
        self, hp: dict[str, Any], data: TrainingData, ctx: TrainContext, model_dir: str
    ) -> dict[str, float]:
        rank, _ = st.world()
        dim, size, center = hp["feature_dim"], hp["mini_batch_size"], hp["subtract_mean"]

        def stream() -> Iterator[st.Matrix]:
            return st.iter_minibatches(data, "train", size, dim)

        device = st.compute_device(ctx, "pca", self.compute)
        state = _load_state(ctx.load_checkpoint(), dim)
        if hp["algorithm_mode"] == "regular":
            values, vectors, total_var, n = _regular(stream, state, hp, ctx, device)
        else:
            values, vectors, total_var, n = _randomized(stream, state, hp, ctx, device)
        values = values[: hp["num_components"]]
        components = _flip_signs(vectors[:, : hp["num_components"]].T)
        mean = n["sum"] / n["rows"] if center else np.zeros(dim)
        model = PCAModel(components, mean, values, center)

        final = {"train:explained_variance_ratio": float(values.sum() / total_var) if total_var > 0 else 1.0}
        ctx.report(dict(final), step=1)
        if "test" in data:
            # The test channel is FullyReplicated in SageMaker: each worker scores all of it itself.
            scores = _score(model, st.iter_minibatches(data, "test", size, dim), device)
            if scores:
                final.update(scores)
                ctx.report(scores, step=1)
        if rank == 0:
            _save(model_dir, model, n["rows"], hp)
        return final

    # --- serving ---------------------------------------------------------------------------------

    def load(self, model_dir: str) -> PCAModel:
        missing = [
            f
            for f in (COMPONENTS_FILE, MEAN_FILE, META_FILE)
            if not os.path.isfile(os.path.join(model_dir, f))
        ]
        if missing:
            raise ValueError(f"{model_dir} holds no PCA model: {', '.join(missing)} missing")
        with open(os.path.join(model_dir, META_FILE)) as f:
            meta = json.load(f)
        components = np.load(os.path.join(model_dir, COMPONENTS_FILE)).astype(np.float64)
        variance_path = os.path.join(model_dir, VARIANCE_FILE)
        variance = np.load(variance_path) if os.path.isfile(variance_path) else np.zeros(len(components))
        return PCAModel(
            components,
            np.load(os.path.join(model_dir, MEAN_FILE)).astype(np.float64),
            variance,
            bool(meta["subtract_mean"]),
        )

    def num_features(self, model: PCAModel) -> int:
        return model.feature_dim

    def predict(self, model: PCAModel, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(model, batch)
        x = st.as_matrix(batch.features, model.feature_dim, "PCA input")
        return {"projection": model.project(x)}


# --- the two modes -----------------------------------------------------------------------------------


def _moments(
    batches: Iterator[st.Matrix], q: np.ndarray | None, device: Any | None = None
) -> dict[str, np.ndarray]:
    """One pass: row count, column sums, sum of squared norms, and X^T X (q None) or X^T (X q).
    NumPy, or torch on ``device`` (summed there, read back once)."""
    if device is not None:
        return _moments_torch(batches, q, device)
    rows, total, sq, acc = 0.0, None, 0.0, None
    for x in batches:
        rows += x.shape[0]
        s = np.asarray(x.sum(axis=0)).ravel()
        total = s if total is None else total + s
        sq += float(st.row_sq_norms(x).sum())
        part = st.gram(x) if q is None else np.asarray(x.T @ np.asarray(x @ q))
        acc = part if acc is None else acc + part
    return {"rows": rows, "sum": total, "sq": sq, "acc": acc}


def _moments_torch(batches: Iterator[st.Matrix], q: np.ndarray | None, device: Any) -> dict[str, Any]:
    rows, total, sq, acc = 0.0, None, None, None
    qt = None if q is None else st.to_device(q, device)
    for x in batches:
        xt = st.TorchRows(x, device)
        rows += x.shape[0]
        s, n2 = xt.col_sums(), xt.row_sq_norms().sum()
        part = xt.gram() if qt is None else xt.t_matmul(xt.matmul(qt))
        total = s if total is None else total + s
        sq = n2 if sq is None else sq + n2
        acc = part if acc is None else acc + part
    if total is None:
        return {"rows": rows, "sum": None, "sq": 0.0, "acc": None}
    return {"rows": rows, "sum": st.to_numpy(total), "sq": float(sq), "acc": st.to_numpy(acc)}


def _eigh(sym: np.ndarray, device: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix: NumPy, or torch on ``device``."""
    if device is None:
        return np.linalg.eigh(sym)
    import torch

    values, vectors = torch.linalg.eigh(st.to_device(sym, device))
    return st.to_numpy(values), st.to_numpy(vectors)


def _reduce_moments(m: dict[str, np.ndarray], dim: int, width: int) -> dict[str, np.ndarray]:
    """Sum every worker's moments (a worker with no rows contributes zeros)."""
    total = m["sum"] if m["sum"] is not None else np.zeros(dim)
    acc = m["acc"] if m["acc"] is not None else np.zeros((dim, width))
    counts, total, acc = st.allreduce_sum([m["rows"], m["sq"]], total, acc)
    if counts[0] < 2:
        raise ValueError(f"PCA needs at least 2 rows in the train channel, got {int(counts[0])}")
    return {"rows": counts[0], "sq": counts[1], "sum": total, "acc": acc}


def _cov_times(m: dict[str, np.ndarray], q: np.ndarray | None, center: bool) -> np.ndarray:
    """C q (or C itself when q is None) from the moments: C = (X^T X - n mu mu^T)/(n-1), or X^T X / n."""
    n = m["rows"]
    if not center:
        return m["acc"] / n
    mu = m["sum"] / n
    right = mu if q is None else mu @ q
    return (m["acc"] - n * np.outer(mu, right)) / (n - 1)


def _total_variance(m: dict[str, np.ndarray], center: bool) -> float:
    n = m["rows"]
    if not center:
        return float(m["sq"] / n)
    return float((m["sq"] - m["sum"] @ m["sum"] / n) / (n - 1))


Stream = Callable[[], Iterator[st.Matrix]]
Decomposition = tuple[np.ndarray, np.ndarray, float, dict[str, Any]]


def _regular(
    stream: Stream, state: dict[str, Any] | None, hp: dict[str, Any], ctx: TrainContext, device: Any = None
) -> Decomposition:
    dim, center = hp["feature_dim"], hp["subtract_mean"]
    if state is not None and state["mode"] == "regular":
        ctx.log("pca: resuming from the checkpointed moments")
        m = state
    else:
        m = _reduce_moments(_moments(stream(), None, device), dim, dim)
        _checkpoint(ctx, {"mode": "regular", **m}, step=1)
    cov = _cov_times(m, None, center)
    values, vectors = _eigh((cov + cov.T) / 2, device)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 0.0), vectors[:, order], _total_variance(m, center), m


def _randomized(
    stream: Stream, state: dict[str, Any] | None, hp: dict[str, Any], ctx: TrainContext, device: Any = None
) -> Decomposition:
    dim, k, center = hp["feature_dim"], hp["num_components"], hp["subtract_mean"]
    extra = max(10, k) if hp["extra_components"] == -1 else hp["extra_components"]
    width = min(k + extra, dim)
    if state is not None and state["mode"] == "randomized":
        ctx.log(f"pca: resuming at pass {int(state['next_pass']) + 1} of {_RANDOMIZED_PASSES}")
        q, start = state["q"], int(state["next_pass"])
    else:
        rng = np.random.default_rng(ctx.seed)
        q, start = st.broadcast(np.linalg.qr(rng.standard_normal((dim, width)))[0]), 0
    for p in range(start, _RANDOMIZED_PASSES):
        m = _reduce_moments(_moments(stream(), q, device), dim, width)
        cq = _cov_times(m, q, center)
        if p == _RANDOMIZED_PASSES - 1:
            break
        q = np.linalg.qr(cq)[0]  # orthonormal basis of C q: one more power of C
        _checkpoint(ctx, {"mode": "randomized", "q": q, "next_pass": p + 1}, step=p + 1)
    # Rayleigh-Ritz: the eigenpairs of C restricted to span(q).
    small = q.T @ cq
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    order = np.argsort(values)[::-1]
    return np.maximum(values[order], 0.0), q @ vectors[:, order], _total_variance(m, center), m


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Each component signed so its largest-magnitude entry is positive (scikit-learn's convention)."""
    idx = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _score(model: PCAModel, batches: Iterator[st.Matrix], device: Any | None = None) -> dict[str, float]:
    """Test-set explained variance ratio and mean squared reconstruction error (CSR stays sparse);
    NumPy, or torch on ``device``."""
    if device is not None:
        return _score_torch(model, batches, device)
    rows, total, residual = 0, 0.0, 0.0
    mu = model.mean
    for x in batches:
        norms = st.row_sq_norms(x)
        if model.subtract_mean:  # ||x - mu||^2 = ||x||^2 - 2 x.mu + ||mu||^2
            norms = norms - 2 * np.asarray(x @ mu).ravel() + mu @ mu
        proj = model.project(x)
        total += float(norms.sum())
        residual += float(np.maximum(norms - np.einsum("ij,ij->i", proj, proj), 0).sum())
        rows += x.shape[0]
    if not rows:
        return {}
    return {
        "test:explained_variance_ratio": 1.0 - residual / total if total > 0 else 1.0,
        "test:reconstruction_error": residual / rows,
    }


def _score_torch(model: PCAModel, batches: Iterator[st.Matrix], device: Any) -> dict[str, float]:
    comps, mu = st.to_device(model.components, device), st.to_device(model.mean, device)
    shift = mu @ comps.T
    rows, total, residual = 0, None, None
    for x in batches:
        xt = st.TorchRows(x, device)
        norms = xt.row_sq_norms()
        proj = xt.matmul(comps.T)
        if model.subtract_mean:
            norms = norms - 2 * xt.matmul(mu[:, None])[:, 0] + mu @ mu
            proj = proj - shift
        t, r = norms.sum(), (norms - (proj * proj).sum(dim=1)).clamp(min=0).sum()
        total = t if total is None else total + t
        residual = r if residual is None else residual + r
        rows += x.shape[0]
    if not rows:
        return {}
    total_f, residual_f = float(total), float(residual)
    return {
        "test:explained_variance_ratio": 1.0 - residual_f / total_f if total_f > 0 else 1.0,
        "test:reconstruction_error": residual_f / rows,
    }


# --- files -------------------------------------------------------------------------------------------


def _save(model_dir: str, model: PCAModel, rows: float, hp: dict[str, Any]) -> None:
    os.makedirs(model_dir, exist_ok=True)
    np.save(os.path.join(model_dir, COMPONENTS_FILE), model.components)
    np.save(os.path.join(model_dir, MEAN_FILE), model.mean)
    np.save(os.path.join(model_dir, VARIANCE_FILE), model.explained_variance)
    dof = rows - 1 if model.subtract_mean else rows
    np.save(os.path.join(model_dir, SINGULAR_FILE), np.sqrt(model.explained_variance * dof))
    meta = {
        "format": _FORMAT,
        "num_components": int(model.components.shape[0]),
        "feature_dim": int(model.feature_dim),
        "subtract_mean": model.subtract_mean,
        "n_samples": int(rows),
        "hyperparameters": hp,
    }
    with open(os.path.join(model_dir, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def _checkpoint(ctx: TrainContext, state: dict[str, Any], step: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, _STATE_FILE), **{k: np.asarray(v) for k, v in state.items()})
        ctx.save_checkpoint(tmp, step=step)


def _load_state(path: str | None, dim: int) -> dict[str, Any] | None:
    if path is None or not os.path.isfile(os.path.join(path, _STATE_FILE)):
        return None
    with np.load(os.path.join(path, _STATE_FILE)) as z:
        state: dict[str, Any] = {name: z[name] for name in z.files}
    width = len(state["sum"]) if "sum" in state else state["q"].shape[0]
    if width != dim:
        raise ValueError(
            f"the checkpoint in {path} has {width} features but feature_dim is {dim}; "
            "start without the checkpoint or restore feature_dim"
        )
    state["mode"] = str(state["mode"])
    for key in ("rows", "sq"):
        if key in state:
            state[key] = float(state[key])
    return state
