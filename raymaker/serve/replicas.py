"""The Ray Serve deployments behind the endpoints.

- ``VariantServer``: its replicas load one production variant's model once and answer requests. An
  endpoint with a single variant (the usual case) is one Serve application at ``/endpoints/<name>``
  whose replicas take the HTTP requests themselves: Serve's HAProxy ingress sends each request straight
  to a replica, with no second hop. A variant of a multi-variant endpoint is an application without a
  route, called by ``RuntimeIngress``.
- ``RuntimeIngress`` (one application, ``raymaker-runtime``, at ``/endpoints``): picks a variant by
  weight (or the ``X-Amzn-SageMaker-Target-Variant`` header) for multi-variant endpoints, and answers
  404 for names no endpoint has. The longest route prefix wins, so single-variant endpoints reach it
  only from a client connection still held by an HAProxy process from before their route existed;
  it then calls their replicas through a handle, so those requests succeed too.

Updates keep requests flowing. Both deployments get their configuration (routing table; model) as
``user_config`` under a fixed version, so Serve applies a change to the running replicas in place:
a replica loads the new model first and then swaps it in, and HAProxy never reloads for it. Changes
of replica count or resources go through Serve's own rolling update (new replicas first).

Every bad request gets SageMaker runtime's error shape with a 4xx status, and none takes a replica
down: headers are checked against InvokeEndpoint's limits before the body is read, the body is read
only up to the 6 MB limit (a longer one, chunked or not, is answered 413 without buffering the rest),
and the model's errors come back as values. ``VariantReplica`` is the replica's code without Serve, so
tests serve it over real HTTP with plain uvicorn.

Each invocation is measured under CloudWatch's names (``metrics.catalog``): the replica that runs the
model records ModelLatency and InvocationsPerInstance; whoever answers the client (the replica, or the
runtime ingress for a multi-variant endpoint) records Invocations, Invocation4XXErrors /
Invocation5XXErrors by the status it answered, and OverheadLatency (its handler's time beyond
ModelLatency). A replica also samples its CPU and memory use. ``RAYMAKER_METRICS=off`` (the cluster's
environment, or the model's Environment) turns them off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raymaker.io.storage import S3Settings
from raymaker.metrics import catalog
from raymaker.metrics.recorder import EndpointMetrics, UsageSampler, ensure_flusher
from raymaker.serve.codecs import MAX_PAYLOAD_BYTES, InvocationError, clip
from raymaker.serve.guard import InvocationGuard, Refused
from raymaker.serve.model import LoadedModel, ModelSpec

RUNTIME_APP = "raymaker-runtime"
ROUTE_PREFIX = "/endpoints"
VARIANT_DEPLOYMENT = "Variant"

# SageMaker runtime's headers (InvokeEndpoint in botocore's sagemaker-runtime model).
TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
INVOKED_VARIANT = "x-Amzn-Invoked-Production-Variant"

# A fixed version (hosting passes it with the options): without one Serve gives every serve.run a
# random version and restarts the replicas even when only user_config changed (and HAProxy reloads
# with them). It follows this file's code, so an upgraded raymaker does replace them.
CODE_VERSION = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]

# A custom container down this long (it should restart within a second or two) fails the replica.
UNHEALTHY_AFTER_S = 30.0
RETIRE_AFTER_S = 5.0  # an update's old container serves requests already sent to it, then stops

logger = logging.getLogger(__name__)


def error_response(status: int, error_type: str, message: str) -> Response:
    """SageMaker runtime's error shape: boto3 reads the code from ``x-amzn-ErrorType`` and the message
    from the JSON body, and raises ClientError with both."""
    return Response(
        json.dumps({"message": message}),
        status_code=status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error_type},
    )


def _too_large(size: int | None) -> Response:
    what = f"is {size} bytes" if size is not None else f"is over {MAX_PAYLOAD_BYTES} bytes"
    return error_response(
        413,
        "ValidationError",
        f"The request body {what}; InvokeEndpoint takes at most {MAX_PAYLOAD_BYTES} bytes (6 MB): "
        "split it into smaller requests or use a batch transform job",
    )


def _invalid(message: str) -> Response:
    return error_response(400, "ValidationError", message)


def parse_path(path: str) -> tuple[str, str] | Response:
    """``/endpoints/<name>/invocations|ping`` -> (name, action), or the 404 response."""
    parts = path[len(ROUTE_PREFIX) :].strip("/").split("/") if path.startswith(ROUTE_PREFIX) else []
    if len(parts) != 2 or parts[1] not in ("invocations", "ping"):
        return error_response(
            404,
            "NotFound",
            f"{clip(path)} is not a SageMaker runtime path: use /endpoints/<name>/invocations",
        )
    return parts[0], parts[1]


class Invocation(NamedTuple):
    """An InvokeEndpoint request whose headers passed InvokeEndpoint's checks."""

    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    target_variant: str | None


