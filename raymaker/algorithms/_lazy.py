"""Modules imported on first use. The driver validates a job against an algorithm's declarations
(hyperparameters, channels, metrics) and must not pay for importing xgboost or torch to do so
(1.5 s and more on a small machine); the workers that train import them when they first touch them."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)
