"""``raymaker.sklearn``, as the SageMaker Python SDK's ``sagemaker.sklearn``: the framework estimator, model and
predictor (``raymaker.sdk.frameworks``)."""

from raymaker.sdk.frameworks import SKLearn, SKLearnModel, SKLearnPredictor

__all__ = ["SKLearn", "SKLearnModel", "SKLearnPredictor"]
