"""Every registered built-in algorithm passes the same conformance checks."""

import pytest

from raymaker.algorithms import algorithm_names, checks, get_algorithm
from raymaker.algorithms.base import Hyperparameter, HyperparameterError


@pytest.mark.parametrize("name", algorithm_names())
def test_conformance(name):
    checks.check_algorithm(name)


def test_every_algorithm_has_a_case():
    assert set(checks.CASES) == set(algorithm_names())


def test_unknown_algorithm_lists_the_builtins():
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
