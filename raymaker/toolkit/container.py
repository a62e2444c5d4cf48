"""One host's run of a custom training container, as SageMaker runs ``docker run <image> train``: the
host's ``/opt/ml`` tree (config files, channels, Pipe FIFOs, model/, output/, checkpoints/)
bind-mounted at ``/opt/ml``, ``TRAINING_JOB_NAME`` / ``TRAINING_JOB_ARN`` and the request's
Environment, the job's hosts by their ``algo-N`` names, the instance type's CPUs, memory and GPUs as
limits, the output streamed line by line (MetricDefinitions apply), a stop as ``docker stop -t 120``,
and the exit code and ``/opt/ml/output/failure`` deciding the outcome (sagemaker-contract.md 2.1, 2.2).

No Ray here: the caller (an instance actor) hands in plain values and callbacks, as for scripts.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.containers.runtime import Runtime
from raymaker.io.channels import Channel
from raymaker.toolkit.metrics import MetricParser
from raymaker.toolkit.paths import MLTree
from raymaker.toolkit.process import MAX_REASON, STDERR_TAIL_LINES, read_failure_file, run_process
from raymaker.toolkit.runner import ScriptError, write_host_config

OPT_ML = "/opt/ml"
RUNTIME_FAILED = 125  # podman and docker: the runtime itself failed (no image, bad option, OCI error)
NOT_EXECUTABLE, NOT_FOUND = 126, 127  # the container's command cannot be run / does not exist


@dataclass(frozen=True)
class ContainerRun:
    """What one host needs to run the job's image. ``addresses`` maps every host name (algo-1, ...) to
    the address its instance has on the cluster; ``entrypoint`` / ``arguments`` are the request's
    ContainerEntrypoint / ContainerArguments."""

    job_name: str
    job_arn: str
    image: str
    hyperparameters: dict[str, str]
    channels: tuple[Channel, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    metric_definitions: tuple[tuple[str, str], ...] = ()
    instance_type: str = "ml.m5.xlarge"
    hosts: tuple[str, ...] = ("algo-1",)
    current_host: str = "algo-1"
    addresses: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mib: int | None = None
    gpus: tuple[int | str, ...] = ()
    checkpoint: dict[str, Any] | None = None
    entrypoint: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()

    def command_args(self) -> list[str]:
        """What follows the image: ContainerArguments if given; else ``train``, unless a
        ContainerEntrypoint replaced the image's (SageMaker then passes nothing)."""
        if self.arguments:
            return list(self.arguments)
        return [] if self.entrypoint else ["train"]


