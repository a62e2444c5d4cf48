"""SageMaker's k-means: streaming mini-batch k-means over ``k * extra_center_factor`` centers, reduced to
``k`` at the end by a local weighted k-means (Lloyd) over those centers, as SageMaker's "How K-Means
Clustering Works" describes.

Training, per epoch: every worker streams its shard of ``train`` in mini-batches of ``mini_batch_size``
rows; each row moves its closest center by a per-center learning rate of 1/count (Sculley, "Web-scale
k-means clustering", 2010; ``half_life_time_size`` decays the counts). With ``torch.distributed`` up,
workers start every epoch from the same centers and at its end combine their center sums and counts
(one all-reduce), so all hold the same centers again. Initial centers come from the first
``max(mini_batch_size, K)`` rows (of every worker, gathered): ``random`` picks K of them,
``kmeans++`` samples by squared distance (Arthur & Vassilvitskii, 2007).

Model files (``model_dir``): ``kmeans-centers.npy`` (k x feature_dim float64 centers) and
``kmeans-model.json`` (format, k, feature_dim, training hyperparameters). SageMaker's own MXNet
``model_algo-1`` is not produced.

On a worker with a GPU (``TrainContext.gpus``) the mini-batch passes (distances, assignments, center
updates) and the test scoring run in torch on that GPU, in float64 like the NumPy path, so the centers
match the CPU's to rounding; the seeding sample and the final reduction over K centers are small and
stay in NumPy. Without a GPU nothing imports torch.

``distance_to_cluster`` is the Euclidean (not squared) distance to the closest center. ``train:msd``
is the mean squared distance of each row to its closest working center when the row was seen in that
epoch (no extra pass); ``test:msd``/``test:ssd`` are exact, against the final ``k`` centers.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

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

CENTERS_FILE = "kmeans-centers.npy"
META_FILE = "kmeans-model.json"
_STATE_FILE = "kmeans-state.npz"
_FORMAT = "raymaker-kmeans/1"
# extra_center_factor=auto: train twice as many centers as asked, then reduce (documented choice;
# SageMaker does not publish its rule).
_AUTO_CENTER_FACTOR = 2
_METRICS = ("msd", "ssd")


@dataclass
class KMeansModel:
    centers: np.ndarray  # (k, feature_dim)

    @property
    def feature_dim(self) -> int:
        return self.centers.shape[1]


class KMeans(Algorithm):
    name = "kmeans"
    hyperparameters = (
        Hyperparameter("feature_dim", "int", low=1, doc="number of features in the input data"),
        Hyperparameter("k", "int", low=1, doc="number of clusters"),
        Hyperparameter("mini_batch_size", "int", 5000, low=1, doc="rows per mini-batch"),
        Hyperparameter("epochs", "int", 1, low=1, doc="passes over the training data"),
        Hyperparameter("init_method", "str", "random", choices=("random", "kmeans++")),
        Hyperparameter(
            "extra_center_factor", "int", "auto", low=1, auto=True, doc="train k * this centers, reduce to k"
        ),
        Hyperparameter("local_lloyd_max_iter", "int", 300, low=1),
        Hyperparameter("local_lloyd_tol", "float", 0.0001, low=0, high=1),
        Hyperparameter("local_lloyd_num_trials", "int", "auto", low=1, auto=True),
        Hyperparameter("local_lloyd_init_method", "str", "kmeans++", choices=("random", "kmeans++")),
        Hyperparameter("half_life_time_size", "int", 0, low=0, doc="0 = no decay"),
        Hyperparameter("eval_metrics", "list", ("msd",), doc='JSON list of "msd", "ssd"'),
        # The SageMaker Python SDK always sends force_dense="True" for k-means; accepted, no effect.
        Hyperparameter("force_dense", "bool", True, doc="accepted for SDK compatibility; no effect"),
    )
    channels = (ChannelSpec("train", required=True), ChannelSpec("test"))
    content_types = ("application/x-recordio-protobuf", "text/csv")
    default_content_type = "application/x-recordio-protobuf"
    metrics = (
        MetricSpec("train:msd", maximize=False),
        MetricSpec("test:msd", maximize=False),
        MetricSpec("test:ssd", maximize=False),
    )
    distributed = True
    checkpointing = True
    trainer = "torch"
    # "auto": NumPy on the CPU, torch on the worker's GPU; "torch": torch on either (tests, benchmarks).
    compute: ClassVar[str] = "auto"
    # Mini-batch k-means visits the rows in another order on two workers: equivalent, not the same.
    conformance_cases = (
        ConformanceCase(
            {"k": "3", "feature_dim": "6", "mini_batch_size": "64", "epochs": "2"},
            "clusters",
            quality={"test:msd": 7.5},
            distributed_result="equivalent",
        ),
        ConformanceCase(
            {"k": "3", "feature_dim": "6", "init_method": "kmeans++"},
            "clusters",
            sparse=True,
            quality={"test:msd": 7.5},
            distributed_result="equivalent",
        ),
    )

    @classmethod
    def check_hyperparameters(cls, hp: dict[str, Any]) -> None:
        bad = [m for m in hp["eval_metrics"] if m not in _METRICS]
        if bad or not hp["eval_metrics"]:
            raise HyperparameterError(
                f"hyperparameter 'eval_metrics': {list(hp['eval_metrics'])!r} must be a non-empty list of "
                f'"msd" and/or "ssd", e.g. ["msd", "ssd"]'
            )

    # --- training --------------------------------------------------------------------------------

    def train(
        self, hp: dict[str, Any], data: TrainingData, ctx: TrainContext, model_dir: str
    ) -> dict[str, float]:
        rank, _ = st.world()
        k, dim, size = hp["k"], hp["feature_dim"], hp["mini_batch_size"]
        factor = _AUTO_CENTER_FACTOR if hp["extra_center_factor"] == "auto" else hp["extra_center_factor"]

        def stream() -> Iterator[st.Matrix]:
            return st.iter_minibatches(data, "train", size, dim)

        device = st.compute_device(ctx, "kmeans", self.compute)
        state = _load_state(ctx.load_checkpoint(), dim, k)
        first: Iterator[st.Matrix] | None = None
        if state is None:
            buffered, rest = _take_rows(stream(), max(size, k * factor))
            centers = _initial_centers(buffered, k, k * factor, hp["init_method"], ctx.seed)
            first = itertools.chain(buffered, rest)  # the sample rows are trained on like any others
            state = {"centers": centers, "counts": np.zeros(len(centers)), "epoch": 0}
            state["last_counts"], state["msd"] = np.zeros(len(centers)), math.nan
        else:
            ctx.log(f"kmeans: resuming after epoch {state['epoch']} of {hp['epochs']}")

        for epoch in range(state["epoch"], hp["epochs"]):
            batches = first if first is not None else stream()
            first = None
            _run_epoch(state, batches, hp["half_life_time_size"], device)
            state["epoch"] = epoch + 1
            ctx.report({"train:msd": state["msd"]}, step=epoch + 1)
            with tempfile.TemporaryDirectory() as tmp:
                _save_state(tmp, state)
                ctx.save_checkpoint(tmp, step=epoch + 1)

        centers = _reduce(state["centers"], state["last_counts"], k, hp, ctx.seed)
        centers = st.broadcast(centers)  # every worker keeps rank 0's copy, bit for bit
        final = {"train:msd": state["msd"]}
        if "test" in data:
            # The test channel is FullyReplicated in SageMaker: each worker scores all of it itself.
            ssd, n = _score(st.iter_minibatches(data, "test", size, dim), centers, device)
            if n:
                scores = {"test:msd": ssd / n, "test:ssd": ssd}
                final.update({f"test:{m}": scores[f"test:{m}"] for m in hp["eval_metrics"]})
                ctx.report({m: v for m, v in final.items() if m.startswith("test:")}, step=hp["epochs"])
        if rank == 0:
            self._save(model_dir, centers, hp)
        return final

    @staticmethod
    def _save(model_dir: str, centers: np.ndarray, hp: dict[str, Any]) -> None:
        os.makedirs(model_dir, exist_ok=True)
        np.save(os.path.join(model_dir, CENTERS_FILE), centers)
        meta = {
            "format": _FORMAT,
            "k": int(centers.shape[0]),
            "feature_dim": int(centers.shape[1]),
            "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
        }
        with open(os.path.join(model_dir, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)

    # --- serving ---------------------------------------------------------------------------------

    def load(self, model_dir: str) -> KMeansModel:
        path = os.path.join(model_dir, CENTERS_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"{model_dir} holds no k-means model: {CENTERS_FILE} is missing")
        centers = np.load(path)
        if centers.ndim != 2:
            raise ValueError(f"{path}: expected a (k, feature_dim) array, got shape {centers.shape}")
        return KMeansModel(centers.astype(np.float64))

    def num_features(self, model: KMeansModel) -> int:
        return model.feature_dim

    def predict(self, model: KMeansModel, batch: Batch) -> dict[str, np.ndarray]:
        self.check_features(model, batch)
        x = st.as_matrix(batch.features, model.feature_dim, "k-means input")
        d2 = st.sq_distances(x, model.centers)
        closest = d2.argmin(axis=1) if len(d2) else np.zeros(0, dtype=np.int64)
        return {
            "closest_cluster": closest.astype(np.int64),
            "distance_to_cluster": np.sqrt(d2[np.arange(len(closest)), closest]),
        }


# --- initialisation ----------------------------------------------------------------------------------


def _take_rows(batches: Iterator[st.Matrix], rows: int) -> tuple[list[st.Matrix], Iterator[st.Matrix]]:
    """The first mini-batches holding at least ``rows`` rows (fewer if the stream ends), and the rest."""
    taken: list[st.Matrix] = []
    held = 0
    for x in batches:
        taken.append(x)
        held += x.shape[0]
        if held >= rows:
            break
    return taken, batches


def _initial_centers(buffered: list[st.Matrix], k: int, want: int, method: str, seed: int) -> np.ndarray:
    """K initial centers from every worker's first rows (gathered in rank order), chosen on rank 0."""
    local = st.stack(buffered) if buffered else None
    gathered = [s for s in st.all_gather_object(local) if s is not None and s.shape[0]]
    rank, _ = st.world()
    total = sum(s.shape[0] for s in gathered)
    if total < k:
        raise ValueError(
            f"k-means needs at least k={k} rows to start from, but the train channel has {total}; "
            f"lower k or add data"
        )
    count = min(want, total)  # fewer extra centers on tiny data
    dim = gathered[0].shape[1]
    centers = np.zeros((count, dim))
    if rank == 0:
        sample = st.stack(gathered)
        rng = np.random.default_rng(seed)
        if method == "kmeans++":
            centers = _kmeans_pp(sample, np.ones(sample.shape[0]), count, rng)
        else:
            idx = rng.choice(sample.shape[0], size=count, replace=False)
            centers = _dense_rows(sample, np.sort(idx))
    return st.broadcast(centers)


