"""Warm launches of training scripts: a warm instance keeps its framework imported for the next job
(SageMaker's warm pools keep the process environment). As multiprocessing's forkserver does, a
``Zygote`` is a clean, single-threaded Python child of the instance that imports the framework once
(torch; numpy, scipy, sklearn, joblib; xgboost) and then forks a child per job, which it makes into
what ``python train.py args`` would have started (``zygote_main``): its own session, the job's
stdout and stderr, argv, environment, working directory, sys.path, a fresh interpreter's signal
handlers and stdio, the script run as ``__main__``, and the interpreter's exit codes. Only
``sys.modules`` is warmer.

Used only when that cannot change what the script does (``WarmLauncher.choose``); otherwise the job
starts as always, ``python train.py`` through ``process.run_process``:

* a ``.py`` program run by this interpreter (not a ``.sh`` command, not a package run with ``-m``);
* nothing in the job's code directory or in its installed requirements has the top-level name of a
  module the zygote holds (a pinned other version, or the user's own ``utils.py``, would be shadowed
  by the module already imported);
* a zygote for the job's environment, that is, everything but the variables the toolkit sets per job
  (``SM_*``, the job's names, its code on PYTHONPATH, torchrun's rank variables), exists and is
  ready. None is started for the job that finds none (its cold start is not slowed): after that job's
  script succeeded, one is started in the background, and the next job in the warm instance waits
  for it to finish its imports if it has not yet (never longer than the import would take itself).

What a warm child still shares with its zygote, unlike a fresh python: the string hash seed (unless
PYTHONHASHSEED is set, a fresh interpreter draws one; the children inherit the zygote's), and what the
preloaded modules did at import (their atexit handlers and warning registries; what the imports
printed is printed again by each child). Random generators seeded from entropy at import (numpy's
global one, torch's CPU one) are seeded again in each child.

Lifetime: a zygote dies with its instance (PR_SET_PDEATHSIG, set from a thread that lives as long as
the process: the signal follows the thread that forked), a job's child dies with the zygote (the same
signal), a job is stopped as ``run_process`` stops any (SIGTERM to its group, SIGKILL after the grace),
and a dead zygote is replaced after the next job. ``RAYMAKER_SCRIPT_ZYGOTE=0`` turns all this off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from raymaker.toolkit import zygote_main as proto
from raymaker.toolkit.process import _PRCTL, _child_setup

ENABLE_ENV = "RAYMAKER_SCRIPT_ZYGOTE"  # "0" / "false" / "off": every job starts a fresh python
READY_WAIT_S = 60.0  # the longest a job waits for a starting zygote's imports before starting plainly
ZYGOTES_PER_FRAMEWORK = 2  # environments kept warm per framework in one instance (least recent goes)

# What each framework's zygote imports: the modules a script of that framework starts by importing.
PRELOAD: dict[str, tuple[str, ...]] = {
    "pytorch": ("numpy", "torch", "torch.nn", "torch.optim", "torch.utils.data", "torch.distributed"),
    "sklearn": ("numpy", "scipy", "sklearn", "joblib", "sklearn.base", "sklearn.ensemble",
                "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection", "sklearn.preprocessing"),
    "xgboost": ("numpy", "xgboost"),
}

# Variables the toolkit sets for each job, which no import reads: the rest of a job's environment picks
# its zygote (thread counts, PYTHON*, locale, the request's Environment, ...).
PER_JOB_PREFIXES = ("SM_",)
PER_JOB_NAMES = frozenset({
    "TRAINING_JOB_NAME", "TRAINING_JOB_ARN", "SAGEMAKER_BASE_DIR", "CURRENT_HOST", "SAGEMAKER_JOB_NAME",
    "SAGEMAKER_REGION", "SAGEMAKER_PROGRAM", "SAGEMAKER_TRAINING_MODULE", "SAGEMAKER_SUBMIT_DIRECTORY",
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK",
    "GROUP_RANK", "PYTHONPATH",
})

logger = logging.getLogger(__name__)


class ZygoteError(RuntimeError):
    """The zygote could not start the job's process (it is not ready, or it died): nothing ran."""


