"""raymaker: a self-hosted Amazon SageMaker that runs on Ray."""

__version__ = "0.1.0"

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

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "Estimator",
    "HyperparameterTuner",
    "IntegerParameter",
    "Model",
    "Predictor",
    "Session",
    "TrainingInput",
    "Transformer",
    "__version__",
]
