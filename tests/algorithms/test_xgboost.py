"""XGBoost built-in: accuracy against scikit-learn references, hosting round trip, hyperparameter
validation, incremental training and checkpoint resume, all in-process with LocalContext."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from raymaker.algorithms import HyperparameterError, get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.algorithms.xgboost import MODEL_FILE, XGBoost
from raymaker.io.batch import Batch

DECLARED = {m.name for m in XGBoost.metrics}


def _split(loader, stratify: bool = True):
    X, y = loader(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, stratify=y if stratify else None, random_state=0)


@pytest.fixture(scope="module")
def cancer():
    return _split(load_breast_cancer)


def _train(tmp_path, raw_hp: dict, ctx: LocalContext | None = None, name: str = "model", **channels):
    algo = XGBoost()
    hp = XGBoost.validate_hyperparameters(raw_hp)
    ctx = ctx or LocalContext()
    model_dir = str(tmp_path / name)
    final = algo.train(hp, TrainingData(channels), ctx, model_dir)
    return algo, ctx, model_dir, final


def _channel(X, y):
    return lambda: iter([Batch(X, y)])


def test_registry_finds_xgboost():
    assert get_algorithm("xgboost") is XGBoost


def test_binary_accuracy_matches_hist_gradient_boosting(tmp_path, cancer):
    Xtr, Xte, ytr, yte = cancer
    algo, ctx, model_dir, final = _train(
        tmp_path,
        {"num_round": "50", "objective": "binary:logistic", "eval_metric": "logloss,auc,accuracy,f1"},
        train=_channel(Xtr, ytr),
        validation=_channel(Xte, yte),
    )
    out = algo.predict(algo.load(model_dir), Batch(Xte))
    accuracy = float(np.mean(out["predicted_label"] == yte))
    with threadpool_limits(1):  # OpenMP threads crawl on a shared 2-core box; the data is tiny
        reference = HistGradientBoostingClassifier(random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert accuracy >= reference - 0.02, (accuracy, reference)
    assert final["validation:accuracy"] == pytest.approx(accuracy, abs=1e-5)
    assert final["validation:auc"] > 0.97
    assert set(out) == {"score", "predicted_label"}
    assert np.all((out["score"] >= 0) & (out["score"] <= 1))
    # every round is reported, with declared names only
    assert [step for step, _ in ctx.metrics] == list(range(50))
    assert {name for _, values in ctx.metrics for name in values} <= DECLARED
    assert {"train:auc", "validation:auc", "validation:logloss", "validation:f1"} <= set(final)


def test_regression_matches_hist_gradient_boosting_regressor(tmp_path):
    Xtr, Xte, ytr, yte = _split(load_diabetes, stratify=False)
    hp = {
        "num_round": "200",
        "eta": "0.05",
        "max_depth": "3",
        "subsample": "0.8",
        "eval_metric": "rmse,mae,r2,mse",
    }
    algo, ctx, model_dir, final = _train(
        tmp_path, hp, train=_channel(Xtr, ytr), validation=_channel(Xte, yte)
    )
    score = algo.predict(algo.load(model_dir), Batch(Xte))["score"]
    rmse = float(np.sqrt(np.mean((score - yte) ** 2)))
    with threadpool_limits(1):
        ref = HistGradientBoostingRegressor(random_state=0).fit(Xtr, ytr).predict(Xte)
    ref_rmse = float(np.sqrt(np.mean((ref - yte) ** 2)))
    assert rmse <= ref_rmse * 1.10, (rmse, ref_rmse)
    assert final["validation:rmse"] == pytest.approx(rmse, rel=1e-4)
    assert final["validation:mse"] == pytest.approx(rmse**2, rel=1e-4)
    assert 0 < final["validation:r2"] < 1
    assert {name for _, values in ctx.metrics for name in values} <= DECLARED


def test_multiclass_softprob_near_logistic_regression(tmp_path):
    Xtr, Xte, ytr, yte = _split(load_digits)
    hp = {
        "num_round": "40",
        "objective": "multi:softprob",
        "num_class": "10",
        "eval_metric": "mlogloss,merror,accuracy",
    }
    algo, ctx, model_dir, final = _train(
        tmp_path, hp, train=_channel(Xtr, ytr), validation=_channel(Xte, yte)
    )
    out = algo.predict(algo.load(model_dir), Batch(Xte))
    assert out["score"].shape == (len(yte), 10)
    np.testing.assert_allclose(out["score"].sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(out["predicted_label"] == yte))
    scaler = StandardScaler().fit(Xtr)
    reference = (
        LogisticRegression(max_iter=2000).fit(scaler.transform(Xtr), ytr).score(scaler.transform(Xte), yte)
    )
    assert accuracy >= reference - 0.03, (accuracy, reference)
    assert final["validation:accuracy"] == pytest.approx(1 - final["validation:merror"], abs=1e-5)


def test_multiclass_softmax_predicts_labels_only(tmp_path):
    Xtr, Xte, ytr, yte = _split(load_digits)
    hp = {"num_round": "5", "objective": "multi:softmax", "num_class": "10"}
    algo, _, model_dir, _ = _train(tmp_path, hp, train=_channel(Xtr, ytr))
    out = algo.predict(algo.load(model_dir), Batch(Xte))
    assert set(out) == {"predicted_label"}
    assert out["predicted_label"].dtype == np.int64 and out["predicted_label"].max() <= 9


def test_save_load_predict_round_trip_dense_and_sparse(tmp_path, cancer):
    Xtr, Xte, ytr, _ = cancer
    train = _channel(sp.csr_matrix(Xtr), ytr)  # libsvm-style sparse training data
    algo, _, model_dir, _ = _train(tmp_path, {"num_round": "10", "objective": "binary:logistic"}, train=train)
    assert os.listdir(model_dir) == [MODEL_FILE]
    model = algo.load(model_dir)
    dense = algo.predict(model, Batch(Xte))
    sparse = algo.predict(algo.load(model_dir), Batch(sp.csr_matrix(Xte)))
    np.testing.assert_allclose(dense["score"], sparse["score"], rtol=1e-6)
    # a sparse request that names fewer columns than the model has is padded, not refused
    narrow = algo.predict(model, Batch(sp.csr_matrix(Xte[:, :20])))
    assert narrow["score"].shape == (len(Xte),)
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        algo.load(str(tmp_path))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_round": "10", "max_dpeth": "3"}, "no hyperparameter 'max_dpeth'"),
        ({"eta": "0.1"}, "needs hyperparameter 'num_round'"),
        ({"num_round": "0"}, "outside the valid range"),
        ({"num_round": "10", "eta": "1.5"}, "'eta'"),
        ({"num_round": "10", "subsample": "0"}, "'subsample'"),
        ({"num_round": "ten"}, "not an integer"),
        ({"num_round": "10", "objective": "multi:softprob"}, "num_class"),
        ({"num_round": "10", "objective": "binary:logistic", "num_class": "1"}, "'num_class'"),
        ({"num_round": "10", "objective": "reg:squaredlogerror2"}, "not one of"),
        ({"num_round": "10", "eval_metric": "bogus"}, "eval_metric 'bogus'"),
        ({"num_round": "10", "eval_metric": "auc"}, "binary: or rank:"),
        ({"num_round": "10", "eval_metric": "accuracy"}, "classification objective"),
        ({"num_round": "10", "tree_method": "gpu_exact"}, "not one of"),
    ],
)
def test_hyperparameter_errors(raw, message):
    with pytest.raises(HyperparameterError, match=message):
        XGBoost.validate_hyperparameters(raw)


def test_hyperparameter_defaults_and_aliases():
    hp = XGBoost.validate_hyperparameters(
        {"num_round": "3.0", "learning_rate": "0.1", "_tuning_objective_metric": "x"}
    )
    assert hp["num_round"] == 3 and hp["eta"] == 0.1
    assert (hp["objective"], hp["max_depth"], hp["subsample"], hp["lambda"]) == (
        "reg:squarederror",
        6,
        1.0,
        1.0,
    )
    assert hp["eval_metric"] is None and hp["csv_weights"] == 0
    assert XGBoost.default_content_type == "text/libsvm" and XGBoost.trainer == "xgboost"
    assert XGBoost.metric("validation:auc").maximize and not XGBoost.metric("validation:rmse").maximize


def test_incremental_training_continues_from_model_channel(tmp_path, cancer):
    Xtr, Xte, ytr, _ = cancer
    hp = {"num_round": "10", "objective": "binary:logistic"}
    algo, _, first_dir, _ = _train(tmp_path, hp, name="first", train=_channel(Xtr, ytr))
    hp = {"num_round": "5", "objective": "binary:logistic"}
    _, ctx, second_dir, _ = _train(tmp_path, hp, name="second", train=_channel(Xtr, ytr), model=first_dir)
    first, second = algo.load(first_dir), algo.load(second_dir)
    assert (first.num_boosted_rounds(), second.num_boosted_rounds()) == (10, 15)
    assert not np.allclose(
        algo.predict(first, Batch(Xte))["score"], algo.predict(second, Batch(Xte))["score"]
    )
    assert [step for step, _ in ctx.metrics] == list(range(5))  # steps count this job's rounds
    with pytest.raises(FileNotFoundError, match="model"):
        _train(tmp_path, hp, name="third", train=_channel(Xtr, ytr), model=str(tmp_path))


def test_checkpoint_resume_continues_at_saved_round(tmp_path, cancer):
    Xtr, _, ytr, _ = cancer
    ckpt = str(tmp_path / "ckpt")
    first = LocalContext(checkpoint_dir=ckpt)
    _train(
        tmp_path,
        {"num_round": "12", "objective": "binary:logistic"},
        ctx=first,
        name="a",
        train=_channel(Xtr, ytr),
    )
    assert first.checkpoints == [9, 11]  # every 10 rounds and the last one
    second = LocalContext(checkpoint_dir=ckpt)
    algo, _, model_dir, _ = _train(
        tmp_path,
        {"num_round": "25", "objective": "binary:logistic"},
        ctx=second,
        name="b",
        train=_channel(Xtr, ytr),
    )
    assert [step for step, _ in second.metrics] == list(range(12, 25))
    assert second.checkpoints == [19, 24]
    assert algo.load(model_dir).num_boosted_rounds() == 25


def test_early_stopping_keeps_best_rounds(tmp_path, cancer):
    Xtr, Xte, ytr, yte = cancer
    hp = {
        "num_round": "500",
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "early_stopping_rounds": "5",
    }
    algo, ctx, model_dir, _ = _train(tmp_path, hp, train=_channel(Xtr, ytr), validation=_channel(Xte, yte))
    reported = len(ctx.metrics)
    assert reported < 500
    assert algo.load(model_dir).num_boosted_rounds() == reported - 5  # best round + 1


def test_csv_weights_take_the_first_feature_column(tmp_path, cancer):
    Xtr, Xte, ytr, _ = cancer
    weighted = np.hstack([np.ones((len(Xtr), 1)), Xtr])
    algo, _, model_dir, _ = _train(
        tmp_path,
        {"num_round": "5", "objective": "binary:logistic", "csv_weights": "1"},
        train=_channel(weighted, ytr),
    )
    assert algo.load(model_dir).num_features() == Xtr.shape[1]


def test_exact_tree_method_refused_when_distributed(tmp_path, cancer):
    Xtr, _, ytr, _ = cancer
    ctx = LocalContext()
    ctx.world_size = 2
    with pytest.raises(HyperparameterError, match="hist"):
        _train(tmp_path, {"num_round": "2", "tree_method": "exact"}, ctx=ctx, train=_channel(Xtr, ytr))


def test_the_tuning_objective_is_computed_without_eval_metric():
    """SageMaker's tuner adds _tuning_objective_metric; xgboost must report it even if eval_metric
    names nothing (here validation:auc for a binary objective whose default metric is logloss)."""
    import tempfile

    from raymaker.algorithms.base import LocalContext, TrainingData
    from raymaker.io.batch import Batch

    x, y = load_breast_cancer(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.float32)
    hp = XGBoost.validate_hyperparameters(
        {"objective": "binary:logistic", "num_round": "3", "_tuning_objective_metric": "validation:auc"}
    )
    data = TrainingData.from_batches(train=Batch(x[:400], y[:400]), validation=Batch(x[400:], y[400:]))
    with tempfile.TemporaryDirectory() as model_dir:
        final = XGBoost().train(hp, data, LocalContext(), model_dir)
    assert "validation:auc" in final and final["validation:auc"] > 0.9


# --- the GPU: xgboost >= 2's device parameter, SageMaker's gpu_hist --------------------------------


def _params(device: str, **raw: str) -> dict:
    from raymaker.algorithms.xgboost import _xgb_params

    return _xgb_params(XGBoost.validate_hyperparameters({"num_round": "2", **raw}), 0, device=device)


def test_tree_method_choices_are_sagemakers():
    assert XGBoost.hyperparameter("tree_method").choices == ("auto", "exact", "approx", "hist", "gpu_hist")
    assert XGBoost.validate_hyperparameters({"num_round": "2", "tree_method": "gpu_hist"})["tree_method"] == (
        "gpu_hist"
    )


@pytest.mark.parametrize(
    "tree_method, cpu, gpu",
    [
        ("auto", "hist", "hist"),
        ("hist", "hist", "hist"),
        ("approx", "approx", "approx"),
        ("exact", "exact", "exact"),
        ("gpu_hist", None, "hist"),  # the pre-2.0 name of hist on the GPU; xgboost 3 removed it
    ],
)
def test_params_train_on_the_workers_device(tree_method, cpu, gpu):
    if cpu is not None:
        params = _params("cpu", tree_method=tree_method)
        assert params["tree_method"] == cpu and "device" not in params
    params = _params("cuda:1", tree_method=tree_method)
    assert params["tree_method"] == gpu
    # exact has no GPU implementation: it stays on the CPU of a GPU instance
    assert params.get("device") == (None if tree_method == "exact" else "cuda:1")


def test_gblinear_takes_the_device_too():
    params = _params("cuda:0", booster="gblinear")
    assert params["device"] == "cuda:0" and "tree_method" not in params


def test_gpu_hist_without_a_gpu_is_a_hyperparameter_error(tmp_path, cancer):
    hp = XGBoost.validate_hyperparameters({"num_round": "2", "tree_method": "gpu_hist"})
    with pytest.raises(
        HyperparameterError, match="'gpu_hist' trains on a GPU, but this job's instance type has none"
    ):
        _params("cpu", tree_method="gpu_hist")
    with pytest.raises(HyperparameterError, match="instance type has none"):
        XGBoost.check_gpus(hp, 0)
    XGBoost.check_gpus(hp, 1)
    Xtr, _, ytr, _ = cancer
    with pytest.raises(HyperparameterError, match="instance type has none"):
        _train(tmp_path, {"num_round": "2", "tree_method": "gpu_hist"}, train=_channel(Xtr, ytr))


def test_sagemakers_own_keys_are_not_xgboost_params():
    params = _params("cpu", _tuning_objective_metric="validation:auc")
    assert not any(k.startswith("_") for k in params)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="this machine has CUDA")
def test_gpus_assigned_without_cuda_fail_clearly(tmp_path, cancer):
    from raymaker.algorithms.devices import DeviceError

    Xtr, _, ytr, _ = cancer
    with pytest.raises(DeviceError, match="no usable CUDA"):
        _train(tmp_path, {"num_round": "2"}, ctx=LocalContext(gpus=[0]), train=_channel(Xtr, ytr))
