"""A local Ray cluster that outlives the scripts using it: ``raymaker up`` / ``down`` / ``status``.

``up`` runs ``ray start --head --block`` in a process group of its own, with the dashboard (and so
Ray's Jobs server) on 127.0.0.1, token authentication on, and the environment every Ray process of
raymaker needs (``cluster_env``). It writes what it started to ``$RAYMAKER_HOME/cluster/local.json``:
``running()`` reads that file (a file read, a ``kill(pid, 0)`` and a TCP connect: no Ray connect), so
``ensure_ray()`` can join the cluster cheaply and ``down`` stops exactly that cluster: it sends SIGTERM
to the blocking ``ray start`` (which stops every process it started), then kills whatever is left of
its process group and every process carrying the cluster's ``RAYMAKER_CLUSTER_ID`` in its
environment (drivers of Ray jobs, HAProxy), never any other Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raymaker.cluster import haproxy
from raymaker.protocol.environment import raymaker_home

HOST = "127.0.0.1"
DEFAULT_GCS_PORT = 6379
DEFAULT_DASHBOARD_PORT = 8265
MARKER = "RAYMAKER_CLUSTER_ID"  # in the environment of every process of a cluster ``up`` started
AUTH_MODE = "RAY_AUTH_MODE"
# HAProxy's stats and metrics listeners (Serve's HAProxy ingress) default to fixed ports, 8404 and
# 9101: a second Ray on the machine, or anything else there, makes the deploy fail.
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
PROXY_READY_CHECK_TIMEOUT_S = "30"  # Serve's default is 5
# Passed on to the cluster's processes by name in ``up``'s report (values may be secrets).
CARRIED_PREFIXES = ("AWS_", "RAYMAKER_")


# --- ports ----------------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    """Whether ``port`` can be bound on ``host`` now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def listening(address: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def choose_port(wanted: int | None, default: int, *, host: str = HOST) -> tuple[int, str | None]:
    """The port to use and, when it is not what was asked for, why. A port the user asked for is used
    if free (else ValueError, at once: Ray would try for 40 s); the default when free, else a free one."""
    if wanted is not None:
        if not port_free(wanted, host):
            raise ValueError(f"port {wanted} is in use: choose another, or leave it out for a free one")
        return wanted, None
    if port_free(default, host):
        return default, None
    port = free_port(host)
    return port, f"port {default} is in use, so {port} instead"


# --- environment ----------------------------------------------------------------------------------


def serving_env(environ: MutableMapping[str, str]) -> None:
    """What Serve reads when its controller and proxies start, set (unless the user set it) in the
    environment Ray starts with. Serve's HAProxy ingress answers in ~1 ms where its Python proxy takes
    ~10 ms, but it does not terminate TLS: used unless the runtime URL is https. Its stats and metrics
    listeners get free ports, never their fixed defaults, and listen on 127.0.0.1 only (``haproxy``)."""
    https = (environ.get("RAYMAKER_RUNTIME_URL") or "").startswith("https:")
    environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "0" if https else "1")
    if environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and not environ.get(haproxy.BINARY_ENV):
        wrapper = haproxy.loopback_wrapper()  # its stats and metrics listeners on 127.0.0.1 only
        if wrapper:
            environ[haproxy.BINARY_ENV] = wrapper
    # Under HAProxy a stopping replica lingers 30 s for external load balancers to notice; here the
    # only balancer is Serve's own HAProxy, which the controller updates at once.
    environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    # Serve gives a starting proxy 5 s to answer ready, three times, then kills it, and serve.start
    # fails with the proxy's death. On a busy machine (a CI run: several nodes on two cores) starting
    # its process, imports and HAProxy took longer, and the endpoint Failed.
    environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", PROXY_READY_CHECK_TIMEOUT_S)
    taken: set[int] = set()
    for name in HAPROXY_PORTS:
        if not environ.get(name):
            port = free_port()
            while port in taken:
                port = free_port()
            environ[name] = str(port)
        taken.add(int(environ[name]))