def container_name(job_name: str, host: str) -> str:
    """A name the runtimes accept ([a-zA-Z0-9][a-zA-Z0-9_.-]*), unique per job and host."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"raymaker-{job_name}-{host}")


def run_container(
    spec: ContainerRun,
    tree: MLTree,
    runtime: Runtime,
    *,
    on_log: Callable[[str], None],
    on_metrics: Callable[[dict[str, float]], None],
    stop: threading.Event,
    stage_data: Callable[[MLTree], contextlib.AbstractContextManager[Any]],
    grace_s: float = 120.0,
) -> None:
    """Run the image on this host in ``tree``; return when it exited 0, raise ``ScriptError`` (its
    FailureReason, the exit code) otherwise. ``stop`` stops it as StopTrainingJob does."""
    try:
        parser = MetricParser(spec.metric_definitions)
    except ValueError as e:
        raise ScriptError(f"ClientError: {e}") from None
    tree.make()
    write_host_config(tree, spec)
    env = {**spec.environment, "TRAINING_JOB_NAME": spec.job_name, "TRAINING_JOB_ARN": spec.job_arn}
    mounts = [(tree.root, OPT_ML, False)]
    local = (spec.checkpoint or {}).get("LocalPath")
    if local and not os.path.normpath(local).startswith(OPT_ML):  # a checkpoint folder elsewhere
        mounts.append((tree.local_path(local), local, False))
    name = container_name(spec.job_name, spec.current_host)
    cmd = runtime.run_command(
        spec.image, spec.command_args(), name=name, owner=spec.job_name, env=env, mounts=mounts,
        hostname=spec.current_host, hosts=spec.addresses, cpus=spec.cpus, memory_mib=spec.memory_mib,
        gpus=spec.gpus, entrypoint=spec.entrypoint or None,
    )

    def line(text: str) -> None:
        on_log(text)
        values = parser.feed(text)
        if values:
            on_metrics(values)

    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    with stage_data(tree):
        on_log(f"raymaker: {runtime.name} run {spec.image} {' '.join(spec.command_args())} as {spec.current_host}")
        code = run_in_container(cmd, name, runtime, env=env, cwd=tree.root, on_line=line, stop=stop,
                                grace_s=grace_s, stderr_tail=tail)
    if code == 0:
        return
    written = read_failure_file(tree)
    if written.strip():
        raise ScriptError(written, exit_code=code)
    raise ScriptError(container_failure(runtime, spec.image, code, tail), exit_code=code)


def run_in_container(
    cmd: list[str],
    name: str,
    runtime: Runtime,
    *,
    env: Mapping[str, str],
    cwd: str,
    on_line: Callable[[str], None],
    stop: threading.Event,
    grace_s: float,
    stderr_tail: collections.deque[str] | None = None,
) -> int:
    """Run a container in the foreground and return its exit code. ``stop`` asks the runtime to stop
    it (SIGTERM to the container's process, SIGKILL after ``grace_s``): signalling the ``run`` client
    would not reach a container whose client dies first. A guard process removes the container if this
    process is killed before it ends, so nothing outlives the instance that started it."""
    done = os.path.join(tempfile.gettempdir(), f"raymaker-guard-{name}-{uuid.uuid4().hex[:8]}")
    _start_guard(runtime, name, done)
    ended = threading.Event()

    def stopper() -> None:
        while not ended.wait(0.1):
            if stop.is_set():
                runtime.stop(name, grace_s)
                return

    thread = threading.Thread(target=stopper, daemon=True, name="raymaker-container-stop")
    thread.start()
    try:
        return run_process(cmd, cwd=cwd, env={**os.environ, **env}, on_line=on_line, stop=threading.Event(),
                           grace_s=grace_s, stderr_tail=stderr_tail)
    finally:
        ended.set()
        runtime.remove(name)  # --rm removes it; this covers a client that ended first
        with contextlib.suppress(OSError):
            open(done, "w").close()  # the guard's signal to leave without removing anything


# The guard: until this process ($0) is gone or the done file ($1) appears, wait; if the process went
# first, remove the container (the rest of the arguments: the runtime's rm).
_GUARD = 'pid=$0; done=$1; shift; while kill -0 "$pid" 2>/dev/null && [ ! -e "$done" ]; do sleep 1; done; ' \
         'if [ -e "$done" ]; then rm -f "$done"; else exec "$@" >/dev/null 2>&1; fi'


def _start_guard(runtime: Runtime, name: str, done: str) -> None:
    """``sh`` watching this process: when it is gone (a killed Ray actor), the container goes too. It
    is detached (``setsid -f``: its parent is init, not this process) because Ray kills a dead worker's
    child processes, and the guard must outlive the worker."""
    args = ["/bin/sh", "-c", _GUARD, str(os.getpid()), done, *runtime.base_command(), "rm", "-f", name]
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    setsid = shutil.which("setsid")
    if setsid:  # returns at once: setsid forks the guard and exits
        subprocess.run([setsid, "-f", *args], check=False, timeout=30, **quiet)
    else:
        subprocess.Popen(args, start_new_session=True, **quiet)


def container_failure(runtime: Runtime, image: str, code: int, tail: collections.deque[str] | list[str]) -> str:
    """The FailureReason of a container that exited ``code`` without writing /opt/ml/output/failure:
    the runtime's own error when it could not start the container, else SageMaker's AlgorithmError
    with the end of its output."""
    lines = [ln for ln in tail if ln.strip()][-10:]
    text = "\n".join(lines)
    if code in (RUNTIME_FAILED, NOT_EXECUTABLE, NOT_FOUND) and any("Error" in ln or "error" in ln for ln in lines):
        what = {NOT_EXECUTABLE: "its command is not executable", NOT_FOUND: "its command was not found"}
        reason = (f"ClientError: {runtime.name} could not run {image}"
                  f"{' (' + what[code] + ')' if code in what else ''}: {text}")
        return reason[:MAX_REASON]
    reason = f"AlgorithmError: {text}, exit code: {code}" if text else f"AlgorithmError: exit code: {code}"
    if len(reason) > MAX_REASON:
        reason = "AlgorithmError: ..." + reason[len(reason) - MAX_REASON + 20:]
    return reason[:MAX_REASON]


__all__ = ["ContainerRun", "container_failure", "container_name", "run_container"]
