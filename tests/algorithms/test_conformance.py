"""Every registered built-in algorithm passes the same conformance checks: one test per (algorithm,
check), generated from what each algorithm declares (a check that does not apply is not generated)."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp

import raymaker.algorithms
from raymaker.algorithms import (
    algorithm_names,
    get_algorithm,
    register_algorithm,
    registered_algorithm,
    unregister_algorithm,
)
from raymaker.algorithms.base import Hyperparameter, HyperparameterError, TrainingData
from raymaker.testing import conformance


@pytest.mark.parametrize(
    "name, check",
    [pytest.param(n, c, id=f"{n}-{c}") for n, c in conformance.iter_checks(algorithm_names())],
)
def test_conformance(name: str, check: str) -> None:
    conformance.run_check(name, check)


def test_checks_follow_the_declarations() -> None:
    assert "check_incremental" in conformance.checks_for("xgboost")
    for name in ("linear-learner", "kmeans", "pca"):
        assert "check_incremental" not in conformance.checks_for(name)
    for name in algorithm_names():
        assert {"check_checkpoint_resume", "check_distributed_equals_single"} <= set(
            conformance.checks_for(name)
        )
    with pytest.raises(ValueError, match="check_incremental"):
        conformance.run_check("pca", "check_incremental")


def test_no_case_fails_the_declarations() -> None:
    class Undeclared(get_algorithm("pca")):
        name = "undeclared"
        conformance_cases = ()

    with pytest.raises(AssertionError, match="declare at least one ConformanceCase"):
        conformance.run_check(Undeclared, "check_declarations")


class _NoResume(get_algorithm("pca")):
    """Checkpoints but never looks at them: starts over after an interruption."""

    def train(self, hp, data, ctx, model_dir):
        ctx.load_checkpoint = lambda: None
        return super().train(hp, data, ctx, model_dir)


class _NoFeatureCheck(get_algorithm("pca")):
    """Scores whatever width it is given."""

    def predict(self, model, batch):
        x = np.asarray(batch.features.toarray() if sp.issparse(batch.features) else batch.features)
        return {"projection": x[:, : model.feature_dim] @ model.components[:, : x.shape[1]].T}


class _IgnoresModelChannel(get_algorithm("xgboost")):
    def train(self, hp, data, ctx, model_dir):
        data = TrainingData({k: v for k, v in data.channels.items() if k != "model"})
        return super().train(hp, data, ctx, model_dir)


@pytest.mark.parametrize(
    "algo, check, message",
    [
        (_NoResume, "check_checkpoint_resume", "started over instead of resuming"),
        (_NoFeatureCheck, "check_feature_count", "trained on 6"),
        (_IgnoresModelChannel, "check_incremental", "left the model unchanged"),
    ],
)
def test_the_checks_catch_a_broken_algorithm(algo, check, message) -> None:
    with pytest.raises(AssertionError, match=message):
        conformance.run_check(algo, check)


def test_algorithms_import_no_higher_layer() -> None:
    """protocol < io < algorithms < serve < engine < sdk < cli/testing: algorithms import none above."""
    higher = ("raymaker.serve", "raymaker.engine", "raymaker.sdk", "raymaker.cli", "raymaker.testing")
    root = pathlib.Path(raymaker.algorithms.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert not module.startswith(higher), f"{path.name} imports {module}"


def test_register_and_unregister() -> None:
    pca = get_algorithm("pca")

    class Mine(pca):
        name = "mine"

    assert register_algorithm(Mine) == "mine"
    try:
        assert get_algorithm("mine") is Mine and "mine" in algorithm_names()
        with pytest.raises(ValueError, match="already registered"):
            register_algorithm(Mine)
    finally:
        unregister_algorithm("mine")
    assert "mine" not in algorithm_names()
    with pytest.raises(ValueError, match="unknown algorithm 'mine'"):
        unregister_algorithm("mine")
    with pytest.raises(TypeError):
        register_algorithm(dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs name="):
        register_algorithm("raymaker.algorithms.pca:PCA")


def test_registered_algorithm_stands_in_and_restores() -> None:
    pca = get_algorithm("pca")
    with registered_algorithm("raymaker.algorithms.kmeans:KMeans", name="pca") as name:
        assert name == "pca" and get_algorithm("pca").name == "kmeans"
    assert get_algorithm("pca") is pca
    with registered_algorithm(pca, name="pca-copy"):
        assert get_algorithm("pca-copy") is pca
    assert "pca-copy" not in algorithm_names()


def test_unknown_algorithm_lists_the_builtins() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'xgb'.*kmeans.*xgboost"):
        get_algorithm("xgb")


@pytest.mark.parametrize(
    "hp, raw, value",
    [
        (Hyperparameter("n", "int", low=1), "3", 3),
        (Hyperparameter("n", "int", low=1), "3.0", 3),  # the tuner may send integers as floats
        (Hyperparameter("lr", "float", auto=True), "auto", "auto"),
        (Hyperparameter("lr", "float", auto=True), "0.5", 0.5),
        (Hyperparameter("b", "bool"), "True", True),
        (Hyperparameter("m", "list"), '["msd", "ssd"]', ["msd", "ssd"]),
        (Hyperparameter("m", "list"), "msd,ssd", ["msd", "ssd"]),
        (Hyperparameter("o", "str", choices=("a", "b")), "b", "b"),
    ],
)
def test_hyperparameter_parsing(hp, raw, value):
    assert hp.parse(raw) == value


@pytest.mark.parametrize(
    "hp, raw, message",
    [
        (Hyperparameter("n", "int", low=1), "0", r"'n': '0' is outside the valid range \[1, inf\]"),
        (Hyperparameter("n", "int"), "2.5", "'n': '2.5' is not an integer"),
        (Hyperparameter("lr", "float"), "auto", "'lr': 'auto' is not a number"),
        (Hyperparameter("lr", "float"), "nan", "not a finite number"),
        (Hyperparameter("b", "bool"), "maybe", "not true or false"),
        (Hyperparameter("o", "str", choices=("a", "b")), "c", "'c' is not one of a, b"),
    ],
)
def test_hyperparameter_errors(hp, raw, message):
    with pytest.raises(HyperparameterError, match=message):
        hp.parse(raw)
