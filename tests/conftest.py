"""Shared fixtures: a real S3 API server (moto's standalone server) and a throwaway RAYMAKER_HOME.

``s3_server`` sets the AWS environment before anything else starts, so a Ray fixture that depends on it
hands the same endpoint and credentials to every Ray worker. It must not depend on Ray itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from raymaker.testing import start_moto_server, stop


@pytest.fixture(scope="session", autouse=True)
def raymaker_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every test session gets its own RAYMAKER_HOME (job database, caches): never the user's."""
    home = str(tmp_path_factory.mktemp("raymaker_home"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYMAKER_HOME", home)
        yield home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server on 127.0.0.1 for this test session (started on first use)."""
    from raymaker.testing.postgres import start_postgres_server

    server = start_postgres_server()
    yield server
    server.stop()


@dataclass
class S3Server:
    endpoint_url: str
    client: Any  # boto3 S3 client with the test credentials
    process: subprocess.Popen

    def _post(self, path: str, body: bytes) -> dict:
        # Not form-encoded (urllib's default), or the server reads an empty body.
        req = urllib.request.Request(
            self.endpoint_url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    @contextlib.contextmanager
    def auth_enabled(self) -> Iterator[None]:
        """Make the server check signatures and IAM permissions (moto only does so when asked), so
        unknown keys, wrong secrets and missing permissions are refused for real."""
        previous = self._post("/moto-api/reset-auth", b"0")["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", str(previous).encode())

    def new_bucket(self) -> str:
        name = f"rm-test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc, endpoint = start_moto_server(log)
    try:
        with pytest.MonkeyPatch.context() as mp:
            env = {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint,
                # Keep the developer's own AWS setup out of the tests.
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            }
            for k, v in env.items():
                mp.setenv(k, v)
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "RAYMAKER_S3_ENDPOINT_URL"):
                mp.delenv(k, raising=False)
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            yield S3Server(endpoint_url=endpoint, client=client, process=proc)
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, uniquely named bucket on the test server."""
    return s3_server.new_bucket()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(s3_server: S3Server) -> Iterator[None]:
    """One Ray instance for the whole test session (starting Ray costs seconds on 2 cores), started after
    the S3 environment is set so that every Ray process inherits it. Token authentication stays on."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        # Train's controller polls reports at this interval (default 2 s): keeps runs short.
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
        # Endpoints on Serve's HAProxy ingress, as the product runs them (see engine.cluster.ensure_ray).
        from raymaker.cluster.runtime import ray_env_for_serving

        env = {}
        ray_env_for_serving(env)
        for k, v in env.items():
            mp.setenv(k, v)
        # Endpoints listen on a free port, never on a raymaker the developer may be running on 8080.
        mp.setenv("RAYMAKER_RUNTIME_URL", f"http://127.0.0.1:{free_port()}")
        # HAProxy's stats and metrics listeners default to fixed ports (8404, 9101): move them too.
        mp.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
        mp.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
        # address="local": a new instance, even while a scenario's own cluster runs on the machine
        # (ray.init() alone would join it).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def background_scenarios(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The scenarios with Ray clusters of their own (tests/e2e/scenarios.py) that this run selected,
    started now in the background: their clusters start while the other tests run."""
    from tests.e2e.scenarios import SCENARIOS, Scenario

    selected = {item.path.name for item in request.session.items} & set(SCENARIOS)
    running: dict = {}
    if selected:
        s3 = request.getfixturevalue("s3_server")
        for module in sorted(selected):
            home = str(tmp_path_factory.mktemp(module.removesuffix(".py")))
            running[module] = Scenario(SCENARIOS[module], s3.new_bucket(), home)
    try:
        yield running
    finally:
        for scenario in running.values():
            scenario.stop()


@pytest.fixture(scope="session")
def api_server_url(ray_session) -> Iterator[str]:
    """``raymaker server`` over the test session's own job database, on 127.0.0.1 without signature
    checks (what a loopback listener may do; signatures are tested in tests/e2e/test_api_server.py):
    the HTTP backend's wire path, for tests that run on both backends."""
    from raymaker.server.run import make_server, start_in_thread

    port = free_port()
    server = make_server("127.0.0.1", port, auth=False)
    thread = start_in_thread(server)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = server.force_exit = True
        thread.join(10)


BACKENDS = ["in-process", "http"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend_session(request: pytest.FixtureRequest, ray_session) -> Iterator[Any]:
    """A Session on each backend in turn, with ``RAYMAKER_ENDPOINT_URL`` set for the HTTP one (so the
    CLI's own Sessions take it too): a module using it runs every test on both, and they cannot drift."""
    from raymaker import Session

    if request.param == "in-process":
        yield Session()
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYMAKER_ENDPOINT_URL", request.getfixturevalue("api_server_url"))
        session = Session()
        assert type(session.backend).__name__ == "HTTPBackend"
        yield session
