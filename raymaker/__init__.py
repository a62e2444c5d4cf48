"""raymaker: a self-hosted Amazon SageMaker that runs on Ray."""

__version__ = "0.1.0"

from raymaker.pytorch import PyTorch, PyTorchModel  # noqa: E402
from raymaker.sdk import (  # noqa: E402
    CategoricalParameter,
    ContinuousParameter,
    Estimator,
    HyperparameterTuner,
    IntegerParameter,
    Model,
    Predictor,
    Session,
    TrainingInput,
    Transformer,
)
from raymaker.sklearn import SKLearn, SKLearnModel  # noqa: E402
from raymaker.xgboost import XGBoost, XGBoostModel  # noqa: E402

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "Estimator",
    "HyperparameterTuner",
    "IntegerParameter",
    "Model",
    "Predictor",
    "PyTorch",
    "PyTorchModel",
    "SKLearn",
    "SKLearnModel",
    "Session",
    "TrainingInput",
    "Transformer",
    "XGBoost",
    "XGBoostModel",
    "__version__",
]
