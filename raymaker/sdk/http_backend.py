"""The HTTP backend: the SDK's ``call(operation, params)`` sent to a raymaker API server (``raymaker
server``) as boto3 sends it: SageMaker's JSON 1.1 protocol (``protocol.wire``, botocore's serializer and
parser) signed with SigV4 by botocore's own signer, with the caller's usual AWS credentials (the
environment, ``~/.aws/credentials``, a profile). Errors come back as the same ``SageMakerError``
classes the in-process backend raises, so SDK code cannot tell the two apart.

``Session(endpoint_url=...)`` uses it, as does any Session while ``RAYMAKER_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_SAGEMAKER``, boto3's own setting) is set."""

from __future__ import annotations

import os
import uuid
from typing import Any

from raymaker.protocol import wire
from raymaker.protocol.environment import region as default_region

ENDPOINT_ENVS = ("RAYMAKER_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER")


def endpoint_from_env() -> str | None:
    return next((os.environ[k] for k in ENDPOINT_ENVS if os.environ.get(k)), None)


class HTTPBackend:
    """``endpoint_url``: the server's base URL. ``credentials``: a botocore ``Credentials``; default the
    standard AWS chain. ``verify``: a CA bundle path for a private certificate, or False."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        credentials: Any = None,
        region: str | None = None,
        verify: str | bool | None = None,
        timeout_s: float = 120.0,
    ):
        import botocore.session
        import urllib3
        from botocore.auth import SigV4Auth

        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region or default_region()
        if credentials is None:
            credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            raise ValueError(
                f"the raymaker API at {self.endpoint_url} takes signed requests: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a profile) to the access key `raymaker users create` printed"
            )
        self._signer = SigV4Auth(credentials, "sagemaker", self.region)
        if verify is None:
            verify = os.environ.get("RAYMAKER_CA_BUNDLE") or True
        tls: dict[str, Any] = {}
        if self.endpoint_url.startswith("https:"):
            tls = {"cert_reqs": "CERT_NONE"} if verify is False else {"cert_reqs": "CERT_REQUIRED"}
            if isinstance(verify, str):
                tls["ca_certs"] = verify
            elif verify is True:
                import certifi

                tls["ca_certs"] = certifi.where()
        self._pool = urllib3.PoolManager(maxsize=16, timeout=urllib3.Timeout(connect=10.0, read=timeout_s),
                                         retries=False, **tls)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.awsrequest import AWSRequest

        headers, body = wire.encode_request(operation, params)
        # A fresh id per call, as boto3 sends: two equal calls in one second sign differently, so the
        # server's replay check never mistakes the second for a replay.
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        request = AWSRequest(method="POST", url=self.endpoint_url + "/", data=body, headers=headers)
        self._signer.add_auth(request)
        response = self._pool.request(
            "POST", self.endpoint_url + "/", body=body, headers=dict(request.headers.items())
        )
        return wire.decode_response(operation, response.status, response.headers, response.data)
