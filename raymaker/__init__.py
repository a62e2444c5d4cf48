"""raymaker: a self-hosted Amazon SageMaker that runs on Ray."""

__version__ = "0.1.0"
