"""Built-in algorithms: one module each, one contract (``base.Algorithm``). ``get_algorithm("xgboost")``
returns the class; modules load on first use. ``register_algorithm`` adds one (or stands one in for a
built-in, in tests); the conformance suite is ``raymaker.testing.conformance``."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from raymaker.algorithms.base import (
    Algorithm,
    ConformanceCase,
    FeatureCountError,
    HyperparameterError,
)

# SageMaker's algorithm name -> the class, or "module:Class" for one imported on first use (the driver
# validates jobs from the declarations without paying for importing xgboost or torch).
_REGISTRY: dict[str, type[Algorithm] | str] = {
    "xgboost": "raymaker.algorithms.xgboost:XGBoost",
    "linear-learner": "raymaker.algorithms.linear_learner:LinearLearner",
    "kmeans": "raymaker.algorithms.kmeans:KMeans",
    "pca": "raymaker.algorithms.pca:PCA",
}


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm registered as ``name``; ValueError listing the registered ones for an unknown name."""
    target = _REGISTRY.get(name)
    if target is None:
        raise ValueError(f"unknown algorithm {name!r}; built-in algorithms: {', '.join(algorithm_names())}")
    if isinstance(target, str):
        module, cls = target.split(":")
        return getattr(importlib.import_module(module), cls)
    return target


def register_algorithm(
    algorithm: type[Algorithm] | str, *, name: str | None = None, replace: bool = False
) -> str:
    """Make ``algorithm`` available as ``name`` (default: the class's ``name``); returns the name.

    ``algorithm`` is an ``Algorithm`` subclass, or ``"module:Class"`` to import it on first use (then
    ``name`` is required). An existing name is a ValueError unless ``replace``. The registry is this
    process's: Ray workers see an algorithm registered at import time of a module they import too."""
    if isinstance(algorithm, str):
        module, sep, cls = algorithm.partition(":")
        if not (module and sep and cls):
            raise ValueError(f"algorithm {algorithm!r}: expected 'module:Class'")
        if name is None:
            raise ValueError(
                f"register_algorithm({algorithm!r}) needs name=: a class path names no algorithm"
            )
    elif not (isinstance(algorithm, type) and issubclass(algorithm, Algorithm)):
        raise TypeError(f"{algorithm!r} is not an Algorithm subclass")
    else:
        name = name or getattr(algorithm, "name", None)
        if not name:
            raise ValueError(f"{algorithm.__name__} sets no 'name'; pass name=")
    if name in _REGISTRY and not replace:
        raise ValueError(f"algorithm {name!r} is already registered; pass replace=True to stand in for it")
    _REGISTRY[name] = algorithm
    return name


def unregister_algorithm(name: str) -> None:
    """Remove ``name``; ValueError if no algorithm has it."""
    if _REGISTRY.pop(name, None) is None:
        raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(algorithm_names())}")


@contextlib.contextmanager
def registered_algorithm(algorithm: type[Algorithm] | str, *, name: str | None = None) -> Iterator[str]:
    """``register_algorithm(algorithm, name=name, replace=True)`` for the ``with`` block, then whatever
    had the name before (or nothing) again. Yields the name."""
    key = name if name is not None else getattr(algorithm, "name", None)
    previous = _REGISTRY.get(key) if key is not None else None
    key = register_algorithm(algorithm, name=name, replace=True)
    try:
        yield key
    finally:
        if previous is None:
            _REGISTRY.pop(key, None)
        else:
            _REGISTRY[key] = previous


__all__ = [
    "Algorithm",
    "ConformanceCase",
    "FeatureCountError",
    "HyperparameterError",
    "algorithm_names",
    "get_algorithm",
    "register_algorithm",
    "registered_algorithm",
    "unregister_algorithm",
]