# InvokeEndpoint's header limits (botocore's sagemaker-runtime model): SageMaker answers
# ValidationError for longer or non-ASCII values before a container sees them.
_MAX_HEADER = 1024
_VARIANT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")  # VariantName: at most 63 characters


def _check_header(name: str, value: str | None) -> Response | None:
    if value is None or (len(value) <= _MAX_HEADER and value.isascii()):
        return None
    if len(value) > _MAX_HEADER:
        return _invalid(f"{name} is {len(value)} characters; InvokeEndpoint takes at most {_MAX_HEADER}")
    return _invalid(f"{name} {clip(value)!r} holds non-ASCII characters; send ASCII only")


async def read_invocation(request: Request) -> Invocation | Response:
    """The request's InvokeEndpoint parts, or the 4xx response: headers first (cheap), then the body."""
    if request.method != "POST":
        return error_response(405, "ValidationError", "invocations takes POST")
    h = request.headers
    ct, accept, attrs, target = (
        h.get("content-type"),
        h.get("accept"),
        h.get(CUSTOM_ATTRIBUTES),
        h.get(TARGET_VARIANT),
    )
    bad = _check_header("Content-Type", ct) or _check_header("Accept", accept)
    if bad is not None:
        return bad
    if attrs is not None and (len(attrs) > _MAX_HEADER or not (attrs.isascii() and attrs.isprintable())):
        # Echoed back in the response: only what is safe in any header value.
        return _invalid(
            f"X-Amzn-SageMaker-Custom-Attributes {clip(attrs)!r} ({len(attrs)} characters) must be at "
            f"most {_MAX_HEADER} printable ASCII characters"
        )
    if target is not None and (len(target) > 63 or not _VARIANT_NAME.fullmatch(target)):
        return _invalid(
            f"X-Amzn-SageMaker-Target-Variant {clip(target)!r} is not a variant name (1-63 letters, "
            "digits and hyphens, starting with a letter or digit)"
        )
    body = await read_body(request)
    if isinstance(body, Response):
        return body
    return Invocation(body, ct, accept, attrs, target)


