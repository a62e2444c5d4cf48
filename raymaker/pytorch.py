"""``raymaker.pytorch``, as the SageMaker Python SDK's ``sagemaker.pytorch``: the framework estimator, model and
predictor (``raymaker.sdk.frameworks``)."""

from raymaker.sdk.frameworks import PyTorch, PyTorchModel, PyTorchPredictor

__all__ = ["PyTorch", "PyTorchModel", "PyTorchPredictor"]