def ray_env(environ: MutableMapping[str, str]) -> None:
    """Everything raymaker needs in the environment of every Ray process, set unless already set."""
    # Train's controller polls worker reports at this interval (2 s by default): every checkpoint
    # report would wait that long.
    environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    serving_env(environ)


def cluster_env(
    environ: Mapping[str, str], *, home: Path, cluster_id: str, python: str = sys.executable
) -> dict[str, str]:
    """The environment ``ray start`` runs with, and so every process of the cluster (the job service,
    training workers, Serve, the drivers of Ray jobs): the caller's (its AWS_* and RAYMAKER_*
    settings reach every job), plus ``ray_env``, token authentication (unless the user chose a mode),
    this ``RAYMAKER_HOME`` pinned (one job database for the CLI and the jobs), this interpreter's
    directory first on PATH (a Ray job's ``python`` is raymaker's), and the cluster's marker."""
    env = dict(environ)
    env.pop("RAY_ADDRESS", None)  # a head starts its own cluster
    ray_env(env)
    env.setdefault(AUTH_MODE, "token")
    # On SIGTERM ``ray start`` first drains its node, waiting (30 s) until every lease is returned:
    # the detached job service never returns its own, so ``down`` would always wait it out. A
    # one-machine cluster has nowhere to drain to.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    env["RAYMAKER_HOME"] = str(home.expanduser().resolve())
    bindir = os.path.dirname(python)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = os.pathsep.join([bindir, path]) if path else bindir
    env[MARKER] = cluster_id
    return env


def default_ray_temp_dir(environ: Mapping[str, str]) -> str:
    """Ray's root temp dir when none is given (``ray._common.utils.get_default_ray_temp_dir``)."""
    base = environ.get("RAY_TMPDIR") or (sys.platform.startswith("linux") and environ.get("TMPDIR")) or "/tmp"
    return os.path.join(base, "ray")


def carried_settings(environ: Mapping[str, str]) -> list[str]:
    """The names of the AWS_* and RAYMAKER_* settings a cluster started from ``environ`` carries."""
    return sorted(k for k in environ if k.startswith(CARRIED_PREFIXES) and k != MARKER)


# --- the authentication token ---------------------------------------------------------------------


def default_token_path() -> Path:
    """Where Ray keeps its token unless RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH say otherwise."""
    return Path.home() / ".ray" / "auth_token"


def token_source(environ: Mapping[str, str]) -> str:
    """Where Ray's processes and CLI find the token, in Ray's own order."""
    if environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        return environ["RAY_AUTH_TOKEN_PATH"]
    return str(default_token_path())


def read_token(environ: Mapping[str, str]) -> str | None:
    """The token Ray would use (RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else
    ``~/.ray/auth_token``), or None."""
    if environ.get("RAY_AUTH_TOKEN"):
        return environ["RAY_AUTH_TOKEN"].strip()
    path = Path(environ.get("RAY_AUTH_TOKEN_PATH") or default_token_path()).expanduser()
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def ensure_token(environ: Mapping[str, str]) -> bool:
    """Make sure a token exists, as ``ray.init()`` does for a new local cluster (``ray start`` would
    start without authentication, or refuse, instead); True when one was written. Written once, to
    ``~/.ray/auth_token`` (or RAY_AUTH_TOKEN_PATH), readable by this user only, never over another."""
    if read_token(environ):
        return False
    path = Path(environ.get("RAY_AUTH_TOKEN_PATH") or default_token_path()).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # an empty file, or another process wrote one just now
        if read_token(environ):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # what Ray's own generator writes
    return True


# --- the record of a running cluster --------------------------------------------------------------


