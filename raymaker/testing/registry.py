"""A real image registry on 127.0.0.1 for tests: Docker's distribution registry (Debian's
``docker-registry``) with htpasswd authentication, over plain HTTP (the runtime is told it is insecure
through a registries.conf of its own: ``CONTAINERS_REGISTRIES_CONF``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import bcrypt

from raymaker.testing.s3 import free_port

BINARY = "docker-registry"


@dataclass
class Registry:
    address: str  # host:port
    user: str
    password: str
    registries_conf: str  # a registries.conf that marks this registry insecure (HTTP)
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_registry(root: str, user: str = "raymaker", password: str = "registry-secret") -> Registry:
    """Start a registry storing under ``root``, answering once its port takes connections."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise FileNotFoundError(f"{BINARY} is missing: install Debian's docker-registry")
    port = free_port()
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "htpasswd"), "w") as f:  # the registry reads bcrypt only
        f.write(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
    config = os.path.join(root, "config.yml")
    with open(config, "w") as f:
        f.write(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
            f"auth:\n  htpasswd:\n    realm: raymaker-test\n    path: {root}/htpasswd\n"
        )
    conf = os.path.join(root, "registries.conf")
    with open(conf, "w") as f:
        f.write(f'[[registry]]\nlocation = "127.0.0.1:{port}"\ninsecure = true\n')
    process = subprocess.Popen([binary, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"{BINARY} did not start on 127.0.0.1:{port}") from None
            time.sleep(0.05)
    return Registry(f"127.0.0.1:{port}", user, password, conf, process)
