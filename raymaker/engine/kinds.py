"""The kinds of resource the engine keeps records of: one name for each, used as the ARN's resource type
(as SageMaker writes it), the ``kind`` column of the resources table, and in messages."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    TRAINING_JOB = "training-job"
    TUNING_JOB = "hyper-parameter-tuning-job"
    MODEL = "model"
    ENDPOINT_CONFIG = "endpoint-config"
    ENDPOINT = "endpoint"
    TRANSFORM_JOB = "transform-job"

    @property
    def noun(self) -> str:
        """SageMaker's words for the kind, for messages ("Could not find endpoint ...")."""
        return _NOUNS[self]


_NOUNS = {
    Kind.TRAINING_JOB: "training job",
    Kind.TUNING_JOB: "hyperparameter tuning job",
    Kind.MODEL: "model",
    Kind.ENDPOINT_CONFIG: "endpoint configuration",
    Kind.ENDPOINT: "endpoint",
    Kind.TRANSFORM_JOB: "transform job",
}