@dataclass
class LocalCluster:
    """What ``up`` started, as ``$RAYMAKER_HOME/cluster/local.json`` holds it."""

    pid: int  # the blocking ``ray start``, leader of the cluster's process group
    gcs_address: str  # host:port, for ray.init and ``ray status --address``
    dashboard_url: str  # the dashboard and Ray's Jobs server
    cluster_id: str  # the marker in every process's environment
    auth_mode: str  # "token" or "disabled"
    home: str
    temp_dir: str = ""  # Ray's root temp dir: its sessions' logs, ray_current_cluster
    num_cpus: float | None = None
    log: str = ""  # ray start's output
    started: float = field(default_factory=time.time)
    carried: list[str] = field(default_factory=list)  # AWS_* / RAYMAKER_* names it was started with

    @classmethod
    def from_json(cls, text: str) -> LocalCluster:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def submit_command(self, script: str = "driver.py") -> str:
        return f"ray job submit --address {self.dashboard_url} --working-dir . -- python {script}"

    def cli_exports(self) -> list[str]:
        """What a shell needs so that Ray's own CLI (``ray status``, ``ray job submit``) and
        ``JobSubmissionClient`` authenticate: they send the token only when RAY_AUTH_MODE=token is in
        their environment (they find the token where the cluster does, ``token_source``)."""
        return [f"export {AUTH_MODE}=token"] if self.auth_mode == "token" else []


def state_dir(home: Path | None = None) -> Path:
    return (home or raymaker_home()) / "cluster"


def state_file(home: Path | None = None) -> Path:
    return state_dir(home) / "local.json"


def read_state(home: Path | None = None) -> LocalCluster | None:
    try:
        return LocalCluster.from_json(state_file(home).read_text())
    except (OSError, ValueError, TypeError):
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def running(home: Path | None = None) -> LocalCluster | None:
    """The cluster ``up`` started for this RAYMAKER_HOME if it is still there (its ``ray start`` alive
    and its GCS accepting connections), else None. Milliseconds: no Ray connect."""
    cluster = read_state(home)
    if cluster is None or not process_alive(cluster.pid) or not _is_ray_start(cluster.pid):
        return None
    return cluster if listening(cluster.gcs_address) else None


def same_address(address: str, gcs_address: str) -> bool:
    """Whether a Ray address names this machine's cluster at ``gcs_address`` (Ray records a local head
    under the node's IP, while a user may write 127.0.0.1 or localhost)."""
    address = address.removeprefix("ray://").strip()
    if address == gcs_address:
        return True
    host, _, port = address.rpartition(":")
    return port == gcs_address.rpartition(":")[2] and host in (HOST, "localhost")


def _is_ray_start(pid: int) -> bool:
    """Whether ``pid`` is still a ``ray start --head`` (not a reused process id)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: trust the live pid and the GCS port
    return b"start" in argv and b"--head" in argv


# --- up -------------------------------------------------------------------------------------------


def ray_start_command(
    *,
    gcs_port: int,
    dashboard_port: int,
    agent_port: int,
    client_port: int,
    num_cpus: float | None = None,
    temp_dir: str | None = None,
    dashboard_host: str = HOST,
    python: str = sys.executable,
) -> list[str]:
    """``ray start --head --block`` for a one-machine cluster on 127.0.0.1. Every port Ray would
    otherwise take at a fixed number (the GCS 6379, the dashboard 8265, the dashboard agent 52365,
    the Ray Client server 10001) is given, so two clusters never clash."""
    cmd = [
        python, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        f"--port={gcs_port}",
        "--include-dashboard=true",
        f"--dashboard-host={dashboard_host}",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--ray-client-server-port={client_port}",
        "--disable-usage-stats",
    ]  # fmt: skip
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus:g}")
    if temp_dir:
        cmd.append(f"--temp-dir={temp_dir}")
    return cmd


class StartError(RuntimeError):
    """``ray start`` failed or did not come up in time; the message holds its last lines."""


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One ``up`` / ``down`` at a time per RAYMAKER_HOME."""
    import fcntl

    state_dir(home).mkdir(parents=True, exist_ok=True)
    with open(state_dir(home) / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up(
    *,
    num_cpus: float | None = None,
    gcs_port: int | None = None,
    dashboard_port: int | None = None,
    temp_dir: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    notes: list[str] | None = None,
) -> tuple[LocalCluster, bool]:
    """Start the local cluster, or find the one already running: (the cluster, whether it started
    now). ``notes`` collects what differs from what was asked for (a default port that was taken)."""
    home = (home or raymaker_home()).expanduser().resolve()
    environ = os.environ if environ is None else environ
    notes = [] if notes is None else notes
    with _locked(home):
        existing = running(home)
        if existing is not None:
            return existing, False
        gcs, why = choose_port(gcs_port, DEFAULT_GCS_PORT, host="0.0.0.0")  # the GCS binds every address
        if why:
            notes.append(f"GCS: {why}")
        dash, why = choose_port(dashboard_port, DEFAULT_DASHBOARD_PORT)
        if why:
            notes.append(f"dashboard: {why}")
        cluster_id = secrets.token_hex(8)
        env = cluster_env(environ, home=home, cluster_id=cluster_id)
        temp_dir = os.path.abspath(temp_dir or default_ray_temp_dir(env))
        if env[AUTH_MODE].lower() == "token" and ensure_token(env):
            notes.append(f"wrote a new Ray authentication token to {token_source(env)}")
        cmd = ray_start_command(
            gcs_port=gcs,
            dashboard_port=dash,
            agent_port=free_port(),
            client_port=free_port(),
            num_cpus=num_cpus,
            temp_dir=temp_dir,
        )
        log_path = state_dir(home) / "ray-start.log"
        t0 = time.time()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: ``down`` ends exactly this
                cwd=str(home),
            )
        cluster = LocalCluster(
            pid=proc.pid,
            gcs_address=f"{HOST}:{gcs}",
            dashboard_url=f"http://{HOST}:{dash}",
            cluster_id=cluster_id,
            auth_mode=env[AUTH_MODE].lower(),
            home=str(home),
            temp_dir=temp_dir,
            num_cpus=num_cpus,
            log=str(log_path),
            started=t0,
            carried=carried_settings(environ),
        )
        try:
            _wait_until_up(cluster, proc, timeout)
        except BaseException:
            _stop_processes(cluster, grace=10.0)
            raise
        state_file(home).write_text(cluster.to_json())
        return cluster, True


