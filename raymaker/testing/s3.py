"""A real S3 API server on 127.0.0.1 for tests and benchmarks: moto's standalone server (``moto[server]``,
a test dependency), started as a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from typing import BinaryIO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server(log: BinaryIO, timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start moto's S3 server on a free loopback port; return the process and its endpoint URL once it
    answers. Output goes to ``log``."""
    port = free_port()
    script = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    cmd = [script] if script else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"moto server exited with {proc.returncode}; see {getattr(log, 'name', 'its log')}"
            )
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=1):
                return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(
                    f"moto server did not answer on {endpoint} within {timeout_s:.0f} s"
                ) from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