async def read_body(request: Request) -> bytes | Response:
    """The body, read only up to the 6 MB limit: a declared Content-Length over it is refused unread,
    and a chunked body is refused the moment it passes the limit (the server discards the rest
    rather than this process buffering it)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            return _invalid(f"Content-Length {clip(length)!r} is not a number of bytes")
        if declared > MAX_PAYLOAD_BYTES:
            return _too_large(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_PAYLOAD_BYTES:
            return _too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


def answer(invocation: Invocation, variant: str, result: tuple[int, bytes, str, str]) -> Response:
    status, out, ct, error_type = result
    if status != 200:
        return error_response(status, error_type, out.decode(errors="replace"))
    # Content-Type as the model gave it: Starlette's media_type would append "; charset=utf-8".
    headers = {"content-type": ct, INVOKED_VARIANT: variant}
    if invocation.custom_attributes is not None:  # opaque to SageMaker: forwarded to the model and back
        headers["X-Amzn-SageMaker-Custom-Attributes"] = invocation.custom_attributes
    return Response(out, status_code=200, headers=headers)


async def admit(guard: InvocationGuard | None, request: Request, inv: Invocation, endpoint: str, variant: str) -> Any:
    """The caller's audit identity, or the refusal's response (recorded in the trail); None unguarded."""
    if guard is None:
        return None
    try:
        return await guard.admit(request.scope, inv.body, endpoint)
    except Refused as r:
        guard.record(r.identity, endpoint, variant, request.scope, (r.error.code, r.error.message))
        return error_response(r.error.http_status, r.error.code, r.error.message)


def audit(guard: InvocationGuard | None, identity: Any, request: Request, endpoint: str, variant: str,
          result: tuple[int, bytes, str, str]) -> None:
    if guard is not None:
        error = None if result[0] == 200 else (result[3], result[1][:500].decode(errors="replace"))
        guard.record(identity, endpoint, variant, request.scope, error)


def _guard_for(current: InvocationGuard | None, service: str | None) -> InvocationGuard | None:
    if not service:
        return None
    return current if current is not None and current.service_name == service else InvocationGuard(service)


def _no_variant(endpoint: str, target: str, names: list[str]) -> Response:
    return error_response(
        400,
        "ValidationError",
        f"Endpoint {endpoint} has no production variant {target!r} (TargetVariant); its variants are "
        f"{', '.join(names)}",
    )


class VariantReplica:
    """One production variant's replica: the model, loaded once, and the endpoint's HTTP face when
    this is the endpoint's only variant. Plain Python (``VariantServer`` is it as a Serve deployment),
    so tests serve it with uvicorn, without Ray. ``user_config``: {"endpoint", "variant", "model":
    ModelSpec fields}."""

    def __init__(self, settings: S3Settings | None):
        self.settings = settings
        self.endpoint = self.variant = ""
        self.spec: ModelSpec | None = None
        self.model: LoadedModel | None = None
        self.guard: InvocationGuard | None = None
        self.metrics: EndpointMetrics | None = None
        self._usage: UsageSampler | None = None
        self._flusher: asyncio.Task | None = None  # hands the counts to Ray, on the requests' loop

    async def reconfigure(self, config: dict[str, Any]) -> None:
        spec = ModelSpec(
            **{**config["model"], "environment": tuple(map(tuple, config["model"]["environment"]))}
        )
        if spec != self.spec:
            # Load first, off the event loop: the old model serves requests meanwhile.
            model = await asyncio.to_thread(LoadedModel, spec, self.settings)
            old, self.model, self.spec = self.model, model, spec
            if old is not None:  # a custom container: SIGTERM once its requests are done
                threading.Thread(target=_retire, args=(old,), daemon=True).start()
        self.endpoint, self.variant = config["endpoint"], config["variant"]
        self.guard = _guard_for(self.guard, config.get("guard"))
        self._set_metrics(catalog.enabled(dict(spec.environment)))

    def _set_metrics(self, on: bool) -> None:
        """Bind the variant's metrics once (not per request); sample this instance's usage."""
        if self.metrics is not None:
            self.metrics.flush()  # what the old labels counted
        if not on:
            self.metrics = None
            if self._usage is not None:
                self._usage.stop(final=False)
                self._usage = None
            return
        self.metrics = EndpointMetrics(self.endpoint, self.variant)
        tags = {"EndpointName": self.endpoint, "VariantName": self.variant}
        if self._usage is None:
            memory = self.spec.memory_gb * 2**30 if self.spec is not None else 0.0
            self._usage = UsageSampler(catalog.ENDPOINT_CPU, catalog.ENDPOINT_MEMORY, tags, memory_bytes=memory)
        else:
            self._usage.retarget(tags)

    def check_health(self) -> None:
        """Serve's health check: a custom container down for longer than it takes to start it again
        (it exits at once each time) fails the replica, and Serve replaces it."""
        model = self.model
        if model is not None and model.container is not None:
            down = model.container.down_for()
            if down > UNHEALTHY_AFTER_S:
                raise RuntimeError(f"the container {model.spec.image} has been down for {down:.0f} s")

    def __del__(self) -> None:  # Serve stops a replica: its container goes with it (SIGTERM first)
        usage = getattr(self, "_usage", None)
        if usage is not None:
            usage.stop(final=False)
        model = getattr(self, "model", None)
        if model is not None:
            model.close()

    async def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
    ) -> tuple[int, bytes, str, str]:
        """(status, body, content type, error type); errors are values, not exceptions, so a bad
        request never counts against (or takes down) the replica. The client's mistakes are 4xx
        (``InvocationError``, which a ``ValueError`` from ``predict`` becomes); anything else the model
        raises is a 500 ModelError, logged here with its traceback."""
        return (await self.invoke_timed(body, content_type, accept, custom_attributes, target_variant))[0]

    async def invoke_timed(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
        target_variant: str | None = None,
        *,
        record: bool = True,
    ) -> tuple[tuple[int, bytes, str, str], int]:
        """``invoke``'s answer and the model's time in nanoseconds (0 when no model ran): its caller
        subtracts it from its own time for OverheadLatency. ``record``: False when the caller records
        the request's metrics itself (after its response is sent)."""
        model = self.model
        if model is None:
            return (503, b"the model is not loaded yet; retry shortly", "", "ServiceUnavailable"), 0
        t0 = time.perf_counter_ns()
        try:
            out, ct = await model.ainvoke(body, content_type, accept, custom_attributes, target_variant)
            result = 200, out, ct, ""
        except InvocationError as e:
            result = e.status, e.message.encode(), "", e.error_type
        except Exception as e:  # noqa: BLE001 - any model failure answers this request only
            logger.exception(
                "endpoint %s variant %s: the model failed on a request", self.endpoint, self.variant
            )
            first = (str(e).strip().splitlines() or [""])[0]
            message = f"the model failed on this request: {type(e).__name__}: {clip(first, 500)}"
            result = 500, message.encode(), "", "ModelError"
        took = time.perf_counter_ns() - t0
        if record and self.metrics is not None:  # called through a handle (the runtime ingress)
            self._flusher = ensure_flusher(self._flusher, self._current_metrics)
            self.metrics.model_ran(took)
        return result, took

    async def __call__(self, request: Request) -> Response:
        """``POST /endpoints/<name>/invocations`` and ``GET /endpoints/<name>/ping``."""
        parsed = parse_path(request.url.path)
        if isinstance(parsed, Response):
            return parsed
        _, action = parsed
        if action == "ping":
            return Response(b"", status_code=200)
        metrics = self.metrics
        if metrics is None:
            return (await self._invocation(request))[0]
        self._flusher = ensure_flusher(self._flusher, self._current_metrics)
        t0 = time.perf_counter_ns()
        try:
            response, model_ns = await self._invocation(request, record=False)
        except BaseException:  # Serve answers 500 for what escapes: a 5xx all the same
            metrics.answered(500, time.perf_counter_ns() - t0)
            raise
        overhead_ns = time.perf_counter_ns() - t0 - model_ns
        metrics.request(response.status_code, overhead_ns, model_ns)
        return response

    def _current_metrics(self) -> list[EndpointMetrics]:
        return [self.metrics] if self.metrics is not None else []

    async def _invocation(self, request: Request, record: bool = True) -> tuple[Response, int]:
        """The response to an invocation, and the model's time in it (ns)."""
        inv = await read_invocation(request)
        if isinstance(inv, Response):
            return inv, 0
        identity = await admit(self.guard, request, inv, self.endpoint, self.variant)
        if isinstance(identity, Response):
            return identity, 0
        target = inv.target_variant
        if target and target.lower() != self.variant.lower():
            return _no_variant(self.endpoint, target, [self.variant]), 0
        result, model_ns = await self.invoke_timed(
            inv.body, inv.content_type, inv.accept, inv.custom_attributes, inv.target_variant, record=record
        )
        audit(self.guard, identity, request, self.endpoint, self.variant, result)
        return answer(inv, self.variant, result), model_ns