# ------------------------------------------------------------------------------------------ spawner


class _Spawner:
    """The thread every zygote is started from. PR_SET_PDEATHSIG fires when the *thread* that forked the
    child ends, not its process; a Ray actor's method threads may come and go, this one waits for the
    next start as long as the process lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pid: int | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked copy of this process
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._loop, args=(self._queue,), name="raymaker-zygote-spawner",
                                 daemon=True).start()
                self._pid = os.getpid()
            q = self._queue
        done = threading.Event()
        box: list[tuple[bool, Any]] = []
        q.put((fn, box, done))
        done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    @staticmethod
    def _loop(q: queue.SimpleQueue[Any]) -> None:
        while True:
            fn, box, done = q.get()
            try:
                box.append((True, fn()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box.append((False, e))
            done.set()


_SPAWNER = _Spawner()


def supported() -> bool:
    """Linux with what the zygote needs: pidfds (5.3), memfds, descriptor passing, prctl."""
    if not sys.platform.startswith("linux") or _PRCTL is None:
        return False
    if not all(hasattr(os, f) for f in ("pidfd_open", "memfd_create", "waitid")) or not hasattr(socket, "send_fds"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------ zygote


class ZygoteProcess:
    """A job's process started by a zygote, as ``run_process`` handles it: ``pid`` (its group's id too),
    ``stdout`` and ``stderr`` (the read ends of its pipes), ``exited()`` without reaping, ``wait()``
    for its exit code (128 + N for a signal N), after which the zygote reaps it."""

    def __init__(self, pid: int, sock: socket.socket, stdout: IO[bytes], stderr: IO[bytes]):
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._sock = sock
        self._code: int | None = None

    def _read(self) -> None:
        try:
            message, _ = proto.recv_msg(self._sock)
        except OSError:
            message = None
        if message is None:
            # The zygote is gone, and the child with it (its parent-death signal is SIGKILL).
            self._code = 137
        elif "exit" in message:
            self._code = int(message["exit"])

    def exited(self) -> bool:
        if self._code is None and select.select([self._sock], [], [], 0)[0]:
            self._read()
        return self._code is not None

    def wait(self) -> int:
        while self._code is None:
            self._read()
        with contextlib.suppress(OSError):
            proto.send_msg(self._sock, {"release": True})
        self._sock.close()
        return self._code


class Zygote:
    """One warm interpreter: ``modules`` imported, in environment ``env`` (this process's by default).
    ``start()`` returns at once; ``wait_ready()`` until the imports are done; ``launch()`` starts a
    job's process (the ``launcher`` of ``run_process``); ``close()`` ends it and whatever it runs."""

    def __init__(self, modules: Sequence[str], env: Mapping[str, str] | None = None):
        self.modules = tuple(modules)
        self.env = dict(os.environ if env is None else env)
        self.loaded: frozenset[str] = frozenset()  # top-level modules it holds beyond a fresh python's
        self.pid: int | None = None
        self.last_used = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready = threading.Event()
        self._error: str | None = None
        self._lock = threading.Lock()  # one request at a time on the control socket

    def start(self) -> Zygote:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-c", proto.BOOT, os.path.abspath(proto.__file__), str(theirs.fileno()),
               *self.modules]
        parent = os.getpid()
        try:
            self._proc = _SPAWNER.call(lambda: subprocess.Popen(
                cmd, cwd="/", env=self.env, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                start_new_session=True, preexec_fn=_child_setup(parent),
            ))
        except OSError as e:
            mine.close()
            self._error = f"could not start: {e}"
            self._ready.set()
            return self
        finally:
            theirs.close()
        self._sock = mine
        threading.Thread(target=self._await_ready, name="raymaker-zygote-ready", daemon=True).start()
        return self

    def _await_ready(self) -> None:
        assert self._sock is not None
        try:
            message, _ = proto.recv_msg(self._sock)
        except OSError as e:
            message, self._error = None, str(e)
        if message is not None and message.get("ready"):
            self.loaded = frozenset(message.get("modules", ()))
            self.pid = int(message["pid"])
        else:
            told = (message or {}).get("error")
            self._error = self._error or told or f"exited before it was ready (status {self._proc and self._proc.poll()})"
            logger.warning("zygote for %s: %s", ",".join(self.modules), self._error)
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._error is None and self.alive()

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def alive(self) -> bool:
        return self._error is None and self._proc is not None and self._proc.poll() is None

    def launch(self, cmd: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> ZygoteProcess:
        """Start ``cmd`` (``[sys.executable, script, *args]``) from the zygote, with its output on new
        pipes. ZygoteError when it cannot (then nothing was started)."""
        cmd = list(cmd)
        if len(cmd) < 2 or cmd[0] != sys.executable:
            raise ZygoteError(f"not a python program: {cmd[:2]}")
        if not self.ready or self._sock is None:
            raise ZygoteError(self._error or "not ready")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                proto.send_msg(self._sock, {"argv": cmd, "cwd": cwd, "env": dict(env)},
                               [out_w, err_w, theirs.fileno()])
            mine.settimeout(30.0)
            message, _ = proto.recv_msg(mine)
            mine.settimeout(None)
        except OSError as e:
            message = {"error": str(e)}
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        if not message or "pid" not in message:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            raise ZygoteError((message or {}).get("error") or "the zygote ended")
        self.last_used = time.monotonic()
        return ZygoteProcess(int(message["pid"]), mine, open(out_r, "rb"), open(err_r, "rb"))  # noqa: SIM115

    def close(self, timeout: float = 5.0) -> None:
        """End the zygote: it kills what it still runs, then exits (SIGKILL if it has not in time)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the ready-waiting thread too
            self._sock.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._error = self._error or "closed"
        self._ready.set()


# ------------------------------------------------------------------------------------------ choosing


def top_level_names(directory: str) -> set[str]:
    """The top-level modules a sys.path directory provides: packages, modules, extensions."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return set()
    names = set()
    for entry in entries:
        if entry.startswith(".") or entry == "__pycache__" or entry.endswith((".dist-info", ".egg-info", ".pth")):
            continue
        if os.path.isdir(os.path.join(directory, entry)):
            if entry.isidentifier():
                names.add(entry)
        elif entry.endswith((".py", ".pyc", ".so", ".pyd")):
            names.add(entry.partition(".")[0])
    return names


def zygote_env(env: Mapping[str, str], path_prefix: Sequence[str]) -> dict[str, str] | None:
    """The part of a job's environment that picks its zygote (and that the zygote runs with): all but
    the per-job variables, and PYTHONPATH without the job's own entries (``path_prefix``: its code and
    installed requirements, first). None when PYTHONPATH does not start with them."""
    out = {k: v for k, v in env.items() if k not in PER_JOB_NAMES and not k.startswith(PER_JOB_PREFIXES)}
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep)] if env.get("PYTHONPATH") else []
    prefix = list(path_prefix)
    if entries[: len(prefix)] != prefix:
        return None
    rest = entries[len(prefix):]
    if rest:
        out["PYTHONPATH"] = os.pathsep.join(rest)
    return out


