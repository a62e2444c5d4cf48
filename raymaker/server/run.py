"""Running the API server: uvicorn on a host and port, HTTPS with a certificate and key, and the rule
that whatever listens beyond loopback checks signatures."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from raymaker.engine.api import SageMakerAPI
from raymaker.engine.users import Directory
from raymaker.server.app import APIServer

DEFAULT_PORT = 8081  # the runtime (endpoints) listens on 8080


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    auth: bool = True,
    certfile: str | None = None,
    keyfile: str | None = None,
    api: SageMakerAPI | None = None,
    key_cache_s: float = 2.0,
    console: bool = True,
) -> Any:
    """A ``uvicorn.Server`` for the API and, unless ``console`` is False, the web console under
    ``/console/`` (not started). ValueError when the settings would expose unsigned access beyond this
    machine, or give half a TLS pair."""
    import uvicorn

    if not auth and not is_loopback(host):
        raise ValueError(
            f"an API server on {host} answers other machines, so it must check signatures: drop --no-auth, "
            "or listen on 127.0.0.1"
        )
    if bool(certfile) != bool(keyfile):
        raise ValueError("HTTPS needs both a certificate (--certfile) and its private key (--keyfile)")
    api = api or SageMakerAPI()
    # A deleted key or a changed policy takes effect within key_cache_s (each request reads no database).
    app = APIServer(api, auth=auth, directory=Directory(api.store, key_cache_s) if auth else None,
                    console=console)
    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
        access_log=False, lifespan="on", timeout_keep_alive=75, timeout_graceful_shutdown=30,
    )
    return uvicorn.Server(config)


def start_in_thread(server: Any, timeout_s: float = 30.0) -> threading.Thread:
    """Run ``server`` in a daemon thread (tests, embedding) and wait until it listens."""
    thread = threading.Thread(target=server.run, daemon=True, name="raymaker-api-server")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API server did not start on {server.config.host}:{server.config.port}")
        time.sleep(0.02)
    return thread


def spawn(port: int, home: str | None = None, *extra: str) -> subprocess.Popen:
    """``raymaker server --port PORT`` as a process of its own (benchmarks, a supervisor), listening
    when this returns; ``home``: its RAYMAKER_HOME."""
    env = {**os.environ, **({"RAYMAKER_HOME": home} if home else {})}
    proc = subprocess.Popen([sys.executable, "-m", "raymaker.cli", "server", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"raymaker server did not start on port {port} (exit status {proc.poll()})")
        time.sleep(0.1)
