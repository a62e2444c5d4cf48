"""Ray Serve under the endpoints: starting Serve with the runtime listener, deploying a variant's
application, switching the runtime's routing table, deleting applications.

Runs in the job service (a detached actor), so endpoints outlive the driver that created them.
The runtime URL (``RAYMAKER_RUNTIME_URL``, default ``http://127.0.0.1:8080``) says where Serve
listens; ``https://`` needs ``RAYMAKER_RUNTIME_TLS_CERTFILE`` and ``RAYMAKER_RUNTIME_TLS_KEYFILE``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from raymaker.io.storage import S3Settings
from raymaker.serve.model import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_RUNTIME_URL = "http://127.0.0.1:8080"
DEFAULT_TARGET_INFLIGHT = 2.0  # Serve's own default target_ongoing_requests


@dataclass(frozen=True)
class RuntimeListener:
    url: str
    host: str
    port: int
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def runtime_listener() -> RuntimeListener:
    """Where the endpoints listen, from the environment; errors name the variable to fix."""
    url = os.environ.get("RAYMAKER_RUNTIME_URL") or DEFAULT_RUNTIME_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"RAYMAKER_RUNTIME_URL {url!r} must look like http://127.0.0.1:8080 or https://host:8443"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    cert = os.environ.get("RAYMAKER_RUNTIME_TLS_CERTFILE")
    key = os.environ.get("RAYMAKER_RUNTIME_TLS_KEYFILE")
    if parts.scheme == "https":
        if not (cert and key):
            raise ValueError(
                f"RAYMAKER_RUNTIME_URL {url!r} is https: set RAYMAKER_RUNTIME_TLS_CERTFILE and "
                "RAYMAKER_RUNTIME_TLS_KEYFILE to the PEM certificate and key"
            )
        for var, path in (("RAYMAKER_RUNTIME_TLS_CERTFILE", cert), ("RAYMAKER_RUNTIME_TLS_KEYFILE", key)):
            if not os.path.isfile(path):
                raise ValueError(f"{var} {path!r} is not a file")
        return RuntimeListener(
            url.rstrip("/"), parts.hostname, port, os.path.abspath(cert), os.path.abspath(key)
        )
    return RuntimeListener(url.rstrip("/"), parts.hostname, port)


def start_serve() -> RuntimeListener:
    """Start Serve with the runtime listener (a no-op when it already runs) and the runtime ingress."""
    from ray import serve
    from ray.exceptions import RayActorError

    listener = runtime_listener()
    http: dict[str, Any] = {"host": listener.host, "port": listener.port}
    if listener.tls:
        http |= {"ssl_certfile": listener.certfile, "ssl_keyfile": listener.keyfile}
    access_log = os.environ.get("RAYMAKER_SERVE_ACCESS_LOG") == "1"
    # Per-request access logging costs about a millisecond a request: off unless asked for.
    # Serve's ingress runs on every node by default (clients may use any node's address); where
    # several nodes share one address (nodes on one machine) only one of them can listen on it.
    location = os.environ.get("RAYMAKER_SERVE_PROXY_LOCATION") or None
    if location not in (None, "EveryNode", "HeadOnly"):
        raise ValueError(f"RAYMAKER_SERVE_PROXY_LOCATION {location!r} must be EveryNode or HeadOnly")
    options = dict(
        http_options=http,
        **({"proxy_location": location} if location else {}),
        logging_config={"enable_access_log": access_log, "log_level": "INFO" if access_log else "WARNING"},
    )
    try:
        serve.start(**options)
    except (TimeoutError, RayActorError) as e:
        # The first proxy was slow to start (serve.start waits 60 s) or the controller gave up on it:
        # the controller keeps (re)starting proxies, so connect to it again; the endpoint is InService
        # only once wait_reachable has seen its route answer through the listener.
        logger.warning("Serve's proxy did not start at once (%r): connecting to Serve's controller again", e)
        serve.start(**options)
    return listener


def set_routes(endpoints: dict[str, list[dict[str, Any]]], guard: str = "") -> None:
    """Give the runtime ingress its routing table: endpoint -> [{name, app, weight}], and the job
    service that checks and records invocations (``guard``). Only the ingress's ``user_config``
    changes, so its replicas are reconfigured in place; waits until they all are."""
    from ray import serve

    from raymaker.serve.replicas import CODE_VERSION, ROUTE_PREFIX, RUNTIME_APP, RuntimeIngress

    # `version` is internal in Serve 2.60's options(); it is the only way to keep the replicas across
    # serve.run calls (user_config alone is then applied in place, through reconfigure).
    app = RuntimeIngress.options(
        user_config={"endpoints": endpoints, "guard": guard}, version=CODE_VERSION, _internal=True
    ).bind()
    serve.run(app, name=RUNTIME_APP, route_prefix=ROUTE_PREFIX)


def wait_reachable(endpoint: str, timeout_s: float = 60.0) -> None:
    """Wait until ``GET /endpoints/<name>/ping`` answers 200 through the listener, as a client would
    call it. Serve reports the runtime application RUNNING before HAProxy has reloaded with its route;
    an endpoint is not InService until requests really reach it."""
    import http.client
    import ssl

    listener = runtime_listener()
    host = "127.0.0.1" if listener.host in ("0.0.0.0", "::") else listener.host
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        if listener.tls:
            # The listener's own certificate may be self-signed: this probe checks reachability only.
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, listener.port, timeout=2, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection(host, listener.port, timeout=2)
        try:
            conn.request("GET", f"/endpoints/{endpoint}/ping")
            status = conn.getresponse().status
            if status == 200:
                return
        except OSError as e:
            status = repr(e)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(
        f"{listener.url}/endpoints/{endpoint}/ping did not answer 200 in {timeout_s:.0f} s ({status})"
    )


CONTAINER_CONSTRUCTOR_RETRIES = 2
SERVE_USER_THREAD = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"


@dataclass(frozen=True)
class VariantPlan:
    """One production variant as Serve will run it."""

    endpoint: str
    variant: str
    model: ModelSpec
    instance_count: int
    num_cpus: float
    num_gpus: float = 0.0
    # Ray custom resources of each replica: an instance of a node type asks for one of its own name.
    custom_resources: tuple[tuple[str, float], ...] = ()
    weight: float = 1.0
    min_replicas: int | None = None  # ManagedInstanceScaling: autoscaling between these bounds
    max_replicas: int | None = None
    target_inflight: float = DEFAULT_TARGET_INFLIGHT
    guard: str = ""  # the job service that checks and records its invocations (serve.guard); "" none
    instance_type: str = ""  # what its instances are billed as

    def app_name(self, generation: int, direct: bool = False) -> str:
        """A direct (single-variant) endpoint keeps one application for its life, updated in place; a
        variant behind the runtime ingress gets a new application per deployment generation."""
        return f"ep.{self.endpoint}" if direct else f"ep.{self.endpoint}.{self.variant}.g{generation}"

    def user_config(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"endpoint": self.endpoint, "variant": self.variant, "model": asdict(self.model), "guard": self.guard}

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "ray_actor_options": {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "resources": dict(self.custom_resources),
            },
            "max_ongoing_requests": max(8, int(self.target_inflight * 4)),
            "health_check_period_s": 2.0,
            # Replicas retired by an update finish what they hold before they stop.
            "graceful_shutdown_wait_loop_s": 0.5,
            "graceful_shutdown_timeout_s": 30.0,
        }
        if self.model.is_container:
            # A container that cannot start says why at once (serve.container): retrying it many
            # times only delays the endpoint's Failed.
            options["max_constructor_retry_count"] = CONTAINER_CONSTRUCTOR_RETRIES
            # Its requests are awaited, never computed here, so they can run on Serve's own event loop:
            # a second loop in its own thread costs ~0.3 ms a request in cross-thread hops
            # (benchmarks/container_overhead.py). Read when the replica's process imports Serve.
            options["ray_actor_options"]["runtime_env"] = {"env_vars": {SERVE_USER_THREAD: "0"}}
        if self.min_replicas is not None and self.max_replicas is not None:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": min(max(self.instance_count, self.min_replicas), self.max_replicas),
                "target_ongoing_requests": self.target_inflight,
                "metrics_interval_s": 1.0,
                "look_back_period_s": 5.0,
                "upscale_delay_s": 2.0,
                "downscale_delay_s": 30.0,
            }
        else:
            options["num_replicas"] = self.instance_count
        return options


def deploy_variant(
    plan: VariantPlan, generation: int, settings: S3Settings | None, timeout_s: float, *, direct: bool = False
) -> str:
    """Start (or update) the variant's application and wait until its replicas have loaded the model.
    ``direct``: the application takes the endpoint's HTTP route itself. Raises RuntimeError with Serve's
    reason (e.g. the model failed to load) or on timeout; a new application is deleted then."""
    from ray import serve

    from raymaker.serve.replicas import CODE_VERSION, ROUTE_PREFIX, VariantServer

    name = plan.app_name(generation, direct)
    existed = name in serve.status().applications
    options = plan.deployment_options() | {"user_config": plan.user_config()}
    app = VariantServer.options(version=CODE_VERSION, _internal=True, **options).bind(settings)
    route = f"{ROUTE_PREFIX}/{plan.endpoint}" if direct else None
    serve._run(app, _blocking=False, name=name, route_prefix=route)
    try:
        wait_running(name, timeout_s)
    except BaseException:
        if not existed:
            delete_app(name)
        raise
    return name


def probe_model(spec: ModelSpec, settings: S3Settings | None) -> None:
    """Load the model once in a short-lived task: an in-place update must not hand running replicas a
    model that cannot load. Raises the load error."""
    import ray

    @ray.remote(num_cpus=0.1, max_retries=0)
    def load(spec: ModelSpec, settings: S3Settings | None) -> bool:
        from raymaker.serve.model import LoadedModel

        LoadedModel(spec, settings).close()
        return True

    try:
        ray.get(load.remote(spec, settings))
    except ray.exceptions.RayTaskError as e:
        raise RuntimeError(str(e.cause) if e.cause is not None else str(e)) from None


def wait_running(app: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app)
        if status is not None:
            if status.status == "RUNNING":
                return
            if status.status == "DEPLOY_FAILED":
                raise RuntimeError(_failure_message(status))
        if time.monotonic() > deadline:
            why = _failure_message(status) if status is not None else "it never started"
            raise RuntimeError(f"not ready after {timeout_s:.0f} s: {why}")
        time.sleep(0.1)


def _failure_message(status: Any) -> str:
    messages = [d.message for d in status.deployments.values() if getattr(d, "message", "")]
    text = " ".join(messages) or status.message or str(status.status)
    # Serve wraps the replica's traceback; the last line names the actual error.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    return (errors[-1] if errors else lines[-1] if lines else text)[:1000]


def delete_app(name: str, wait: bool = False) -> None:
    """Delete a Serve application. By default without waiting: its replicas finish the requests they
    hold and stop in the background (under HAProxy, Serve also keeps them for a draining period)."""
    from ray import serve

    try:
        serve.delete(name, _blocking=wait)
    except Exception:  # noqa: BLE001 - already gone
        pass


def replica_counts(apps: dict[str, str]) -> dict[str, int]:
    """Running replicas per variant (variant -> app), for DescribeEndpoint's CurrentInstanceCount."""
    from ray import serve

    out: dict[str, int] = {}
    try:
        applications = serve.status().applications
    except Exception:  # noqa: BLE001 - Serve not reachable: report nothing live
        return out
    for variant, app in apps.items():
        status = applications.get(app)
        if status is None:
            continue
        for d in status.deployments.values():
            out[variant] = int(d.replica_states.get("RUNNING", 0))
    return out
