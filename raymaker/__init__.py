"""raymaker: a self-hosted Amazon SageMaker that runs on Ray."""

__version__ = "0.1.0"

from raymaker.sdk import Estimator, Model, Predictor, Session, TrainingInput, Transformer  # noqa: E402

__all__ = ["Estimator", "Model", "Predictor", "Session", "TrainingInput", "Transformer", "__version__"]
