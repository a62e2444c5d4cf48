"""A small XGBoost model.tar.gz for the tests that serve one without a training job."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from raymaker.algorithms import get_algorithm
from raymaker.algorithms.base import LocalContext, TrainingData
from raymaker.io.batch import Batch


def xgboost_archive(tmp: Path, *, rows: int, features: int, rounds: int) -> str:
    """Train XGBoost (binary:logistic) on ``rows`` random rows of ``features`` features and pack it as
    SageMaker's model.tar.gz under ``tmp``; returns its file:// URL."""
    algo = get_algorithm("xgboost")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model_dir = tmp / "model"
    model_dir.mkdir()
    hp = algo.validate_hyperparameters({"num_round": str(rounds), "objective": "binary:logistic"})
    algo().train(hp, TrainingData.from_batches(train=Batch(x, y)), LocalContext(), str(model_dir))
    archive = tmp / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(model_dir / name, arcname=name)
    return f"file://{archive}"
