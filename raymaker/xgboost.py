"""``raymaker.xgboost``, as the SageMaker Python SDK's ``sagemaker.xgboost``: the framework estimator, model and
predictor (``raymaker.sdk.frameworks``)."""

from raymaker.sdk.frameworks import XGBoost, XGBoostModel, XGBoostPredictor

__all__ = ["XGBoost", "XGBoostModel", "XGBoostPredictor"]