def _dense_rows(x: st.Matrix, idx: np.ndarray) -> np.ndarray:
    rows = x[idx]
    return rows.toarray() if sp.issparse(rows) else np.array(rows, dtype=np.float64)


def _kmeans_pp(x: st.Matrix, weights: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on weighted points: the first center with probability proportional to weight,
    each next one proportional to weight * squared distance to the closest center chosen so far."""
    n = x.shape[0]
    chosen = [int(rng.choice(n, p=weights / weights.sum()))]
    closest = st.sq_distances(x, _dense_rows(x, np.array(chosen)))[:, 0]
    for _ in range(1, count):
        p = weights * closest
        total = p.sum()
        if total <= 0:  # every remaining point coincides with a center: take any not yet chosen
            free = np.setdiff1d(np.arange(n), chosen)
            nxt = int(rng.choice(free))
        else:
            nxt = int(rng.choice(n, p=p / total))
        chosen.append(nxt)
        closest = np.minimum(closest, st.sq_distances(x, _dense_rows(x, np.array([nxt])))[:, 0])
    return _dense_rows(x, np.array(chosen))


# --- the mini-batch epoch ----------------------------------------------------------------------------


def _run_epoch(
    state: dict[str, Any], batches: Iterator[st.Matrix], half_life: int, device: Any | None = None
) -> None:
    """One pass of mini-batch updates on this worker's shard (NumPy, or torch on ``device``), then
    (distributed) one all-reduce that leaves every worker with the centers it would have had from all
    shards' sums and counts."""
    c0, v0 = state["centers"], state["counts"]
    local = _local_pass if device is None else _local_pass_torch
    centers, counts, seen, ssd, rows = local(c0, v0, batches, half_life, device)
    _combine(state, c0, v0, centers, counts, seen, ssd, rows, half_life)


_Pass = tuple[np.ndarray, np.ndarray, np.ndarray, float, int]


def _local_pass(
    c0: np.ndarray, v0: np.ndarray, batches: Iterator[st.Matrix], half_life: int, device: Any = None
) -> _Pass:
    """Sculley's mini-batch updates over this worker's rows: (centers, counts, rows taken per center,
    sum of squared distances, rows)."""
    centers, counts = c0.copy(), v0.copy()
    seen = np.zeros(len(c0))  # rows assigned to each center this epoch (the reduction's weights)
    ssd = 0.0
    rows = 0
    for x in batches:
        b = x.shape[0]
        d2 = st.sq_distances(x, centers)
        assign = d2.argmin(axis=1)
        ssd += float(d2[np.arange(b), assign].sum())
        rows += b
        hits = np.bincount(assign, minlength=len(centers)).astype(np.float64)
        sums = st.sum_rows_by(x, assign, len(centers))
        if half_life:
            counts *= 0.5 ** (b / half_life)  # older rows weigh half after half_life newer ones
        new = counts + hits
        moved = hits > 0
        # Running (decayed) mean: per-center learning rate hits/new, Sculley's 1/count update.
        centers[moved] = (centers[moved] * counts[moved, None] + sums[moved]) / new[moved, None]
        counts = new
        seen += hits
    return centers, counts, seen, ssd, rows


def _local_pass_torch(
    c0: np.ndarray, v0: np.ndarray, batches: Iterator[st.Matrix], half_life: int, device: Any
) -> _Pass:
    """``_local_pass`` in torch on ``device``: the same float64 arithmetic, no host round trip per
    mini-batch (masks instead of boolean indexing, one sum read back at the end)."""
    import torch

    centers, counts = st.to_device(c0, device), st.to_device(v0, device)
    seen = torch.zeros(len(c0), dtype=torch.float64, device=device)
    ssd = torch.zeros((), dtype=torch.float64, device=device)
    rows = 0
    for x in batches:
        b = x.shape[0]
        xt = st.TorchRows(x, device)
        d2 = xt.sq_distances(centers)
        assign = d2.argmin(dim=1)
        ssd += d2.gather(1, assign[:, None]).sum()
        rows += b
        hits = torch.bincount(assign, minlength=len(c0)).to(torch.float64)
        sums = xt.sum_rows_by(assign, len(c0))
        if half_life:
            counts = counts * 0.5 ** (b / half_life)
        new = counts + hits
        moved = hits > 0
        updated = (centers * counts[:, None] + sums) / torch.where(moved, new, 1.0)[:, None]
        centers = torch.where(moved[:, None], updated, centers)
        counts = new
        seen += hits
    return st.to_numpy(centers), st.to_numpy(counts), st.to_numpy(seen), float(ssd), rows


def _combine(
    state: dict[str, Any],
    c0: np.ndarray,
    v0: np.ndarray,
    centers: np.ndarray,
    counts: np.ndarray,
    seen: np.ndarray,
    ssd: float,
    rows: int,
    half_life: int,
) -> None:
    """Combine workers: each one's contribution is what it added on top of the shared start."""
    decay = 0.5 ** (rows / half_life) if half_life else 1.0
    added_sum = centers * counts[:, None] - c0 * (v0 * decay)[:, None]
    added_count = counts - v0 * decay
    added_sum, added_count, seen, totals = st.allreduce_sum(added_sum, added_count, seen, [ssd, rows])
    ssd, rows = float(totals[0]), float(totals[1])
    if st.world()[1] > 1:
        keep = 0.5 ** (rows / half_life) if half_life else 1.0
        base = v0 * keep
        new = base + added_count
        moved = new > 0
        centers = c0.copy()
        centers[moved] = (c0[moved] * base[moved, None] + added_sum[moved]) / new[moved, None]
        counts = new
    state.update(centers=centers, counts=counts, last_counts=seen, msd=ssd / rows if rows else math.nan)


# --- the final reduction -----------------------------------------------------------------------------


def _reduce(centers: np.ndarray, weights: np.ndarray, k: int, hp: dict[str, Any], seed: int) -> np.ndarray:
    """k centers from the K trained ones: weighted Lloyd (best of several trials), each center weighted
    by the rows it took in the last epoch. Centers that took no rows are left out."""
    if len(centers) == k:
        return centers
    live = weights > 0
    if live.sum() <= k:  # too few centers were used to choose among: keep the most used
        return centers[np.argsort(-weights, kind="stable")[:k]]
    points, w = centers[live], weights[live]
    trials = hp["local_lloyd_num_trials"]
    if trials == "auto":
        # Cheap on K weighted points; fewer trials when K*k*d is large (about 1e8 flops per trial).
        trials = int(min(10, max(1, 1e8 // (len(points) * k * points.shape[1] * 10))))
    rng = np.random.default_rng([seed, 1])  # independent of the seeding stream, same on resume
    best, best_loss = points[:k], math.inf
    for _ in range(trials):
        c, loss = _lloyd(points, w, k, hp, rng)
        if loss < best_loss:
            best, best_loss = c, loss
    return best


def _lloyd(
    points: np.ndarray, w: np.ndarray, k: int, hp: dict[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    if hp["local_lloyd_init_method"] == "kmeans++":
        centers = _kmeans_pp(points, w, k, rng)
    else:
        centers = points[np.sort(rng.choice(len(points), size=k, replace=False))].copy()
    prev = math.inf
    loss = math.inf
    for _ in range(hp["local_lloyd_max_iter"]):
        d2 = st.sq_distances(points, centers)
        assign = d2.argmin(axis=1)
        loss = float((w * d2[np.arange(len(points)), assign]).sum())
        mass = np.bincount(assign, weights=w, minlength=k)
        sums = st.sum_rows_by(points * w[:, None], assign, k)
        filled = mass > 0  # an emptied center stays where it was
        centers[filled] = sums[filled] / mass[filled, None]
        if prev - loss <= hp["local_lloyd_tol"] * prev:
            break
        prev = loss
    d2 = st.sq_distances(points, centers)
    return centers, float((w * d2.min(axis=1)).sum())


def _score(batches: Iterator[st.Matrix], centers: np.ndarray, device: Any | None = None) -> tuple[float, int]:
    """Sum of squared distances to the closest center, and the row count (NumPy, or torch on ``device``)."""
    if device is not None:
        c = st.to_device(centers, device)
        csq_t = (c * c).sum(dim=1)
        total, n = st.to_device(np.zeros(()), device), 0
        for x in batches:
            total += st.TorchRows(x, device).sq_distances(c, csq_t).min(dim=1).values.sum()
            n += x.shape[0]
        return float(total), n
    csq = np.einsum("ij,ij->i", centers, centers)
    ssd, n = 0.0, 0
    for x in batches:
        ssd += float(st.sq_distances(x, centers, csq).min(axis=1).sum())
        n += x.shape[0]
    return ssd, n


# --- checkpoints -------------------------------------------------------------------------------------


def _save_state(path: str, state: dict[str, Any]) -> None:
    np.savez(
        os.path.join(path, _STATE_FILE),
        centers=state["centers"],
        counts=state["counts"],
        last_counts=state["last_counts"],
        epoch=state["epoch"],
        msd=state["msd"],
    )


def _load_state(path: str | None, dim: int, k: int) -> dict[str, Any] | None:
    if path is None or not os.path.isfile(os.path.join(path, _STATE_FILE)):
        return None
    with np.load(os.path.join(path, _STATE_FILE)) as z:
        state = {name: z[name] for name in z.files}
    if state["centers"].shape[1] != dim or len(state["centers"]) < k:
        raise ValueError(
            f"the checkpoint in {path} holds {len(state['centers'])} centers of {state['centers'].shape[1]} "
            f"features, which does not fit k={k}, feature_dim={dim}; start without the checkpoint or "
            "restore the hyperparameters it was trained with"
        )
    state["epoch"], state["msd"] = int(state["epoch"]), float(state["msd"])
    return state
