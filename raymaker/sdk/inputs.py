"""``TrainingInput``: one training channel, as the SageMaker SDK's ``sagemaker.inputs.TrainingInput``."""

from __future__ import annotations

from typing import Any


class TrainingInput:
    def __init__(
        self,
        s3_data: str,
        distribution: str | None = None,
        compression: str | None = None,
        content_type: str | None = None,
        record_wrapping: str | None = None,
        s3_data_type: str = "S3Prefix",
        input_mode: str | None = None,
        shuffle_config: dict[str, int] | int | None = None,
    ):
        s3: dict[str, Any] = {"S3DataType": s3_data_type, "S3Uri": str(s3_data)}
        if distribution:
            s3["S3DataDistributionType"] = distribution
        self.config: dict[str, Any] = {"DataSource": {"S3DataSource": s3}}
        if compression:
            self.config["CompressionType"] = compression
        if content_type:
            self.config["ContentType"] = content_type
        if record_wrapping:
            self.config["RecordWrapperType"] = record_wrapping
        if input_mode:
            self.config["InputMode"] = input_mode
        if shuffle_config is not None:
            seed = shuffle_config if isinstance(shuffle_config, int) else shuffle_config["Seed"]
            self.config["ShuffleConfig"] = {"Seed": int(seed)}

    def channel(self, name: str) -> dict[str, Any]:
        return {"ChannelName": name, **self.config}


def channels_from_inputs(inputs: Any) -> list[dict[str, Any]]:
    """``fit()``'s inputs as InputDataConfig: a URI or TrainingInput (the ``train`` channel, which every
    built-in algorithm reads), or a dict of channel name -> URI or TrainingInput."""
    if inputs is None:
        return []
    if isinstance(inputs, (str, TrainingInput)):
        inputs = {"train": inputs}
    if not isinstance(inputs, dict):
        raise TypeError(
            f"inputs must be a URI, a TrainingInput or a dict of them, not {type(inputs).__name__}"
        )
    out = []
    for name, value in inputs.items():
        if isinstance(value, str):
            value = TrainingInput(value)
        if not isinstance(value, TrainingInput):
            raise TypeError(
                f"channel {name!r}: expected a URI or a TrainingInput, not {type(value).__name__}"
            )
        out.append(value.channel(name))
    return out