def _wait_until_up(cluster: LocalCluster, proc: subprocess.Popen, timeout: float) -> None:
    """Until ``ray start`` wrote the cluster's address (it does once every process is up) and the
    Jobs server answers; the address Ray wrote (the node's IP, which Ray uses for 127.0.0.1 too)
    becomes the cluster's."""
    deadline = time.monotonic() + timeout
    port = cluster.gcs_address.rpartition(":")[2]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StartError(f"ray start exited ({proc.returncode}):\n{_tail(cluster.log)}")
        address = _current_cluster(cluster.temp_dir, newer_than=cluster.started)
        if address and address.rpartition(":")[2] == port and jobs_server_answers(cluster):
            cluster.gcs_address = address
            return
        time.sleep(0.25)
    raise StartError(f"Ray did not come up within {timeout:.0f} s:\n{_tail(cluster.log)}")


def _current_cluster(temp_dir: str, newer_than: float = 0.0) -> str | None:
    """The address in ``<temp dir>/ray_current_cluster`` (``ray start`` writes it once it is up)."""
    path = Path(temp_dir) / "ray_current_cluster"
    try:
        if path.stat().st_mtime < newer_than:
            return None
        return path.read_text().strip() or None
    except OSError:
        return None


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the dashboard's HTTP API ---------------------------------------------------------------------


def dashboard_get(cluster: LocalCluster, path: str, timeout: float = 5.0) -> Any:
    """GET a dashboard path, authenticated as Ray's CLI is, decoded from JSON."""
    request = urllib.request.Request(cluster.dashboard_url + path)
    token = read_token(os.environ) if cluster.auth_mode == "token" else None
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def jobs_server_answers(cluster: LocalCluster) -> bool:
    try:
        dashboard_get(cluster, "/api/version", timeout=2.0)
    except (OSError, ValueError):
        return False
    return True


