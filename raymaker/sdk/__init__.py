"""The user-facing SDK: classes named and shaped as in the SageMaker Python SDK (v2). They build
SageMaker requests and hand them to a backend (``Session``); they hold no engine logic."""

from raymaker.sdk.estimator import Estimator
from raymaker.sdk.inputs import TrainingInput
from raymaker.sdk.model import Model
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import TrainingJob, UnexpectedStatusException
from raymaker.sdk.transformer import Transformer
from raymaker.sdk.tuner import (
    CategoricalParameter,
    ContinuousParameter,
    HyperparameterTuner,
    HyperparameterTuningJobAnalytics,
    IntegerParameter,
    WarmStartConfig,
    WarmStartTypes,
)

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "Estimator",
    "HyperparameterTuner",
    "HyperparameterTuningJobAnalytics",
    "IntegerParameter",
    "Model",
    "Predictor",
    "Session",
    "TrainingInput",
    "TrainingJob",
    "Transformer",
    "UnexpectedStatusException",
    "WarmStartConfig",
    "WarmStartTypes",
]
