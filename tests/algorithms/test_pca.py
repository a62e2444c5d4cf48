"""PCA against scikit-learn's PCA / TruncatedSVD on its bundled datasets, plus streaming, sparse input,
checkpoints, hyperparameter validation and a real two-process torch.distributed run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.linalg import subspace_angles
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA as SkPCA
from sklearn.decomposition import TruncatedSVD

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import HyperparameterError, LocalContext, TrainingData
from raymaker.algorithms.pca import COMPONENTS_FILE, MEAN_FILE, META_FILE, PCA, SINGULAR_FILE, VARIANCE_FILE
from raymaker.io.batch import Batch
from raymaker.testing.distributed import Job, run_distributed


def hp_for(x: np.ndarray, n: int, **extra: str) -> dict[str, str]:
    return {"num_components": str(n), "feature_dim": str(x.shape[1]), "mini_batch_size": "256", **extra}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data


def fit(raw: dict[str, str], tmp_path, seed: int = 0, ctx: LocalContext | None = None, **channels):
    """Train with string hyperparameters; returns (final metrics, loaded model, context)."""
    ctx = ctx or LocalContext(seed=seed)
    model_dir = tmp_path / f"model-{len(os.listdir(tmp_path))}"
    data = channels.pop("data", None) or TrainingData.from_batches(**channels)
    final = PCA().train(PCA.validate_hyperparameters(raw), data, ctx, str(model_dir))
    return final, PCA().load(str(model_dir)), ctx


def project(model, x) -> np.ndarray:
    return PCA().predict(model, Batch(x))["projection"]


def assert_same_up_to_sign(a: np.ndarray, b: np.ndarray, **tol) -> None:
    """Columns of ``a`` equal those of ``b`` up to each column's sign."""
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a * signs, b, **tol)


def test_registered():
    assert get_algorithm("pca") is PCA
    assert PCA.trainer == "torch" and PCA.distributed