def describe(cluster: LocalCluster) -> dict[str, Any]:
    """What ``status`` shows beyond the record: Ray's version (the Jobs server answering), its jobs,
    nodes and resources, and raymaker's job services (detached actors); a part that cannot be read
    says why instead."""
    out: dict[str, Any] = {}
    try:
        out["version"] = dashboard_get(cluster, "/api/version")
    except (OSError, ValueError) as e:
        out["version_error"] = str(e)
    try:
        jobs = dashboard_get(cluster, "/api/jobs/") or []
        counts: dict[str, int] = {}
        for job in jobs:
            if job.get("type") == "SUBMISSION":  # not the drivers of scripts that joined the cluster
                counts[job.get("status", "?")] = counts.get(job.get("status", "?"), 0) + 1
        out["ray_jobs"] = counts
    except (OSError, ValueError) as e:
        out["ray_jobs_error"] = str(e)
    try:
        out["nodes"] = _state_list(cluster, "nodes", "state", "ALIVE")
    except (OSError, ValueError, KeyError) as e:
        out["nodes_error"] = str(e)
    try:
        actors = _state_list(cluster, "actors", "state", "ALIVE")
        out["job_services"] = [
            a.get("name") for a in actors if str(a.get("name") or "").startswith("raymaker-job-service")
        ]
    except (OSError, ValueError, KeyError) as e:
        out["job_services_error"] = str(e)
    return out


def _state_list(cluster: LocalCluster, kind: str, key: str, value: str) -> list[dict[str, Any]]:
    """Ray's state API (``ray list nodes|actors``) through the dashboard."""
    path = (
        f"/api/v0/{kind}?limit=1000&timeout=10&detail=1"
        f"&filter_keys={key}&filter_predicates=%3D&filter_values={value}"
    )
    return dashboard_get(cluster, path, timeout=12.0)["data"]["result"]["result"]


# --- down -----------------------------------------------------------------------------------------


def down(home: Path | None = None, timeout: float = 30.0) -> LocalCluster | None:
    """Stop the cluster ``up`` started for this RAYMAKER_HOME (None when there was none)."""
    home = (home or raymaker_home()).expanduser().resolve()
    with _locked(home):
        cluster = read_state(home)
        if cluster is None:
            return None
        if process_alive(cluster.pid) and not _is_ray_start(cluster.pid):
            cluster.pid = -1  # the pid was reused: only the marker sweep below is safe
        _stop_processes(cluster, grace=timeout)
        _forget_address(cluster)
        with contextlib.suppress(FileNotFoundError):
            state_file(home).unlink()
        return cluster


def _stop_processes(cluster: LocalCluster, grace: float) -> None:
    """SIGTERM to the blocking ``ray start`` (it stops the processes it started), then SIGKILL, until
    none is left, to its process group and to every process carrying the cluster's marker (a dying
    dashboard may still fork its modules)."""
    if cluster.pid > 0 and process_alive(cluster.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(cluster.pid, signal.SIGTERM)
        _wait(lambda: not process_alive(cluster.pid), grace)
        _wait(lambda: not processes_of(cluster), 2.0)  # its children, as they exit by themselves
    deadline = time.monotonic() + 10.0
    while (left := processes_of(cluster)) and time.monotonic() < deadline:
        if cluster.pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(cluster.pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(cluster.pid, os.WNOHANG)  # reap it when this process started it (``up`` failed)


def _wait(done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)


def processes_of(cluster: LocalCluster) -> list[int]:
    """Live processes of the cluster: those in its process group, and those whose environment holds
    its marker (Ray jobs' drivers and their children run in sessions of their own)."""
    found = []
    needle = f"{MARKER}={cluster.cluster_id}".encode()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if _state(pid) in ("Z", "X", ""):
            continue
        try:
            if cluster.pid > 0 and os.getpgid(pid) == cluster.pid:
                found.append(pid)
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(pid)
        except (OSError, ProcessLookupError):
            continue
    return found


def _forget_address(cluster: LocalCluster) -> None:
    """``ray start`` wrote the cluster's address to ``<temp dir>/ray_current_cluster``, where any
    ``ray.init()`` on the machine would try to join it: remove it if it still names this cluster
    (as ``ray stop`` does)."""
    if _current_cluster(cluster.temp_dir) == cluster.gcs_address:
        with contextlib.suppress(OSError):
            (Path(cluster.temp_dir) / "ray_current_cluster").unlink()
