"""Built-in algorithms: one module each, one contract (``base.Algorithm``), one conformance suite
(``checks``). ``get_algorithm("xgboost")`` returns the class; modules load on first use."""

from __future__ import annotations

import importlib

from raymaker.algorithms.base import Algorithm, HyperparameterError

# SageMaker's algorithm name -> "module:Class"
_REGISTRY: dict[str, str] = {
    "xgboost": "raymaker.algorithms.xgboost:XGBoost",
    "linear-learner": "raymaker.algorithms.linear_learner:LinearLearner",
    "kmeans": "raymaker.algorithms.kmeans:KMeans",
    "pca": "raymaker.algorithms.pca:PCA",
}


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    """The built-in algorithm called ``name``; ValueError listing the built-ins for an unknown name."""
    target = _REGISTRY.get(name)
    if target is None:
        raise ValueError(f"unknown algorithm {name!r}; built-in algorithms: {', '.join(algorithm_names())}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Algorithm", "HyperparameterError", "algorithm_names", "get_algorithm"]