@pytest.mark.parametrize("dataset, n", [("digits", 10), ("breast_cancer", 5)])
def test_regular_matches_sklearn(dataset, n, tmp_path):
    x = load_digits().data if dataset == "digits" else load_breast_cancer().data
    sk = SkPCA(n_components=n, svd_solver="full").fit(x)
    final, model, _ = fit(hp_for(x, n), tmp_path, train=Batch(x))
    assert subspace_angles(model.components.T, sk.components_.T).max() < 1e-6
    np.testing.assert_allclose(model.explained_variance, sk.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(model.mean, sk.mean_, rtol=1e-10)
    assert final["train:explained_variance_ratio"] == pytest.approx(
        sk.explained_variance_ratio_.sum(), rel=1e-6
    )
    out = project(model, x)
    assert out.shape == (len(x), n)
    scale = np.abs(sk.transform(x)).max()
    assert_same_up_to_sign(out, sk.transform(x), atol=1e-6 * scale)


def test_randomized_close_to_sklearn(digits, tmp_path):
    sk = SkPCA(n_components=10, svd_solver="full").fit(digits)
    for seed in (0, 1):
        final, model, _ = fit(
            hp_for(digits, 10, algorithm_mode="randomized"), tmp_path, seed, train=Batch(digits)
        )
        np.testing.assert_allclose(model.explained_variance, sk.explained_variance_, rtol=0.02)
        ratio = final["train:explained_variance_ratio"]
        assert ratio == pytest.approx(sk.explained_variance_ratio_.sum(), rel=0.005)
        # the leading, well-separated components are essentially exact
        assert subspace_angles(model.components[:5].T, sk.components_[:5].T).max() < 0.05
        np.testing.assert_allclose(np.linalg.norm(model.components, axis=1), 1.0, rtol=1e-10)


def test_no_mean_subtraction_matches_truncated_svd(digits, tmp_path):
    svd = TruncatedSVD(n_components=8, algorithm="arpack").fit(digits)
    _, model, _ = fit(hp_for(digits, 8, subtract_mean="false"), tmp_path, train=Batch(digits))
    assert not model.mean.any()
    assert subspace_angles(model.components.T, svd.components_.T).max() < 1e-6
    singular = np.load(tmp_path / "model-0" / SINGULAR_FILE)
    np.testing.assert_allclose(singular, svd.singular_values_, rtol=1e-6)
    assert_same_up_to_sign(project(model, digits), svd.transform(digits), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_csr_equals_dense(mode, digits, tmp_path):
    raw = hp_for(digits, 6, algorithm_mode=mode)
    _, dense, _ = fit(raw, tmp_path, train=Batch(digits))
    _, sparse, _ = fit(raw, tmp_path, train=Batch(sp.csr_matrix(digits)))
    np.testing.assert_allclose(sparse.components, dense.components, atol=1e-9)
    np.testing.assert_allclose(sparse.explained_variance, dense.explained_variance, rtol=1e-9)
    np.testing.assert_allclose(
        project(dense, sp.csr_matrix(digits[:40])), project(dense, digits[:40]), atol=1e-9
    )


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_streaming_batches_equal_one_batch(mode, digits, tmp_path):
    """Mini-batches are cut by mini_batch_size, whatever the channel's Batches; labels are ignored."""
    edges = [0, 1, 100, 257, 1000, 1001, len(digits)]
    pieces = [Batch(digits[a:b], np.zeros(b - a)) for a, b in zip(edges, edges[1:])]
    raw = hp_for(digits, 6, algorithm_mode=mode)
    _, one, _ = fit(raw, tmp_path, train=Batch(digits))
    _, many, _ = fit(raw, tmp_path, data=TrainingData({"train": lambda: iter(pieces)}))
    np.testing.assert_allclose(many.components, one.components, atol=1e-12)


def test_test_channel_metrics(digits, tmp_path):
    final, model, ctx = fit(hp_for(digits, 10), tmp_path, train=Batch(digits), test=Batch(digits))
    # scored on the training rows themselves, the test ratio is the training one
    assert final["test:explained_variance_ratio"] == pytest.approx(final["train:explained_variance_ratio"])
    centered = digits - model.mean
    residual = centered - project(model, digits) @ model.components
    assert final["test:reconstruction_error"] == pytest.approx((residual**2).sum(axis=1).mean(), rel=1e-9)
    declared = {m.name for m in PCA.metrics}
    assert {k for _, m in ctx.metrics for k in m} <= declared


def test_save_load_predict(digits, tmp_path):
    fit(hp_for(digits, 4), tmp_path, train=Batch(digits))
    model_dir = tmp_path / "model-0"
    files = {COMPONENTS_FILE, MEAN_FILE, VARIANCE_FILE, SINGULAR_FILE, META_FILE}
    assert set(os.listdir(model_dir)) == files
    meta = json.loads((model_dir / META_FILE).read_text())
    assert meta["num_components"] == 4 and meta["feature_dim"] == 64 and meta["n_samples"] == len(digits)
    model = PCA().load(str(model_dir))
    out = project(model, digits[:3])
    np.testing.assert_allclose(out, (digits[:3] - model.mean) @ model.components.T, rtol=1e-12)
    # sign convention: each component's largest-magnitude entry is positive
    idx = np.abs(model.components).argmax(axis=1)
    assert (model.components[np.arange(4), idx] > 0).all()
    with pytest.raises(ValueError, match="trained on 64 features; the request has 10"):
        project(model, digits[:2, :10])
    with pytest.raises(ValueError, match="no PCA model"):
        PCA().load(str(tmp_path))


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_checkpoint_resume(mode, digits, tmp_path):
    raw = hp_for(digits, 5, algorithm_mode=mode)
    ckpt = LocalContext(checkpoint_dir=str(tmp_path / "ckpt"))
    _, fresh, _ = fit(raw, tmp_path, ctx=ckpt, train=Batch(digits))
    assert ckpt.checkpoints == ([1] if mode == "regular" else [1, 2, 3])
    resumed_ctx = LocalContext(checkpoint_dir=str(tmp_path / "ckpt"))
    if mode == "regular":
        # the checkpoint holds the whole pass: the data is not read again
        def unreadable():
            raise AssertionError("train channel read after resuming from a complete pass")

        data = TrainingData({"train": unreadable})
    else:
        data = TrainingData.from_batches(train=Batch(digits))
    _, resumed, _ = fit(raw, tmp_path, ctx=resumed_ctx, data=data)
    np.testing.assert_allclose(resumed.components, fresh.components, atol=1e-12)


def test_hyperparameter_validation():
    base = {"feature_dim": "10", "mini_batch_size": "100", "num_components": "3"}
    hp = PCA.validate_hyperparameters(base)
    assert hp["algorithm_mode"] == "regular" and hp["subtract_mean"] is True and hp["extra_components"] == -1
    bad = [
        ({"mini_batch_size": "100", "num_components": "3"}, "'feature_dim'"),
        ({"feature_dim": "10", "num_components": "3"}, "'mini_batch_size'"),
        ({"feature_dim": "10", "mini_batch_size": "100"}, "'num_components'"),
        ({**base, "num_components": "11"}, "num_components"),
        ({**base, "num_components": "0"}, "num_components"),
        ({**base, "algorithm_mode": "fast"}, "algorithm_mode"),
        ({**base, "extra_components": "-2"}, "extra_components"),
        ({**base, "subtract_mean": "maybe"}, "subtract_mean"),
        ({**base, "k": "3"}, "'k'"),
    ]
    for raw, needle in bad:
        with pytest.raises(HyperparameterError, match=needle):
            PCA.validate_hyperparameters(raw)


def test_too_few_rows(tmp_path):
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit(
            {"feature_dim": "3", "mini_batch_size": "10", "num_components": "1"},
            tmp_path,
            train=Batch(np.ones((1, 3))),
        )


def test_distributed_equals_single_process(digits, tmp_path):
    """Two gloo workers on disjoint shards (one dense, one sparse) end with the model a single process
    fits on the union, in both modes; only rank 0 writes the model."""
    shards = [digits[:1100], sp.csr_matrix(digits[1100:])]
    jobs = [
        Job(mode, "pca", hp_for(digits, 10, algorithm_mode=mode), shards, replicated={"test": digits})
        for mode in ("regular", "randomized")
    ]
    results = run_distributed(jobs, str(tmp_path / "dist"))
    for job, result in zip(jobs, results):
        r0, r1 = result["ranks"]
        assert r0["final"] == pytest.approx(r1["final"], rel=1e-12)
        assert os.listdir(tmp_path / "dist" / job.tag / "model-1") == []
        dist_model = PCA().load(result["model_dir"])
        final, single, _ = fit(job.hyperparameters, tmp_path, train=Batch(digits))
        np.testing.assert_allclose(dist_model.components, single.components, atol=1e-9)
        np.testing.assert_allclose(dist_model.explained_variance, single.explained_variance, rtol=1e-9)
        np.testing.assert_allclose(dist_model.mean, single.mean, rtol=1e-12)
        assert r0["final"]["train:explained_variance_ratio"] == pytest.approx(
            final["train:explained_variance_ratio"], rel=1e-9
        )
