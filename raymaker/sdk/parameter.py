"""Hyperparameter ranges for automatic model tuning, named and shaped as the SageMaker Python SDK v2's
(``sagemaker.parameter``): each becomes one entry of CreateHyperParameterTuningJob's ParameterRanges,
values as strings."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["CategoricalParameter", "ContinuousParameter", "IntegerParameter", "ParameterRange"]


def _to_string(value: Any) -> str:
    """As the SageMaker SDK's ``sagemaker.utils.to_string``: ``str(value)``."""
    return value if isinstance(value, str) else str(value)


class ParameterRange:
    """Base class of the ranges a hyperparameter is tuned within (``sagemaker.parameter``)."""

    __all_types__ = ("Continuous", "Categorical", "Integer")
    __name__ = "ParameterRange"

    def __init__(self, min_value: float, max_value: float, scaling_type: str = "Auto"):
        """``scaling_type``: Auto | Linear | Logarithmic | ReverseLogarithmic."""
        self.min_value = min_value
        self.max_value = max_value
        self.scaling_type = scaling_type

    def is_valid(self, value: Any) -> bool:
        return self.min_value <= value <= self.max_value

    @classmethod
    def cast_to_type(cls, value: Any) -> Any:
        return float(value)

    def as_tuning_range(self, name: str) -> dict[str, Any]:
        """The range as a ParameterRanges entry of CreateHyperParameterTuningJob (values as strings)."""
        return {
            "Name": name,
            "MinValue": _to_string(self.min_value),
            "MaxValue": _to_string(self.max_value),
            "ScalingType": self.scaling_type,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ContinuousParameter(ParameterRange):
    """A hyperparameter tuned over a continuous interval ``[min_value, max_value]``."""

    __name__ = "Continuous"

    @classmethod
    def cast_to_type(cls, value: Any) -> float:
        return float(value)


class IntegerParameter(ParameterRange):
    """A hyperparameter tuned over the integers in ``[min_value, max_value]``."""

    __name__ = "Integer"

    @classmethod
    def cast_to_type(cls, value: Any) -> int:
        return int(value)


class CategoricalParameter(ParameterRange):
    """A hyperparameter tuned over a list of values (sent as strings)."""

    __name__ = "Categorical"

    def __init__(self, values: Any):  # no min/max: as the SageMaker SDK
        values = values if isinstance(values, list) else [values]
        self.values = [_to_string(v) for v in values]

    def as_tuning_range(self, name: str) -> dict[str, Any]:
        return {"Name": name, "Values": list(self.values)}

    def as_json_range(self, name: str) -> dict[str, Any]:
        """The range with each value JSON-encoded (as the SDK sends it to framework containers)."""
        return {"Name": name, "Values": [json.dumps(v) for v in self.values]}

    def is_valid(self, value: Any) -> bool:
        return value in self.values

    @classmethod
    def cast_to_type(cls, value: Any) -> str:
        return str(value)
