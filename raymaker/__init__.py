"""raymaker: a self-hosted Amazon SageMaker that runs on Ray."""

__version__ = "0.1.0"

from raymaker.sdk import Estimator, Session, TrainingInput  # noqa: E402

__all__ = ["Estimator", "Session", "TrainingInput", "__version__"]
