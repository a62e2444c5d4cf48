"""The two Ray Serve deployments behind every endpoint.

- ``VariantServer`` (one Serve application per production variant and deployment generation): its
  replicas load the variant's model once and answer ``invoke`` calls. It has no HTTP route of its own.
- ``RuntimeIngress`` (one application, ``raymaker-runtime``, at ``/endpoints``): SageMaker runtime's
  HTTP face. It parses ``/endpoints/<name>/invocations`` and ``/ping``, picks a variant by weight (or
  the ``X-Amzn-SageMaker-Target-Variant`` header) and calls that variant's replicas.

Why one shared ingress rather than one per endpoint: with HAProxy in front (Serve's fast ingress), any
change in the set of ingress replicas reloads HAProxy, which drops idle keep-alive connections of
every client. Here the ingress replicas never change when endpoints come, go or update: their routing
table arrives as ``user_config``, which Serve applies to the running replicas in place. Variants change
by starting new applications, switching the table, then deleting the old ones, so nothing in flight
is cut off.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raymaker.io.storage import S3Settings
from raymaker.serve.codecs import MAX_PAYLOAD_BYTES, InvocationError
from raymaker.serve.model import LoadedModel, ModelSpec

RUNTIME_APP = "raymaker-runtime"
ROUTE_PREFIX = "/endpoints"
VARIANT_DEPLOYMENT = "Variant"

# SageMaker runtime's headers (InvokeEndpoint in botocore's sagemaker-runtime model).
TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"


@serve.deployment(name=VARIANT_DEPLOYMENT)
class VariantServer:
    def __init__(self, spec: ModelSpec, settings: S3Settings | None, variant: str):
        self.variant = variant
        self.model = LoadedModel(spec, settings)

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None
    ) -> tuple[int, bytes, str, str]:
        """(status, body, content type, error type); errors are values, not exceptions, so a bad
        request never counts against (or takes down) the replica."""
        try:
            out, ct = self.model.invoke(body, content_type, accept)
        except InvocationError as e:
            return e.status, e.message.encode(), "", e.error_type
        return 200, out, ct, ""


def error_response(status: int, error_type: str, message: str) -> Response:
    """SageMaker runtime's error shape: boto3 reads the code from ``x-amzn-ErrorType`` and the message
    from the JSON body, and raises ClientError with both."""
    return Response(
        json.dumps({"message": message}),
        status_code=status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error_type},
    )


class Route:
    """One endpoint's variants: name -> (Serve application, weight)."""

    def __init__(self, endpoint: str, variants: list[dict[str, Any]]):
        self.endpoint = endpoint
        self.names = [v["name"] for v in variants]
        self.apps = {v["name"]: v["app"] for v in variants}
        self.weights = [float(v["weight"]) for v in variants]
        self.lower = {n.lower(): n for n in self.names}

    def pick(self, target: str | None) -> str:
        if target:
            name = self.lower.get(target.lower())
            if name is None:
                raise InvocationError(
                    400,
                    "ValidationError",
                    f"Endpoint {self.endpoint} has no production variant {target!r} "
                    f"(TargetVariant); its variants are {', '.join(self.names)}",
                )
            return name
        if len(self.names) == 1:
            return self.names[0]
        if sum(self.weights) <= 0:  # all weights 0: SageMaker then splits evenly
            return random.choice(self.names)
        return random.choices(self.names, weights=self.weights)[0]


# A fixed version (hosting.set_routes passes it): without one Serve gives every serve.run a random
# version and restarts the ingress replicas even when only user_config changed (and HAProxy reloads
# with them). It follows this file's code, so an upgraded raymaker does replace them.
INGRESS_VERSION = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class RuntimeIngress:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}  # endpoint name, lower case (names are case-insensitive)
        self.handles: dict[str, Any] = {}

    def reconfigure(self, config: dict[str, Any]) -> None:
        from ray.serve.handle import DeploymentHandle

        routes = {name.lower(): Route(name, variants) for name, variants in config["endpoints"].items()}
        apps = {app for r in routes.values() for app in r.apps.values()}
        self.handles = {
            app: self.handles.get(app) or DeploymentHandle(VARIANT_DEPLOYMENT, app) for app in apps
        }
        self.routes = routes

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        # /endpoints/<name>/invocations | /endpoints/<name>/ping
        parts = path[len(ROUTE_PREFIX) :].strip("/").split("/") if path.startswith(ROUTE_PREFIX) else []
        if len(parts) != 2 or parts[1] not in ("invocations", "ping"):
            return error_response(
                404, "NotFound", f"{path} is not a SageMaker runtime path: use /endpoints/<name>/invocations"
            )
        name, action = parts
        route = self.routes.get(name.lower())
        if route is None:
            return error_response(404, "ValidationError", f"Endpoint {name} not found (is it InService?)")
        if action == "ping":
            return Response(b"", status_code=200)
        if request.method != "POST":
            return error_response(405, "ValidationError", "invocations takes POST")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_PAYLOAD_BYTES:
            return _too_large(int(length))
        body = await request.body()
        if len(body) > MAX_PAYLOAD_BYTES:
            return _too_large(len(body))
        headers = request.headers
        try:
            variant = route.pick(headers.get(TARGET_VARIANT))
        except InvocationError as e:
            return error_response(e.status, e.error_type, e.message)
        status, out, ct, error_type = await self._invoke(
            route, variant, body, headers.get("content-type"), headers.get("accept")
        )
        if status != 200:
            return error_response(status, error_type, out.decode(errors="replace"))
        # Content-Type as the model gave it: Starlette's media_type would append "; charset=utf-8".
        response_headers = {"content-type": ct, INVOKED_VARIANT: variant}
        if CUSTOM_ATTRIBUTES in headers:  # opaque to SageMaker: forwarded to the model and back
            response_headers["X-Amzn-SageMaker-Custom-Attributes"] = headers[CUSTOM_ATTRIBUTES]
        return Response(out, status_code=200, headers=response_headers)

    async def _invoke(
        self, route: Route, variant: str, body: bytes, ct: str | None, accept: str | None
    ) -> tuple:
        app = route.apps[variant]
        try:
            return await self.handles[app].invoke.remote(body, ct, accept)
        except Exception as first:  # noqa: BLE001
            # An update may have retired this variant's application between our pick and the call:
            # the routing table already names its successor, so try that once.
            current = self.routes.get(route.endpoint.lower())
            successor = current.apps.get(variant) if current else None
            if successor and successor != app:
                return await self.handles[successor].invoke.remote(body, ct, accept)
            return 500, f"InternalFailure: {type(first).__name__}: {first}".encode(), "", "InternalFailure"


def _too_large(size: int) -> Response:
    return error_response(
        413,
        "ValidationError",
        f"The request body is {size} bytes; InvokeEndpoint takes at most {MAX_PAYLOAD_BYTES} bytes (6 MB): "
        "split it into smaller requests or use a batch transform job",
    )
