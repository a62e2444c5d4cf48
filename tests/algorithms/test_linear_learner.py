"""Linear Learner built-in: accuracy against scikit-learn references, hosting round trip, sparse
input, hyperparameter validation, checkpoint resume and determinism, in-process with LocalContext."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from raymaker.algorithms import HyperparameterError, get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.algorithms.linear_learner import MODEL_FILE, LinearLearner
from raymaker.algorithms.linear_learner_metrics import calibrate_threshold, roc_auc
from raymaker.io.batch import Batch

DECLARED = {m.name for m in LinearLearner.metrics}


def _split(loader, stratify: bool = True):
    """train / validation / test: the threshold and model choice are made on validation, the
    comparison with the reference on test."""
    X, y = loader(return_X_y=True)
    s = y if stratify else None
    Xa, Xte, ya, yte = train_test_split(X, y, test_size=0.25, stratify=s, random_state=0)
    Xtr, Xva, ytr, yva = train_test_split(
        Xa, ya, test_size=0.2, stratify=ya if stratify else None, random_state=0
    )
    return Xtr, Xva, Xte, ytr, yva, yte


@pytest.fixture(scope="module")
def cancer():
    return _split(load_breast_cancer)


def _chunks(X, y, size: int = 100):
    """A channel streamed in several decoded batches, as File / Pipe mode deliver them."""
    return lambda: (Batch(X[i : i + size], y[i : i + size]) for i in range(0, X.shape[0], size))


def _train(tmp_path, raw_hp: dict, ctx: LocalContext | None = None, name: str = "model", **channels):
    algo = LinearLearner()
    hp = LinearLearner.validate_hyperparameters(raw_hp)
    ctx = ctx or LocalContext()
    model_dir = str(tmp_path / name)
    final = algo.train(hp, TrainingData(channels), ctx, model_dir)
    return algo, ctx, model_dir, final


def _reported(ctx: LocalContext) -> set[str]:
    return {name for _, values in ctx.metrics for name in values}


def _scaled_logistic(Xtr, ytr, Xte, yte) -> float:
    scaler = StandardScaler().fit(Xtr)
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(Xtr), ytr)
    return model.score(scaler.transform(Xte), yte)


def test_registry_finds_linear_learner():
    assert get_algorithm("linear-learner") is LinearLearner


def test_binary_accuracy_matches_logistic_regression(tmp_path, cancer):
    Xtr, Xva, Xte, ytr, yva, yte = cancer
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": "32", "epochs": "20"}
    algo, ctx, model_dir, final = _train(
        tmp_path, hp, train=_chunks(Xtr, ytr), validation=_chunks(Xva, yva), test=_chunks(Xte, yte)
    )
    model = algo.load(model_dir)
    out = algo.predict(model, Batch(Xte))
    accuracy = float(np.mean(out["predicted_label"] == yte))
    reference = _scaled_logistic(Xtr, ytr, Xte, yte)
    assert accuracy >= reference - 0.02, (accuracy, reference)
    assert np.all((out["score"] > 0) & (out["score"] < 1))
    np.testing.assert_array_equal(out["predicted_label"], out["score"] > model["threshold"])
    # test: metrics describe the saved model on the test channel
    assert final["test:binary_classification_accuracy"] == pytest.approx(accuracy)
    assert final["test:roc_auc_score"] > 0.97
    assert {"validation:binary_f_beta", "validation:precision", "validation:recall"} <= set(final)
    assert _reported(ctx) <= DECLARED
    steps = [step for step, _ in ctx.metrics]
    assert steps == sorted(steps) and steps[0] == 0


def test_regression_rmse_near_linear_regression(tmp_path):
    Xtr, Xva, Xte, ytr, yva, yte = _split(load_diabetes, stratify=False)
    hp = {"predictor_type": "regressor", "mini_batch_size": "32", "epochs": "30"}
    algo, ctx, model_dir, final = _train(
        tmp_path, hp, train=_chunks(Xtr, ytr), validation=_chunks(Xva, yva), test=_chunks(Xte, yte)
    )
    score = algo.predict(algo.load(model_dir), Batch(Xte))["score"]
    rmse = float(np.sqrt(np.mean((score - yte) ** 2)))
    ref = LinearRegression().fit(Xtr, ytr).predict(Xte)
    ref_rmse = float(np.sqrt(np.mean((ref - yte) ** 2)))
    assert rmse <= ref_rmse * 1.10, (rmse, ref_rmse)
    assert final["test:rmse"] == pytest.approx(rmse, rel=1e-5)
    assert final["test:mse"] == pytest.approx(rmse**2, rel=1e-5)
    assert {"validation:absolute_loss", "validation:objective_loss"} <= set(final)
    assert _reported(ctx) <= DECLARED


def test_multiclass_accuracy_near_logistic_regression(tmp_path):
    Xtr, Xva, Xte, ytr, yva, yte = _split(load_digits)
    hp = {
        "predictor_type": "multiclass_classifier",
        "num_classes": "10",
        "mini_batch_size": "100",
        "epochs": "15",
    }
    algo, ctx, model_dir, final = _train(tmp_path, hp, train=_chunks(Xtr, ytr), validation=_chunks(Xva, yva))
    out = algo.predict(algo.load(model_dir), Batch(Xte))
    assert out["score"].shape == (len(yte), 10)
    np.testing.assert_allclose(out["score"].sum(axis=1), 1.0, rtol=1e-6)
    accuracy = float(np.mean(out["predicted_label"] == yte))
    reference = _scaled_logistic(Xtr, ytr, Xte, yte)
    assert accuracy >= reference - 0.03, (accuracy, reference)
    assert {"validation:multiclass_accuracy", "validation:macro_f_beta", "validation:dcg"} <= set(final)
    assert _reported(ctx) <= DECLARED


def test_sparse_training_and_prediction(tmp_path, cancer):
    Xtr, Xva, Xte, ytr, yva, yte = cancer
    sparse = sp.csr_matrix(Xtr)
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": "32", "epochs": "10"}
    algo, _, model_dir, _ = _train(
        tmp_path, hp, train=_chunks(sparse, ytr), validation=_chunks(sp.csr_matrix(Xva), yva)
    )
    model = algo.load(model_dir)
    assert model["feature_dim"] == Xtr.shape[1]
    dense = algo.predict(model, Batch(Xte))
    np.testing.assert_allclose(
        algo.predict(model, Batch(sp.csr_matrix(Xte)))["score"], dense["score"], rtol=1e-5
    )
    assert float(np.mean(dense["predicted_label"] == yte)) >= _scaled_logistic(Xtr, ytr, Xte, yte) - 0.03
    narrow = algo.predict(model, Batch(sp.csr_matrix(Xte[:, :10])))  # fewer sparse columns: padded
    assert narrow["score"].shape == (len(Xte),)
    with pytest.raises(ValueError, match="trained on 30 features; the request has 10"):
        algo.predict(model, Batch(Xte[:, :10]))  # a dense row of the wrong width is an error


def test_save_load_round_trip(tmp_path, cancer):
    Xtr, _, Xte, ytr, _, _ = cancer
    algo, _, model_dir, _ = _train(
        tmp_path, {"predictor_type": "binary_classifier", "epochs": "2"}, train=_chunks(Xtr, ytr)
    )
    import os

    assert os.listdir(model_dir) == [MODEL_FILE]
    a = algo.predict(algo.load(model_dir), Batch(Xte))
    b = algo.predict(algo.load(model_dir), Batch(Xte))
    np.testing.assert_array_equal(a["score"], b["score"])
    with pytest.raises(FileNotFoundError, match=MODEL_FILE):
        algo.load(str(tmp_path))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"predictor_type": "regressor", "epoch": "3"}, "no hyperparameter 'epoch'"),
        ({"epochs": "3"}, "needs hyperparameter 'predictor_type'"),
        ({"predictor_type": "classifier"}, "not one of"),
        ({"predictor_type": "multiclass_classifier"}, "num_classes"),
        ({"predictor_type": "multiclass_classifier", "num_classes": "2"}, "'num_classes'"),
        ({"predictor_type": "regressor", "epochs": "0"}, "'epochs'"),
        ({"predictor_type": "regressor", "learning_rate": "fast"}, "'learning_rate'"),
        ({"predictor_type": "regressor", "loss": "hinge_loss"}, "does not fit predictor_type"),
        (
            {"predictor_type": "binary_classifier", "positive_example_weight_mult": "-2"},
            "positive_example_weight",
        ),
        ({"predictor_type": "regressor", "quantile": "1"}, "'quantile'"),
        ({"predictor_type": "binary_classifier", "optimizer": "adagrad"}, "not one of"),
    ],
)
def test_hyperparameter_errors(raw, message):
    with pytest.raises(HyperparameterError, match=message):
        LinearLearner.validate_hyperparameters(raw)


def test_hyperparameter_defaults():
    hp = LinearLearner.validate_hyperparameters({"predictor_type": "binary_classifier"})
    assert (hp["epochs"], hp["mini_batch_size"], hp["optimizer"], hp["loss"]) == (15, 1000, "auto", "auto")
    assert (hp["learning_rate"], hp["feature_dim"], hp["wd"], hp["l1"], hp["num_models"]) == ("auto",) * 5
    assert hp["use_bias"] is True and hp["normalize_data"] is True and hp["early_stopping_patience"] == 3
    assert hp["binary_classifier_model_selection_criteria"] == "accuracy"
    assert LinearLearner.trainer == "torch"
    assert not LinearLearner.metric("validation:objective_loss").maximize
    assert LinearLearner.metric("test:roc_auc_score").maximize


def test_checkpoint_resume_continues_at_saved_epoch(tmp_path, cancer):
    Xtr, Xva, _, ytr, yva, _ = cancer
    ckpt = str(tmp_path / "ckpt")
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": "64", "early_stopping_patience": "50"}
    first = LocalContext(checkpoint_dir=ckpt)
    channels = {"train": _chunks(Xtr, ytr), "validation": _chunks(Xva, yva)}
    _train(tmp_path, {**hp, "epochs": "3"}, ctx=first, name="a", **channels)
    assert [step for step, _ in first.metrics] == [0, 1, 2] and first.checkpoints == [0, 1, 2]
    second = LocalContext(checkpoint_dir=ckpt)
    algo, _, model_dir, _ = _train(tmp_path, {**hp, "epochs": "6"}, ctx=second, name="b", **channels)
    assert [step for step, _ in second.metrics] == [3, 4, 5]
    assert algo.predict(algo.load(model_dir), Batch(Xva))["score"].shape == (len(yva),)


def test_early_stopping(tmp_path, cancer):
    Xtr, Xva, _, ytr, yva, _ = cancer
    hp = {
        "predictor_type": "binary_classifier",
        "epochs": "30",
        "early_stopping_patience": "1",
        "early_stopping_tolerance": "10",  # no epoch can improve by 1000 %
        "binary_classifier_model_selection_criteria": "loss_function",
    }
    _, ctx, _, _ = _train(tmp_path, hp, train=_chunks(Xtr, ytr), validation=_chunks(Xva, yva))
    assert [step for step, _ in ctx.metrics] == [0, 1]


def test_deterministic_given_seed(tmp_path, cancer):
    Xtr, _, Xte, ytr, _, _ = cancer
    hp = {"predictor_type": "binary_classifier", "mini_batch_size": "64", "epochs": "3"}
    runs = [
        _train(tmp_path, hp, ctx=LocalContext(seed=7), name=f"run{i}", train=_chunks(Xtr, ytr))
        for i in range(2)
    ]
    scores = [algo.predict(algo.load(d), Batch(Xte))["score"] for algo, _, d, _ in runs]
    np.testing.assert_array_equal(scores[0], scores[1])


@pytest.mark.parametrize(
    "loss", ["absolute_loss", "huber_loss", "quantile_loss", "eps_insensitive_squared_loss"]
)
def test_regression_losses_train(tmp_path, loss):
    Xtr, Xva, Xte, ytr, yva, yte = _split(load_diabetes, stratify=False)
    hp = {"predictor_type": "regressor", "loss": loss, "mini_batch_size": "32", "epochs": "10"}
    algo, ctx, model_dir, final = _train(tmp_path, hp, train=_chunks(Xtr, ytr), validation=_chunks(Xva, yva))
    score = algo.predict(algo.load(model_dir), Batch(Xte))["score"]
    assert float(np.sqrt(np.mean((score - yte) ** 2))) < float(np.std(yte))  # better than the mean
    assert _reported(ctx) <= DECLARED


def test_threshold_calibration_and_auc():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0])
    threshold, value = calibrate_threshold(scores, labels, "accuracy")
    # cutting after 0.8 or after 0.4 both get 5 of 6 right; the cut nearer 0.5 wins the tie
    assert value == pytest.approx(5 / 6) and 0.3 < threshold < 0.4
    threshold, value = calibrate_threshold(scores, labels, "precision_at_target_recall", target_recall=1.0)
    assert value == pytest.approx(0.75) and 0.3 < threshold < 0.4
    assert roc_auc(scores, labels) == pytest.approx(8 / 9)
    assert roc_auc(scores, np.ones(6)) is None