def _retire(model: LoadedModel) -> None:
    time.sleep(RETIRE_AFTER_S)  # requests that took the old model before the swap finish first
    model.close()


VariantServer = serve.deployment(name=VARIANT_DEPLOYMENT)(VariantReplica)


class Route:
    """One multi-variant endpoint: variant name -> (Serve application, weight)."""

    def __init__(self, endpoint: str, variants: list[dict[str, Any]]):
        self.endpoint = endpoint
        self.names = [v["name"] for v in variants]
        self.apps = {v["name"]: v["app"] for v in variants}
        self.weights = [float(v["weight"]) for v in variants]
        self.lower = {n.lower(): n for n in self.names}

    def pick(self, target: str | None) -> str | None:
        if target:
            return self.lower.get(target.lower())
        if len(self.names) == 1:
            return self.names[0]
        if sum(self.weights) <= 0:  # all weights 0: SageMaker then splits evenly
            return random.choice(self.names)
        return random.choices(self.names, weights=self.weights)[0]


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class RuntimeIngress:
    """``user_config``: {"endpoints": {name: [{name, app, weight}]}} for the multi-variant endpoints."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}  # endpoint name, lower case (names are case-insensitive)
        self.handles: dict[str, Any] = {}
        self.guard: InvocationGuard | None = None
        self.metrics: dict[tuple[str, str], EndpointMetrics] = {}  # (endpoint, variant), bound once
        self.metrics_on = catalog.enabled()
        self._flusher: asyncio.Task | None = None

    def _metrics(self, endpoint: str, variant: str) -> EndpointMetrics:
        found = self.metrics.get((endpoint, variant))
        if found is None:
            found = self.metrics[(endpoint, variant)] = EndpointMetrics(endpoint, variant)
        self._flusher = ensure_flusher(self._flusher, self.metrics.values)
        return found

    def reconfigure(self, config: dict[str, Any]) -> None:
        from ray.serve.handle import DeploymentHandle

        routes = {name.lower(): Route(name, variants) for name, variants in config["endpoints"].items()}
        apps = {app for r in routes.values() for app in r.apps.values()}
        self.handles = {
            app: self.handles.get(app) or DeploymentHandle(VARIANT_DEPLOYMENT, app) for app in apps
        }
        self.routes = routes
        self.guard = _guard_for(self.guard, config.get("guard"))

    async def __call__(self, request: Request) -> Response:
        parsed = parse_path(request.url.path)
        if isinstance(parsed, Response):
            return parsed
        name, action = parsed
        route = self.routes.get(name.lower())
        if route is None:
            return error_response(
                404, "ValidationError", f"Endpoint {clip(name)} not found (is it InService?)"
            )
        if action == "ping":
            return Response(b"", status_code=200)
        t0 = time.perf_counter_ns()
        try:
            response, variant, model_ns = await self._invocation(request, route)
        except BaseException:  # Serve answers 500 for what escapes: a 5xx all the same
            if self.metrics_on:
                self._metrics(route.endpoint, route.names[0]).answered(500, time.perf_counter_ns() - t0)
            raise
        # Counted under the variant that answered; a request no variant took (a bad header, an
        # unknown TargetVariant) under the endpoint's first variant, as CloudWatch has no other place.
        if self.metrics_on:
            self._metrics(route.endpoint, variant or route.names[0]).answered(
                response.status_code, time.perf_counter_ns() - t0 - model_ns
            )
        return response

    async def _invocation(self, request: Request, route: Route) -> tuple[Response, str | None, int]:
        inv = await read_invocation(request)
        if isinstance(inv, Response):
            return inv, None, 0
        variant = route.pick(inv.target_variant)
        identity = await admit(self.guard, request, inv, route.endpoint, variant or "")
        if isinstance(identity, Response):
            return identity, variant, 0
        if variant is None:
            return _no_variant(route.endpoint, inv.target_variant or "", route.names), None, 0
        result, model_ns = await self._invoke(route, variant, inv)
        audit(self.guard, identity, request, route.endpoint, variant, result)
        return answer(inv, variant, result), variant, model_ns

    async def _invoke(self, route: Route, variant: str, inv: Invocation) -> tuple[tuple, int]:
        app = route.apps[variant]
        args = (inv.body, inv.content_type, inv.accept, inv.custom_attributes, inv.target_variant)
        try:
            return await self.handles[app].invoke_timed.remote(*args)
        except Exception as first:  # noqa: BLE001
            error: Exception = first
        # An update may have retired this variant's application between our pick and the call: the
        # routing table already names its successor, so try that once.
        current = self.routes.get(route.endpoint.lower())
        successor = current.apps.get(variant) if current else None
        if successor and successor != app:
            try:
                return await self.handles[successor].invoke_timed.remote(*args)
            except Exception as second:  # noqa: BLE001
                error = second
        message = f"InternalFailure: {type(error).__name__}: {clip(str(error), 500)}"
        return (500, message.encode(), "", "InternalFailure"), 0
