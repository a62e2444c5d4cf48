"""The user-facing SDK: classes named and shaped as in the SageMaker Python SDK (v2). They build
SageMaker requests and hand them to a backend (``Session``, ``raymaker.sdk.backends``); they hold no
engine logic."""

from raymaker.sdk.analytics import HyperparameterTuningJobAnalytics, TrainingJobAnalytics
from raymaker.sdk.estimator import Estimator
from raymaker.sdk.exceptions import UnexpectedStatusException
from raymaker.sdk.inputs import TrainingInput
from raymaker.sdk.model import Model
from raymaker.sdk.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter, ParameterRange
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import TrainingJob
from raymaker.sdk.transformer import Transformer
from raymaker.sdk.tuner import HyperparameterTuner, WarmStartConfig, WarmStartTypes

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "Estimator",
    "HyperparameterTuner",
    "HyperparameterTuningJobAnalytics",
    "IntegerParameter",
    "Model",
    "ParameterRange",
    "Predictor",
    "Session",
    "TrainingInput",
    "TrainingJob",
    "TrainingJobAnalytics",
    "Transformer",
    "UnexpectedStatusException",
    "WarmStartConfig",
    "WarmStartTypes",
]