def python_program(cmd: Sequence[str]) -> bool:
    """``[this python, something.py, args...]``: what the toolkit runs for a ``.py`` entry point."""
    return len(cmd) >= 2 and cmd[0] == sys.executable and cmd[1].endswith(".py") and not cmd[1].startswith("-")


class WarmLauncher:
    """This process's zygotes for one framework, one per environment (``zygote_env``); what
    ``run_script`` asks which launcher to use (``choose``) and tells when a job succeeded (``warm_up``)."""

    def __init__(self, framework: str, modules: Sequence[str], *, limit: int = ZYGOTES_PER_FRAMEWORK,
                 ready_wait_s: float = READY_WAIT_S):
        self.framework = framework
        self.modules = tuple(modules)
        self.limit = limit
        self.ready_wait_s = ready_wait_s
        self._zygotes: OrderedDict[tuple[tuple[str, str], ...], Zygote] = OrderedDict()
        self._lock = threading.Lock()

    def _plan(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str], path_prefix: Sequence[str],
              names: frozenset[str] | set[str]) -> tuple[tuple[tuple[str, str], ...], dict[str, str]] | None:
        """The zygote key and environment for this job, or None when a zygote must not run it."""
        if not python_program(cmd):
            return None
        zenv = zygote_env(env, path_prefix)
        if zenv is None:
            return None
        shadowing = set().union(*(top_level_names(d) for d in {cwd, *path_prefix})) & set(names)
        if shadowing:
            logger.info("%s: started plainly: %s would be shadowed by the zygote's modules",
                        cmd[1], ", ".join(sorted(shadowing)))
            return None
        return tuple(sorted(zenv.items())), zenv

    def choose(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str],
               path_prefix: Sequence[str] = ()) -> Zygote | None:
        """The zygote to start this job from, or None to start it plainly. Waits for a zygote that is
        still importing (started after an earlier job) up to ``ready_wait_s``. Never raises: a warm
        start is an optimization, never a job's failure."""
        try:
            return self._choose(cmd, cwd, env, path_prefix)
        except Exception:  # noqa: BLE001
            logger.exception("choosing a zygote for %s failed; starting it plainly", cmd[1:2])
            return None

    def _choose(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str],
                path_prefix: Sequence[str]) -> Zygote | None:
        plan = self._plan(cmd, cwd, env, path_prefix, _top(self.modules))
        if plan is None:
            return None
        with self._lock:
            zygote = self._zygotes.get(plan[0])
            if zygote is not None and zygote._ready.is_set() and not zygote.ready:
                del self._zygotes[plan[0]]  # died: replaced after this job
                zygote.close(timeout=1.0)
                zygote = None
        if zygote is None or not zygote.wait_ready(self.ready_wait_s):
            return None
        if self._plan(cmd, cwd, env, path_prefix, zygote.loaded) is None:  # everything it imported
            return None
        with self._lock:
            if plan[0] in self._zygotes:
                self._zygotes.move_to_end(plan[0])
        return zygote

    def warm_up(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str], path_prefix: Sequence[str] = ()) -> None:
        """After a job's script succeeded: start the zygote the next job like it would use, in the
        background, unless it is running already. Never raises."""
        try:
            self._warm_up(cmd, cwd, env, path_prefix)
        except Exception:  # noqa: BLE001
            logger.exception("starting a zygote for %s failed", cmd[1:2])

    def _warm_up(self, cmd: Sequence[str], cwd: str, env: Mapping[str, str], path_prefix: Sequence[str]) -> None:
        plan = self._plan(cmd, cwd, env, path_prefix, _top(self.modules))
        if plan is None:
            return
        key, zenv = plan
        evicted: list[Zygote] = []
        with self._lock:
            existing = self._zygotes.get(key)
            if existing is not None and (existing.alive() or not existing._ready.is_set()):
                return
            if existing is not None:
                evicted.append(self._zygotes.pop(key))
            while len(self._zygotes) >= self.limit:
                evicted.append(self._zygotes.popitem(last=False)[1])
            self._zygotes[key] = Zygote(self.modules, zenv).start()
        for z in evicted:
            z.close(timeout=1.0)

    def close(self) -> None:
        with self._lock:
            zygotes, self._zygotes = list(self._zygotes.values()), OrderedDict()
        for z in zygotes:
            z.close()


def _top(modules: Sequence[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


_LAUNCHERS: dict[str, WarmLauncher] = {}
_LAUNCHERS_LOCK = threading.Lock()


def warm_launcher(framework: str | None) -> WarmLauncher | None:
    """This process's ``WarmLauncher`` for a script framework (pytorch, sklearn, xgboost); None for
    another, where zygotes cannot run, or when ``RAYMAKER_SCRIPT_ZYGOTE`` is 0."""
    if framework not in PRELOAD:
        return None
    if os.environ.get(ENABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    with _LAUNCHERS_LOCK:
        launcher = _LAUNCHERS.get(framework)
        if launcher is None:
            if not supported():
                return None
            launcher = _LAUNCHERS[framework] = WarmLauncher(framework, PRELOAD[framework])
        return launcher


__all__ = ["PRELOAD", "WarmLauncher", "Zygote", "ZygoteError", "ZygoteProcess", "warm_launcher"]
