"""``Transformer``: batch transform jobs, as the SageMaker Python SDK's ``sagemaker.transformer.Transformer``
(made by ``estimator.transformer(...)`` or ``model.transformer(...)``)."""

from __future__ import annotations

from typing import Any

from raymaker.sdk import progress
from raymaker.sdk.exceptions import UnexpectedStatusException
from raymaker.sdk.names import name_from_base
from raymaker.sdk.session import Session
from raymaker.sdk.waiter import TRANSFORM_JOB, wait_for


class Transformer:
    def __init__(
        self,
        model_name: str,
        instance_count: int = 1,
        instance_type: str = "local",
        strategy: str | None = None,
        assemble_with: str | None = None,
        output_path: str | None = None,
        accept: str | None = None,
        max_concurrent_transforms: int | None = None,
        max_payload: int | None = None,
        env: dict[str, str] | None = None,
        base_transform_job_name: str | None = None,
        *,
        session: Session | None = None,
        sagemaker_session: Session | None = None,
    ):
        self.model_name = model_name
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.strategy = strategy
        self.assemble_with = assemble_with
        self.output_path = output_path
        self.accept = accept
        self.max_concurrent_transforms = max_concurrent_transforms
        self.max_payload = max_payload
        self.env = dict(env or {})
        self.base_transform_job_name = base_transform_job_name or model_name
        self.session = session or sagemaker_session or Session()
        self.latest_transform_job: str | None = None

    def transform(
        self,
        data: str,
        data_type: str = "S3Prefix",
        content_type: str | None = None,
        compression_type: str | None = None,
        split_type: str | None = None,
        job_name: str | None = None,
        input_filter: str | None = None,
        output_filter: str | None = None,
        join_source: str | None = None,
        wait: bool = True,
        logs: bool = True,
    ) -> None:
        """Start a transform job over ``data`` (an S3 or local prefix, or a manifest); with ``wait``
        block until it ends (UnexpectedStatusException if it fails), showing its progress unless
        ``logs=False`` (as the SageMaker SDK, whose default is also ``logs=True``)."""
        name = job_name or name_from_base(self.base_transform_job_name)
        if self.output_path is None:
            self.output_path = f"{self.session.default_output_path.rstrip('/')}/{name}"
        transform_input: dict[str, Any] = {
            "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": data}}
        }
        for key, value in (
            ("ContentType", content_type),
            ("CompressionType", compression_type),
            ("SplitType", split_type),
        ):
            if value is not None:
                transform_input[key] = value
        transform_output: dict[str, Any] = {"S3OutputPath": self.output_path}
        if self.accept:
            transform_output["Accept"] = self.accept
        if self.assemble_with:
            transform_output["AssembleWith"] = self.assemble_with
        request: dict[str, Any] = {
            "TransformJobName": name,
            "ModelName": self.model_name,
            "TransformInput": transform_input,
            "TransformOutput": transform_output,
            "TransformResources": {"InstanceType": self.instance_type, "InstanceCount": self.instance_count},
        }
        if self.strategy:
            request["BatchStrategy"] = self.strategy
        if self.max_payload is not None:
            request["MaxPayloadInMB"] = self.max_payload
        if self.max_concurrent_transforms is not None:
            request["MaxConcurrentTransforms"] = self.max_concurrent_transforms
        if self.env:
            request["Environment"] = self.env
        processing = {
            k: v
            for k, v in (
                ("InputFilter", input_filter),
                ("OutputFilter", output_filter),
                ("JoinSource", join_source),
            )
            if v is not None
        }
        if processing:
            request["DataProcessing"] = processing
        self.session.call("CreateTransformJob", request)
        self.latest_transform_job = name
        if wait:
            self.wait(logs=logs)

    def describe(self) -> dict[str, Any]:
        """DescribeTransformJob of the latest transform job."""
        return self.session.call("DescribeTransformJob", {"TransformJobName": self._latest_job()})

    def wait(
        self, logs: bool = True, timeout_s: float | None = 24 * 3600, poll_s: float = 0.1
    ) -> dict[str, Any]:
        """Block until the latest transform job ends and return its description;
        UnexpectedStatusException if it Failed (Stopped logs a warning, as in the SageMaker SDK). With
        ``logs`` (first, as the SageMaker SDK's ``wait(logs=True)``), its status, elapsed time and
        records transformed on stdout (``sdk/progress.py``)."""
        name = self._latest_job()
        if not logs:
            return wait_for(self.session, TRANSFORM_JOB, name, poll=poll_s, timeout=timeout_s)
        with progress.watch(TRANSFORM_JOB, self.session, name) as w:
            return wait_for(
                self.session, TRANSFORM_JOB, name, poll=poll_s, timeout=timeout_s, on_describe=w.on_describe
            )

    def stop_transform_job(self, wait: bool = True) -> None:
        """Stop the latest transform job; with ``wait``, until it has stopped."""
        name = self._latest_job()
        self.session.call("StopTransformJob", {"TransformJobName": name})
        if wait:
            try:
                self.wait(logs=False)
            except UnexpectedStatusException:
                pass  # it failed before the stop landed: ended all the same

    def _latest_job(self) -> str:
        if self.latest_transform_job is None:
            raise ValueError("no transform job yet: call transform() first")
        return self.latest_transform_job
