"""Running the user's process as a container would: output streamed live line by line, stopped as
``docker stop -t 120`` stops it (SIGTERM, then SIGKILL after the grace period), never outliving the
actor that started it, and its failure told in SageMaker's words (sagemaker-contract.md 2.1, 2.2)."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Protocol

from raymaker.toolkit.paths import MLTree

MAX_REASON = 1024  # SageMaker's FailureReason: the first 1024 characters of output/failure
STDERR_TAIL_LINES = 100  # what a failure reason may quote from the end of stderr
_POLL_S = 0.05

_PR_SET_PDEATHSIG = 1

logger = logging.getLogger(__name__)


def _load_prctl() -> Callable[..., int] | None:
    # Resolved here, in the parent: the child must not import or load anything between fork and exec.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:
        # Runs in the child between fork and exec. SIGKILL when the parent dies, so a killed Ray actor
        # (or a crashed one) takes its script with it. The signal is tied to the thread that forked,
        # which is run_process's caller, blocked here until the child ends.
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(137)

    return setup


def run_process(
    cmd: Sequence[str],
    *,
    cwd: str,
    env: dict[str, str],
    on_line: Callable[[str], None],
    stop: threading.Event,
    grace_s: float = 120.0,
    stderr_tail: collections.deque[str] | None = None,
    launcher: Launcher | None = None,
) -> int:
    """Run ``cmd`` to its end and return its exit code (a signal N shows as 128 + N, as a shell and
    Docker report it: 137 for SIGKILL).

    The child gets its own session (so a stop reaches everything it started) and dies with this
    process (PR_SET_PDEATHSIG, Linux). Each line of stdout and of stderr goes to ``on_line`` as it is
    written, without its newline, one call at a time; stderr's last lines also go to ``stderr_tail``
    when given (a bounded deque) for the failure reason. When ``stop`` is set: SIGTERM to the process
    group, SIGKILL after ``grace_s``. When the main process ends, whatever it left running in its group
    is killed, as a container's end would.

    ``launcher`` (a ``zygote.Zygote``) starts the process instead of a fork and exec here, with the same
    session, pipes and end; when it cannot, the process starts here as usual."""
    proc = _start(cmd, cwd, env, launcher)
    lock = threading.Lock()  # on_line is called from two reader threads: one call at a time

    def read(stream: IO[bytes], tail: collections.deque[str] | None) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if tail is not None:
                    tail.append(line)
                with lock:
                    try:
                        on_line(line)
                    except Exception:  # a failing consumer must not stop the draining: the child would block
                        logger.exception("on_line failed for a line of %s", cmd[0] if cmd else "?")

    readers = [
        threading.Thread(target=read, args=(proc.stdout, None), name="script-stdout", daemon=True),
        threading.Thread(target=read, args=(proc.stderr, stderr_tail), name="script-stderr", daemon=True),
    ]
    for t in readers:
        t.start()

    term_deadline: float | None = None
    killed = False
    try:
        while not proc.exited():
            if stop.is_set() and term_deadline is None:
                _signal_group(proc.pid, signal.SIGTERM)
                term_deadline = time.monotonic() + grace_s
            if term_deadline is not None and not killed and time.monotonic() >= term_deadline:
                _signal_group(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(_POLL_S)
    finally:
        # The leader is a zombie (not reaped yet), so its group id cannot have been reused: whatever is
        # left in the group (daemons the script started) goes now, and the pipes they hold close. On an
        # error here (an interrupt), the same kill ends the script itself.
        _signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
    for t in readers:
        # A process that left the group (setsid) may still hold a pipe: its last lines are not waited for.
        t.join(timeout=5.0)
        if t.is_alive():
            logger.warning("%s: output still open after the process ended; no longer read", t.name)
    return code


class Child(Protocol):
    """A started process as run_process drives it: ``pid`` (also its process group's id), its output
    pipes, ``exited()`` (without reaping: the pid and group stay reserved) and ``wait()`` (reaps;
    the exit code, 128 + N for a signal N)."""

    pid: int
    stdout: IO[bytes]
    stderr: IO[bytes]

    def exited(self) -> bool: ...

    def wait(self) -> int: ...


class Launcher(Protocol):
    """What starts a process other than by fork and exec here (``zygote.Zygote``): the child in its own
    session with new stdout and stderr pipes, stdin empty, dying with this process."""

    def launch(self, cmd: Sequence[str], *, cwd: str, env: dict[str, str]) -> Child: ...


class _Popened:
    def __init__(self, proc: subprocess.Popen[bytes]):
        assert proc.stdout is not None and proc.stderr is not None
        self.pid, self.stdout, self.stderr, self._proc = proc.pid, proc.stdout, proc.stderr, proc

    def exited(self) -> bool:
        return _exited(self.pid)

    def wait(self) -> int:
        code = self._proc.wait()
        return 128 - code if code < 0 else code


def _start(cmd: Sequence[str], cwd: str, env: dict[str, str], launcher: Launcher | None) -> Child:
    if launcher is not None:
        try:
            return launcher.launch(cmd, cwd=cwd, env=env)
        except Exception:  # noqa: BLE001 - nothing was started: it starts here instead
            logger.warning("%s: the launcher could not start it; starting it plainly", cmd[0], exc_info=True)
    return _Popened(subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid()),  # only calls what was resolved before fork: _child_setup
    ))


def _exited(pid: int) -> bool:
    """Whether the child has ended, without reaping it (WNOWAIT keeps its pid and group id reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# ------------------------------------------------------------------------------------ failure reason


def toolkit_error(name: str, exit_code: int, message: str, cmd: Sequence[str] | str | None) -> str:
    """The toolkit's ``_CalledProcessError`` text (what it writes to output/failure):
    ``ExecuteUserScriptError:\\nExitCode 1\\nErrorMessage "..."\\nCommand "..."``, with ExtraInfo for
    a SIGKILL (137)."""
    command = cmd if isinstance(cmd, str) else " ".join(cmd or ())
    extra = "OutOfMemory: Process killed by SIGKILL (signal 9)" if exit_code == 137 else None
    text = f'{name}:\nExitCode {exit_code}\nErrorMessage "{message}"\n'
    if extra:
        text += f'ExtraInfo "{extra}"\n'
    return (text + f'Command "{command}"').strip()


def error_message(stderr_tail: Sequence[str]) -> str:
    """What of stderr explains a failure: from the last Python traceback on if there is one, else the
    last lines; blank lines dropped."""
    lines = [ln for ln in stderr_tail if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if starts:
        lines = lines[starts[-1]:]
    else:
        lines = lines[-10:]
    return "\n".join(lines)


def algorithm_error(name: str, exit_code: int, stderr_tail: Sequence[str], cmd: Sequence[str] | str | None) -> str:
    """SageMaker's FailureReason for a toolkit error: ``AlgorithmError: `` + the toolkit's text +
    ``, exit code: N``, within 1024 characters. When too long, stderr is cut from the front: the
    error itself is at its end."""
    def reason(message: str) -> str:
        return f"AlgorithmError: {toolkit_error(name, exit_code, message, cmd)}, exit code: {exit_code}"

    message = error_message(stderr_tail)
    room = MAX_REASON - len(reason(""))
    if len(message) > room:
        message = "..." + message[len(message) - room + 3:] if room > 3 else ""
    return reason(message)[:MAX_REASON]


def read_failure_file(tree: MLTree) -> str:
    """The first 1024 characters of output/failure, or "" when the script wrote none."""
    try:
        with open(tree.failure_file, encoding="utf-8", errors="replace") as f:
            return f.read(MAX_REASON * 4)[:MAX_REASON]
    except (FileNotFoundError, IsADirectoryError):
        return ""


def failure_reason(
    tree: MLTree, exit_code: int, stderr_tail: Sequence[str], cmd: Sequence[str] | str | None = None
) -> str:
    """The FailureReason of a script that exited ``exit_code``: the first 1024 characters of
    output/failure if the script wrote it (SageMaker's rule), else SageMaker's wording for the
    toolkit's ExecuteUserScriptError, quoting the end of stderr."""
    written = read_failure_file(tree)
    if written.strip():
        return written
    return algorithm_error("ExecuteUserScriptError", exit_code, stderr_tail, cmd)
