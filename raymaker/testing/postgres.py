"""A real PostgreSQL server for tests and benchmarks: initdb into a temporary directory, listening on
127.0.0.1 only, with a password (so the URL a shared service would take is what the tests use).

The server refuses to run as root: as root, its files belong to the ``postgres`` user and its
commands run as that user (Debian's ``postgresql`` package makes it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

USER = "raymaker"
PASSWORD = "raymaker-test"


def server_binaries() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    port: int
    home: Path  # the data directory, the log and the socket
    bin_dir: Path
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database on this server; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)


def start_postgres_server() -> PostgresServer:
    """Start a throwaway server; ``.stop()`` removes it. RuntimeError if no server binaries are here."""
    bin_dir = server_binaries()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: install Debian's "
            "`postgresql` package (.ci/run does) or put them on PATH"
        )
    run_as = None
    root = os.getuid() == 0
    if root:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as") from None
        run_as = "postgres"
    base = Path(tempfile.mkdtemp(prefix="raymaker-pg-"))  # under /tmp: the postgres user can reach it
    data_dir = base / "data"  # PostgresServer.data_dir
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if root:
        shutil.chown(base, "postgres")
        shutil.chown(pwfile, "postgres")
    server = PostgresServer(port=_free_port(), home=base, bin_dir=bin_dir, run_as=run_as)
    server._run(
        "initdb", "-D", str(data_dir), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
        "-E", "UTF8", "--locale=C",
    )
    pwfile.unlink()
    try:
        server._run(
            "pg_ctl", "-D", str(data_dir), "-w", "-t", "60", "-l", str(base / "server.log"),
            "-o", f"-p {server.port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=200 -c fsync=off",
            "start",
        )
    except subprocess.CalledProcessError as e:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{log}") from None
    return server


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
