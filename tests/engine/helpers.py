"""Test helpers: a tiny test-local built-in algorithm (so engine tests do not depend on the real
ones) and a valid CreateTrainingJob request for it."""

from __future__ import annotations

from typing import Any

import numpy as np

from raymaker.algorithms.base import Algorithm, ChannelSpec, Hyperparameter, MetricSpec


class FakeAlgorithm(Algorithm):
    name = "fake"
    hyperparameters = (
        Hyperparameter("num_round", "int", low=1, doc="number of rounds"),
        Hyperparameter("eta", "float", 0.3, low=0, high=1),
        Hyperparameter("objective", "str", "reg", choices=("reg", "binary")),
    )
    channels = (ChannelSpec("train", required=True), ChannelSpec("validation"))
    content_types = ("text/csv", "text/libsvm")
    default_content_type = "text/libsvm"
    metrics = (MetricSpec("validation:rmse", maximize=False),)

    def train(self, hp: dict[str, Any], data: Any, ctx: Any, model_dir: str) -> dict[str, float]:
        raise NotImplementedError

    def load(self, model_dir: str) -> Any:
        raise NotImplementedError

    def predict(self, model: Any, batch: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError


class SingleInstanceFake(FakeAlgorithm):
    name = "fake-single"
    distributed = False


def training_request(**overrides) -> dict:
    """A valid CreateTrainingJob request for the fake algorithm; ``overrides`` replace top-level keys
    (None removes one)."""
    request = {
        "TrainingJobName": "job-1",
        "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
        "AlgorithmSpecification": {"AlgorithmName": "fake", "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": "10", "eta": "0.1"},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/"}},
                "ContentType": "text/csv",
            },
            {
                "ChannelName": "validation",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/val/"}},
            },
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    for k, v in overrides.items():
        if v is None:
            request.pop(k, None)
        else:
            request[k] = v
    return request
