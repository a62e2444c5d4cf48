"""``raymaker.sdk.names``: names as the SageMaker SDK's ``sagemaker.utils`` makes them."""

from __future__ import annotations

import re

import pytest

from raymaker.sdk import names


def test_name_from_base_long_and_short() -> None:
    assert re.fullmatch(r"churn-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}", names.name_from_base("churn"))
    assert re.fullmatch(r"churn-\d{6}-\d{4}", names.name_from_base("churn", short=True))
    long = names.name_from_base("x" * 100)
    assert len(long) == 63 and long.startswith("x" * 39 + "-")
    assert len(names.name_from_base("y" * 40, max_length=32, short=True)) == 32


def test_base_name_from_image() -> None:
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    assert names.base_name_from_image(image) == "sagemaker-xgboost"
    assert names.base_name_from_image("linear-learner") == "linear-learner"
    assert names.base_name_from_image(None, "Model") == "Model"
    with pytest.raises(TypeError, match="base name"):
        names.base_name_from_image(None)
