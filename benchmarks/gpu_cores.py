"""The training cores of linear-learner, k-means and PCA on a GPU against the same cores on the CPU.

No Ray and no xgboost: each algorithm's ``train`` runs in this process with a ``LocalContext``, once
as a CPU instance (no GPUs: linear-learner in torch on the CPU, k-means and PCA in NumPy) and once on
the device, a ``LocalContext(gpus=[0])`` as the engine gives a worker of a GPU instance type. Without
CUDA the device run is the CPU in torch (k-means and PCA with ``compute="torch"``), which checks the
torch path against the NumPy one. Needs torch, NumPy and scikit-learn (an independent PCA reference),
plus what ``import raymaker`` itself needs.

Data: synthetic, ``--rows`` x ``--features`` float32/float64 (``--sparse``: CSR with ~80% zeros).
linear-learner: a binary classifier (8 models side by side, as SageMaker's "auto"), compared by
validation accuracy; k-means: 10 clusters (20 trained, reduced), compared by inertia on the data; PCA:
10 components, compared by explained variance ratio, component subspace, and scikit-learn's PCA.

Reported: device, seconds of each run, the speed-up, the compared values and whether they agree.
Exits 1 if any check fails.

    python benchmarks/gpu_cores.py [--rows 100000] [--features 50] [--sparse] [--epochs 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from raymaker.algorithms.base import Algorithm, LocalContext, TrainingData
from raymaker.algorithms.kmeans import KMeans
from raymaker.algorithms.linear_learner import LinearLearner
from raymaker.algorithms.pca import PCA
from raymaker.io.batch import Batch


def make_data(rows: int, features: int, sparse: bool, seed: int = 0) -> dict[str, Any]:
    """Clustered rows on a low-rank subspace plus noise, and a binary label from a linear rule."""
    rng = np.random.default_rng(seed)
    rank = min(10, features)
    basis = rng.normal(size=(rank, features))
    centers = rng.normal(scale=4.0, size=(10, rank))
    latent = centers[rng.integers(0, 10, size=rows)] + rng.normal(size=(rows, rank))
    x = latent @ basis + 0.5 * rng.normal(size=(rows, features))
    w = rng.normal(size=features)
    y = (x @ w + 2.0 * rng.normal(size=rows) > 0).astype(np.float32)
    if sparse:
        x[np.abs(x) < np.quantile(np.abs(x), 0.8)] = 0.0
        x = sp.csr_matrix(x)
    return {"x": x, "y": y, "features": features}


def train(algo_cls: type[Algorithm], hp: dict[str, str], data: TrainingData, ctx: LocalContext, compute: str):
    """(final metrics, loaded model, seconds) of one training run in this process."""
    algo = algo_cls()
    if hasattr(algo_cls, "compute"):
        algo.compute = compute
    with tempfile.TemporaryDirectory() as model_dir:
        t0 = time.perf_counter()
        final = algo.train(algo_cls.validate_hyperparameters(hp), data, ctx, model_dir)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        model = algo.load(model_dir)
    return final, model, seconds


def inertia(model: Any, x: Any) -> float:
    return float((KMeans().predict(model, Batch(x))["distance_to_cluster"] ** 2).sum())


def subspace_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine of the principal angles between two row spaces (1: the same subspace)."""
    qa, qb = np.linalg.qr(a.T)[0], np.linalg.qr(b.T)[0]
    return float(np.linalg.svd(qa.T @ qb, compute_uv=False).min())


