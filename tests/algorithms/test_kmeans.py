"""k-means against scikit-learn's KMeans on its bundled datasets, plus streaming, sparse input,
checkpoints, hyperparameter validation and a real two-process torch.distributed run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.metrics import adjusted_rand_score

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import HyperparameterError, LocalContext, TrainingData
from raymaker.algorithms.kmeans import CENTERS_FILE, META_FILE, KMeans
from raymaker.io.batch import Batch
from raymaker.testing.distributed import Job, run_distributed

DIGITS_HP = {
    "k": "10",
    "feature_dim": "64",
    "init_method": "kmeans++",
    "epochs": "5",
    "mini_batch_size": "500",
}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def sk_digits(digits) -> SkKMeans:
    return SkKMeans(n_clusters=10, n_init=10, random_state=0).fit(digits[0])


def fit(raw: dict[str, str], tmp_path, seed: int = 0, ctx: LocalContext | None = None, **channels):
    """Train with string hyperparameters; returns (final metrics, loaded model, context)."""
    ctx = ctx or LocalContext(seed=seed)
    model_dir = tmp_path / f"model-{len(os.listdir(tmp_path))}"
    data = channels.pop("data", None) or TrainingData.from_batches(**channels)
    final = KMeans().train(KMeans.validate_hyperparameters(raw), data, ctx, str(model_dir))
    return final, KMeans().load(str(model_dir)), ctx


def inertia(model, x) -> float:
    return float((KMeans().predict(model, Batch(x))["distance_to_cluster"] ** 2).sum())


def test_registered():
    assert get_algorithm("kmeans") is KMeans
    assert KMeans.trainer == "torch" and KMeans.distributed


def test_digits_matches_sklearn(digits, sk_digits, tmp_path):
    x, y = digits
    final, model, ctx = fit(DIGITS_HP, tmp_path, train=Batch(x))
    ours = inertia(model, x)
    assert ours <= 1.10 * sk_digits.inertia_, (ours, sk_digits.inertia_)
    labels = KMeans().predict(model, Batch(x))["closest_cluster"]
    assert adjusted_rand_score(y, labels) >= adjusted_rand_score(y, sk_digits.labels_) - 0.1
    assert adjusted_rand_score(sk_digits.labels_, labels) >= 0.7
    # train:msd once per epoch, against the working centers
    assert [step for step, m in ctx.metrics if "train:msd" in m] == [1, 2, 3, 4, 5]
    assert final["train:msd"] > 0


def test_breast_cancer_matches_sklearn(tmp_path):
    x = load_breast_cancer().data
    sk = SkKMeans(n_clusters=3, n_init=10, random_state=0).fit(x)
    raw = {"k": "3", "feature_dim": "30", "epochs": "3", "mini_batch_size": "100", "init_method": "kmeans++"}
    _, model, _ = fit(raw, tmp_path, train=Batch(x))
    assert inertia(model, x) <= 1.10 * sk.inertia_


def test_digits_default_random_init(digits, sk_digits, tmp_path):
    x, _ = digits
    _, model, _ = fit({"k": "10", "feature_dim": "64", "mini_batch_size": "100"}, tmp_path, train=Batch(x))
    assert inertia(model, x) <= 1.10 * sk_digits.inertia_


def test_test_channel_metrics(digits, tmp_path):
    x, _ = digits
    raw = {**DIGITS_HP, "epochs": "1", "eval_metrics": '["msd", "ssd"]'}
    final, model, ctx = fit(raw, tmp_path, train=Batch(x[:1500]), test=Batch(x[1500:]))
    ssd = inertia(model, x[1500:])
    assert final["test:ssd"] == pytest.approx(ssd, rel=1e-9)
    assert final["test:msd"] == pytest.approx(ssd / len(x[1500:]), rel=1e-9)
    assert ctx.final_metrics() == pytest.approx(final)
    # the default eval_metrics is ["msd"]
    final, _, _ = fit(
        {**raw, "eval_metrics": '["msd"]'}, tmp_path, train=Batch(x[:1500]), test=Batch(x[1500:])
    )
    assert "test:msd" in final and "test:ssd" not in final


def test_csr_equals_dense(digits, tmp_path):
    x, _ = digits
    for init in ("random", "kmeans++"):
        raw = {**DIGITS_HP, "init_method": init, "epochs": "2"}
        _, dense, _ = fit(raw, tmp_path, train=Batch(x))
        _, sparse, _ = fit(raw, tmp_path, train=Batch(sp.csr_matrix(x)))
        np.testing.assert_allclose(sparse.centers, dense.centers, rtol=1e-9, atol=1e-9)
    # predict takes CSR too
    out_d = KMeans().predict(dense, Batch(x[:50]))
    out_s = KMeans().predict(dense, Batch(sp.csr_matrix(x[:50])))
    np.testing.assert_array_equal(out_d["closest_cluster"], out_s["closest_cluster"])
    np.testing.assert_allclose(out_d["distance_to_cluster"], out_s["distance_to_cluster"], rtol=1e-9)


def test_streaming_batches_equal_one_batch(digits, tmp_path):
    """Mini-batches are cut by mini_batch_size, not by how the channel happens to split its rows;
    labels on the batches are ignored."""
    x, y = digits
    edges = [0, 7, 300, 301, 999, 1500, len(x)]
    pieces = [Batch(x[a:b], y[a:b]) for a, b in zip(edges, edges[1:])]
    streamed = TrainingData({"train": lambda: iter(pieces)})
    _, one, _ = fit(DIGITS_HP, tmp_path, train=Batch(x))
    _, many, _ = fit(DIGITS_HP, tmp_path, data=streamed)
    np.testing.assert_allclose(many.centers, one.centers, rtol=1e-12, atol=1e-12)


def test_save_load_predict(digits, tmp_path):
    x, _ = digits
    fit(DIGITS_HP, tmp_path, train=Batch(x))
    model_dir = tmp_path / "model-0"
    assert sorted(os.listdir(model_dir)) == sorted([CENTERS_FILE, META_FILE])
    meta = json.loads((model_dir / META_FILE).read_text())
    assert meta["k"] == 10 and meta["feature_dim"] == 64
    model = KMeans().load(str(model_dir))
    out = KMeans().predict(model, Batch(x[:20]))
    assert out["closest_cluster"].dtype.kind == "i" and out["closest_cluster"].shape == (20,)
    expected = np.linalg.norm(x[:20, None, :] - model.centers[None], axis=2)
    np.testing.assert_array_equal(out["closest_cluster"], expected.argmin(axis=1))
    np.testing.assert_allclose(out["distance_to_cluster"], expected.min(axis=1), rtol=1e-9)
    with pytest.raises(ValueError, match="trained on 64 features; the request has 10"):
        KMeans().predict(model, Batch(x[:5, :10]))
    with pytest.raises(ValueError, match="no k-means model"):
        KMeans().load(str(tmp_path))


def test_deterministic_given_seed(digits, tmp_path):
    x, _ = digits
    raw = {**DIGITS_HP, "init_method": "random", "epochs": "1"}
    _, a, _ = fit(raw, tmp_path, seed=7, train=Batch(x))
    _, b, _ = fit(raw, tmp_path, seed=7, train=Batch(x))
    _, c, _ = fit(raw, tmp_path, seed=8, train=Batch(x))
    np.testing.assert_array_equal(a.centers, b.centers)
    assert not np.array_equal(a.centers, c.centers)


def test_checkpoint_resume_matches_uninterrupted(digits, tmp_path):
    x, _ = digits
    _, fresh, _ = fit(DIGITS_HP, tmp_path, train=Batch(x))
    ckpt = tmp_path / "ckpt"
    ctx = LocalContext(checkpoint_dir=str(ckpt), seed=0)
    fit({**DIGITS_HP, "epochs": "3"}, tmp_path, ctx=ctx, train=Batch(x))  # "interrupted" after 3 epochs
    assert ctx.checkpoints == [1, 2, 3]
    ctx = LocalContext(checkpoint_dir=str(ckpt), seed=0)
    _, resumed, _ = fit(DIGITS_HP, tmp_path, ctx=ctx, train=Batch(x))
    assert ctx.checkpoints == [4, 5]
    np.testing.assert_allclose(resumed.centers, fresh.centers, rtol=1e-12, atol=1e-12)


def test_extra_centers_and_half_life(digits, sk_digits, tmp_path):
    x, _ = digits
    for extra in ("1", "4"):
        _, model, _ = fit({**DIGITS_HP, "extra_center_factor": extra}, tmp_path, train=Batch(x))
        assert model.centers.shape == (10, 64)
        assert inertia(model, x) <= 1.15 * sk_digits.inertia_
    _, model, _ = fit({**DIGITS_HP, "half_life_time_size": "500", "local_lloyd_init_method": "random",
                       "local_lloyd_num_trials": "3"}, tmp_path, train=Batch(x))  # fmt: skip
    assert inertia(model, x) <= 1.15 * sk_digits.inertia_


def test_hyperparameter_validation():
    base = {"k": "3", "feature_dim": "4"}
    hp = KMeans.validate_hyperparameters(base)
    assert hp["mini_batch_size"] == 5000 and hp["epochs"] == 1 and hp["init_method"] == "random"
    assert hp["extra_center_factor"] == "auto" and hp["local_lloyd_num_trials"] == "auto"
    assert hp["local_lloyd_max_iter"] == 300 and hp["local_lloyd_tol"] == 0.0001
    assert hp["local_lloyd_init_method"] == "kmeans++" and hp["half_life_time_size"] == 0
    assert list(hp["eval_metrics"]) == ["msd"]
    # what the SageMaker Python SDK sends
    KMeans.validate_hyperparameters({**base, "force_dense": "True", "mini_batch_size": "500", "epochs": "2"})
    bad = [
        ({"feature_dim": "4"}, "'k'"),
        ({"k": "3"}, "'feature_dim'"),
        ({**base, "k": "0"}, "'k'"),
        ({**base, "bogus": "1"}, "bogus"),
        ({**base, "init_method": "kmeans||"}, "init_method"),
        ({**base, "local_lloyd_tol": "2"}, "local_lloyd_tol"),
        ({**base, "extra_center_factor": "0"}, "extra_center_factor"),
        ({**base, "local_lloyd_num_trials": "many"}, "local_lloyd_num_trials"),
        ({**base, "eval_metrics": '["msd", "rmse"]'}, "eval_metrics"),
        ({**base, "half_life_time_size": "-1"}, "half_life_time_size"),
    ]
    for raw, needle in bad:
        with pytest.raises(HyperparameterError, match=needle):
            KMeans.validate_hyperparameters(raw)


def test_data_errors(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 4))
    with pytest.raises(ValueError, match="at least k=10 rows"):
        fit({"k": "10", "feature_dim": "4"}, tmp_path, train=Batch(x))
    with pytest.raises(ValueError, match="feature_dim is 3"):
        fit({"k": "2", "feature_dim": "3"}, tmp_path, train=Batch(x))


def test_distributed_two_workers(digits, tmp_path):
    """Two gloo workers, each on half the rows: both end with the same centers (same test scores), only
    rank 0 writes the model, and it clusters the union about as well as one process does."""
    x, _ = digits
    raw = {**DIGITS_HP, "epochs": "3", "mini_batch_size": "200"}
    (result,) = run_distributed(
        [Job("km", "kmeans", raw, [x[:900], x[900:]], replicated={"test": x})], str(tmp_path / "dist")
    )
    r0, r1 = result["ranks"]
    assert r0["final"] == r1["final"]  # all-reduced train:msd; test:msd from each rank's own centers
    assert [s for s, m in r0["reported"] if "train:msd" in m] == [1, 2, 3]
    assert os.listdir(tmp_path / "dist" / "km" / "model-1") == []
    model = KMeans().load(result["model_dir"])
    assert r0["final"]["test:msd"] == pytest.approx(inertia(model, x) / len(x), rel=1e-9)
    _, single, _ = fit(raw, tmp_path, train=Batch(x))
    assert inertia(model, x) <= 1.10 * inertia(single, x)
