"""``Session``: which backend the SDK talks to (``raymaker.sdk.backends``). Local mode (the default)
runs the engine in this process against the local Ray instance (or ``RAY_ADDRESS``), with records in
SQLite under ``RAYMAKER_HOME`` (default ``~/.raymaker``)."""

from __future__ import annotations

import os
from typing import Any

from raymaker.protocol.environment import default_output_path
from raymaker.sdk.backends import Backend, get_backend

__all__ = ["Backend", "Session"]


class Session:
    """``backend``: a Backend object, or a registered backend's name; none picks ``RAYMAKER_BACKEND``,
    default ``local`` (see ``raymaker.sdk.backends``). ``endpoint_url``: a raymaker API server to talk
    to (the ``http`` backend, signed with the usual AWS credentials)."""

    def __init__(
        self,
        backend: Backend | str | None = None,
        *,
        default_output_path: str | None = None,
        runtime_url: str | None = None,
        runtime_verify: str | bool | None = None,
        endpoint_url: str | None = None,
    ):
        if endpoint_url is not None:
            if backend is not None:
                raise ValueError("give a Session either backend or endpoint_url, not both")
            from raymaker.sdk.http_backend import HTTPBackend

            backend = HTTPBackend(endpoint_url)
        if backend is None or isinstance(backend, str):
            backend = get_backend(backend)
        self.backend: Backend = backend
        self._default_output_path = default_output_path
        self._runtime_url = runtime_url
        self._runtime_verify = runtime_verify
        self._runtime_client: Any = None

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One API call through the backend (SageMaker errors raise ``SageMakerError``)."""
        return self.backend.call(operation, params)

    @property
    def runtime_url(self) -> str:
        """Base URL of the endpoints (SageMaker runtime's ``/endpoints/<name>/invocations``):
        ``RAYMAKER_RUNTIME_URL``, default http://127.0.0.1:8080."""
        return self._runtime_url or os.environ.get("RAYMAKER_RUNTIME_URL") or "http://127.0.0.1:8080"

    def runtime_client(self) -> Any:
        """boto3's ``sagemaker-runtime`` client for this session's endpoints (made once), signed with
        the usual AWS credentials when there are any (a shared service's endpoints take only signed
        invocations; one person's local mode takes unsigned ones too). For https with a private CA, set
        ``runtime_verify`` (or ``RAYMAKER_RUNTIME_CA_BUNDLE``) to the CA bundle."""
        if self._runtime_client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            from raymaker.protocol.environment import region

            verify = self._runtime_verify
            if verify is None:
                verify = os.environ.get("RAYMAKER_RUNTIME_CA_BUNDLE") or True
            aws = boto3.session.Session()
            signing = {} if aws.get_credentials() is not None else {"signature_version": UNSIGNED}
            self._runtime_client = aws.client(
                "sagemaker-runtime",
                endpoint_url=self.runtime_url,
                region_name=region(),
                verify=verify,
                config=Config(
                    **signing,
                    retries={"mode": "standard", "max_attempts": 3},
                    tcp_keepalive=True,
                    max_pool_connections=64,
                ),
            )
        return self._runtime_client

    @property
    def default_output_path(self) -> str:
        """Where models go when an Estimator names no ``output_path``: ``s3://$RAYMAKER_DEFAULT_BUCKET/``
        if set, else a local folder (local mode)."""
        return self._default_output_path or default_output_path()