def warm_up(features: int, sparse: bool, device_ctx: Callable[[], LocalContext], compute: str) -> None:
    """One small untimed run of each algorithm on each side: imports, CUDA kernels' first loads."""
    d = make_data(2000, features, sparse, seed=1)
    x, y = d["x"], d["y"]
    jobs = [
        (
            LinearLearner,
            {"predictor_type": "binary_classifier", "epochs": "1"},
            Batch(x.astype(np.float32), y),
        ),
        (KMeans, {"k": "3", "feature_dim": str(features)}, Batch(x)),
        (PCA, {"num_components": "2", "feature_dim": str(features), "mini_batch_size": "500"}, Batch(x)),
        (
            PCA,
            {
                "num_components": "2",
                "feature_dim": str(features),
                "mini_batch_size": "500",
                "algorithm_mode": "randomized",
            },
            Batch(x),
        ),
    ]
    for algo_cls, hp, batch in jobs:
        for ctx, c in ((LocalContext(), "auto"), (device_ctx(), compute)):
            train(algo_cls, hp, TrainingData.from_batches(train=batch), ctx, c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--sparse", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device_ctx: Callable[[], LocalContext]
    if cuda:
        device_ctx, device_name, compute = (lambda: LocalContext(seed=1, gpus=[0])), "cuda:0", "auto"
        torch.ones(1, device="cuda") @ torch.ones(1, device="cuda")  # CUDA's start-up, not timed
        label = f"cuda:0 ({torch.cuda.get_device_name(0)})"
    else:
        device_ctx, device_name, compute = (lambda: LocalContext(seed=1)), "torch-cpu", "torch"
        label = "cpu (no CUDA: torch on the CPU against the CPU path)"
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"device: {label}")
    kind = "sparse CSR" if args.sparse else "dense"
    print(f"data: {args.rows} x {args.features} {kind}, {args.epochs} epoch(s)\n")

    warm_up(args.features, args.sparse, device_ctx, compute)
    d = make_data(args.rows, args.features, args.sparse)
    x, y, n_val = d["x"], d["y"], max(args.rows // 10, 1)
    x32 = x.astype(np.float32)
    rows: list[tuple[str, float, float, str, str, bool]] = []

    # linear-learner: validation accuracy of the chosen model
    hp = {
        "predictor_type": "binary_classifier",
        "epochs": str(args.epochs),
        "mini_batch_size": "1000",
        "feature_dim": str(args.features),
    }
    data = TrainingData.from_batches(
        train=Batch(x32[n_val:], y[n_val:]), validation=Batch(x32[:n_val], y[:n_val])
    )
    results = [train(LinearLearner, hp, data, ctx, compute) for ctx in (LocalContext(seed=1), device_ctx())]
    acc = [r[0]["validation:binary_classification_accuracy"] for r in results]
    ok = abs(acc[0] - acc[1]) <= 0.01
    rows.append(
        ("linear-learner", results[0][2], results[1][2], "val. accuracy", f"{acc[0]:.4f} / {acc[1]:.4f}", ok)
    )

    # k-means: inertia of the final centers on all rows
    hp = {
        "k": "10",
        "feature_dim": str(args.features),
        "mini_batch_size": "5000",
        "epochs": str(args.epochs),
        "init_method": "kmeans++",
    }
    data = TrainingData.from_batches(train=Batch(x))
    results = [
        train(KMeans, hp, data, ctx, c)
        for ctx, c in ((LocalContext(seed=1), "auto"), (device_ctx(), compute))
    ]
    inert = [inertia(r[1], x) for r in results]
    ok = abs(inert[0] - inert[1]) <= 1e-4 * inert[0]
    rows.append(("kmeans", results[0][2], results[1][2], "inertia", f"{inert[0]:.6g} / {inert[1]:.6g}", ok))

    # PCA, both modes: explained variance ratio, the subspace, and scikit-learn's answer
    dense = x.toarray() if sp.issparse(x) else x
    from sklearn.decomposition import PCA as SkPCA

    reference = float(SkPCA(n_components=10, svd_solver="full").fit(dense).explained_variance_ratio_.sum())
    for mode in ("regular", "randomized"):
        hp = {
            "num_components": "10",
            "feature_dim": str(args.features),
            "mini_batch_size": "5000",
            "algorithm_mode": mode,
        }
        data = TrainingData.from_batches(train=Batch(x))
        results = [
            train(PCA, hp, data, ctx, c)
            for ctx, c in ((LocalContext(seed=1), "auto"), (device_ctx(), compute))
        ]
        evr = [r[0]["train:explained_variance_ratio"] for r in results]
        cos = subspace_cosine(results[0][1].components, results[1][1].components)
        ok = abs(evr[0] - evr[1]) <= 1e-6 and cos >= 1 - 1e-6 and abs(evr[1] - reference) <= 1e-3
        values = f"{evr[0]:.6f} / {evr[1]:.6f} (sklearn {reference:.6f}, subspace cos {cos:.8f})"
        rows.append((f"pca {mode}", results[0][2], results[1][2], "explained var.", values, ok))

    print(
        f"{'algorithm':<16}{'cpu s':>8}{device_name + ' s':>13}{'speed-up':>10}  {'compared':<15}cpu / device"
    )
    for name, t_cpu, t_dev, what, values, ok in rows:
        flag = "ok" if ok else "MISMATCH"
        print(f"{name:<16}{t_cpu:>8.2f}{t_dev:>13.2f}{t_cpu / t_dev:>9.2f}x  {what:<15}{values}  {flag}")
    failed = [r[0] for r in rows if not r[5]]
    print("\nall checks passed" if not failed else f"\nchecks failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
