"""The user's code: fetched from ``sagemaker_submit_directory`` into the tree's ``code`` directory,
its dependencies installed, and the command that runs it, as the toolkit does it (``files.py``,
``modules.py``, ``_entry_point_type.py``, ``process.py`` of aws/sagemaker-training-toolkit;
sagemaker-contract.md 2.8).

Dependencies go into a per-node cache, not into the cluster's interpreter: a virtualenv named by what
is installed, which sees the cluster's packages (so pip skips what they already satisfy), and whose
site-packages is prepended to the script's PYTHONPATH. The next job with the same requirements.txt on
that node finds it complete and runs no pip at all. pip reads its usual settings from the job's
environment (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, a pip.conf...);
``RAYMAKER_PIP_FIND_LINKS=DIR`` installs from the wheels in DIR alone (``--no-index --find-links DIR``),
for clusters without an index.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import site
import stat
import sys
import sysconfig
import tarfile
import tempfile
import threading
import venv
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

from raymaker.io.storage import S3Settings, parse_uri, storage_for
from raymaker.toolkit.process import STDERR_TAIL_LINES, algorithm_error, run_process

FIND_LINKS_ENV = "RAYMAKER_PIP_FIND_LINKS"
_COMPLETE = ".raymaker-complete"  # written last: an install without it is partial and is redone

EntryPointType = Literal["python_package", "python_program", "command"]


class InstallError(Exception):
    """pip failed: ``reason`` is SageMaker's FailureReason for it (the toolkit's
    InstallRequirementsError / InstallModuleError)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------ source


def fetch_source(submit_directory: str, code_dir: str, settings: S3Settings | None = None) -> None:
    """Put the user's code in ``code_dir``: ``submit_directory`` is a ``sourcedir.tar.gz`` (``s3://``,
    ``file://`` or a local path) extracted there, a local directory copied there, or a single file
    copied into it."""
    try:
        uri = parse_uri(submit_directory)
    except ValueError as e:
        raise ValueError(f"sagemaker_submit_directory {submit_directory!r} is invalid: {e}") from None
    os.makedirs(code_dir, exist_ok=True)
    if uri.scheme == "file" and os.path.isdir(uri.path):
        shutil.copytree(uri.path, code_dir, dirs_exist_ok=True)
        return
    with tempfile.TemporaryDirectory(prefix="sourcedir-") as tmp:
        local = os.path.join(tmp, "sourcedir.tar.gz")
        try:
            storage_for(submit_directory, settings).download(submit_directory, local)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"sagemaker_submit_directory {submit_directory} does not exist: upload the source "
                "directory's sourcedir.tar.gz there, or point the hyperparameter at it"
            ) from None
        if not tarfile.is_tarfile(local):
            if submit_directory.endswith((".tar.gz", ".tgz", ".tar")):
                raise ValueError(f"sagemaker_submit_directory {submit_directory} is not a tar archive")
            # One file (a script given by itself): copied, as the toolkit copies it.
            shutil.copy2(local, os.path.join(code_dir, os.path.basename(uri.key.rstrip("/")) or "script"))
            return
        try:
            with tarfile.open(local, "r:*") as t:
                # "data": no absolute paths, nothing outside code_dir, no devices; permissions kept,
                # so a shell entry point stays executable.
                t.extractall(code_dir, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise ValueError(f"sagemaker_submit_directory {submit_directory} cannot be extracted: {e}") from None


# ------------------------------------------------------------------------------------------ command


def entry_point_type(code_dir: str, entry_point: str) -> EntryPointType:
    """The toolkit's rule, in its order: a ``.sh`` is a command; with a setup.py the code is a package;
    a ``.py`` is a program; anything else is a command."""
    if entry_point.endswith(".sh"):
        return "command"
    if os.path.isfile(os.path.join(code_dir, "setup.py")):
        return "python_package"
    if entry_point.endswith(".py"):
        return "python_program"
    return "command"


def command(entry_point: str, code_dir: str, args: list[str]) -> list[str]:
    """The toolkit's command line (run in ``code_dir``): ``python -m <module> args`` for a package,
    ``python <entry_point> args`` for a program, ``/bin/sh -c "./<entry_point> <quoted args>"``
    for a command. ``python`` is this interpreter, the one the cluster's libraries are installed in."""
    kind = entry_point_type(code_dir, entry_point)
    if kind == "python_package":
        return [sys.executable, "-m", entry_point.replace(".py", ""), *args]
    if kind == "python_program":
        return [sys.executable, entry_point, *args]
    quoted = " ".join(shlex.quote(a) for a in args)
    return ["/bin/sh", "-c", f"./{entry_point} {quoted}"]


# ------------------------------------------------------------------------------------------ installs


def prepare(
    entry_point: str,
    code_dir: str,
    cache_root: str,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """The toolkit's ``entry_point.install``: a package is pip-installed (with its requirements.txt),
    a program gets its requirements.txt installed, a command is made executable (its requirements.txt
    is not installed, as in the toolkit). Returns the directories to put on PYTHONPATH after
    ``code_dir``. ValueError when the entry point is not in the code."""
    kind = entry_point_type(code_dir, entry_point)
    if kind != "python_package" and not os.path.isfile(os.path.join(code_dir, entry_point)):
        present = sorted(os.listdir(code_dir)) if os.path.isdir(code_dir) else []
        shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "") or "nothing"
        raise ValueError(
            f"entry point {entry_point!r} is not in the source directory (it holds {shown}): check "
            "entry_point and source_dir"
        )
    if kind == "command":
        path = os.path.join(code_dir, entry_point)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return []
    if kind == "python_package":
        return [install_package(code_dir, cache_root, env=env, on_line=on_line, stop=stop)]
    installed = install_requirements(code_dir, cache_root, env=env, on_line=on_line, stop=stop)
    return [installed] if installed else []


def install_requirements(
    code_dir: str,
    cache_root: str,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> str | None:
    """Install ``code_dir/requirements.txt`` (if any) into the environment ``cache_root/<key>``, where
    the key is the sha256 of this interpreter (version, environment) and the file's content, and return
    its site-packages for PYTHONPATH; None without a requirements.txt. Installed once per node: a lock keeps two jobs from
    installing the same set at once, and a present, complete directory is reused without running pip."""
    req = os.path.join(code_dir, "requirements.txt")
    if not os.path.isfile(req):
        return None
    with open(req, "rb") as f:
        key = _cache_key(f.read())
    return _install_cached(
        os.path.join(cache_root, key),
        ["-r", req],
        error="InstallRequirementsError",
        cwd=code_dir,
        env=env,
        on_line=on_line,
        stop=stop,
    )


def install_package(
    code_dir: str,
    cache_root: str,
    *,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> str:
    """``pip install .`` (and ``-r requirements.txt`` when present, as the toolkit does) for code with a
    setup.py, into a cached directory keyed by every file of the code."""
    key = _cache_key(_tree_digest(code_dir))
    extra = ["-r", "requirements.txt"] if os.path.isfile(os.path.join(code_dir, "requirements.txt")) else []
    return _install_cached(
        os.path.join(cache_root, key),
        [".", *extra],
        error="InstallModuleError",
        cwd=code_dir,
        env=env,
        on_line=on_line,
        stop=stop,
    )


def _cache_key(content: bytes) -> str:
    # What pip finds already installed depends on the interpreter and its environment (sys.prefix):
    # the same requirements under another Python or another virtualenv are another install.
    tag = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-{sys.platform}-{sys.prefix}\n"
    return hashlib.sha256(tag.encode() + content).hexdigest()


def _tree_digest(root: str) -> bytes:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
    return h.digest()


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def site_packages(env_dir: str) -> str:
    """The directory of a cached install that goes on PYTHONPATH."""
    return sysconfig.get_path("purelib", vars={"base": env_dir, "platbase": env_dir})


def pip_command(env_dir: str, what: list[str], env: Mapping[str, str]) -> list[str]:
    """This interpreter's pip, installing into the cached environment ``env_dir`` (``--python``):
    quiet, no version check, and offline from ``RAYMAKER_PIP_FIND_LINKS`` when that is set (then
    without build isolation too, which would fetch setuptools from an index)."""
    cmd = [sys.executable, "-m", "pip", "--python", os.path.join(env_dir, "bin", "python"), "install",
           "--disable-pip-version-check", "-q"]
    find_links = env.get(FIND_LINKS_ENV)
    if find_links:
        cmd += ["--no-index", "--find-links", find_links, "--no-build-isolation"]
    return cmd + what


def _create_env(env_dir: str) -> None:
    """A virtualenv that sees this interpreter's packages (a .pth adds its site directories), so pip
    counts them as installed: a requirement the cluster already satisfies (numpy, torch) is not
    downloaded again, and one it needs in another version goes into the cached environment, where pip
    cannot uninstall the cluster's copy ("outside environment"). ``pip install --target`` would
    instead reinstall every dependency and shadow the cluster's builds of them."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env_dir)
    parents = [d for d in site.getsitepackages() if os.path.isdir(d)]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in parents)
    with open(os.path.join(site_packages(env_dir), "_raymaker_parent.pth"), "w") as f:
        f.write(lines)


def _install_cached(
    env_dir: str,
    what: list[str],
    *,
    error: str,
    cwd: str,
    env: Mapping[str, str] | None,
    on_line: Callable[[str], None] | None,
    stop: threading.Event | None,
) -> str:
    if os.path.exists(os.path.join(env_dir, _COMPLETE)):  # the common case: no lock needed
        return site_packages(env_dir)
    env = dict(os.environ if env is None else env)
    with _locked(env_dir + ".lock"):
        if os.path.exists(os.path.join(env_dir, _COMPLETE)):  # another job installed it meanwhile
            return site_packages(env_dir)
        shutil.rmtree(env_dir, ignore_errors=True)  # a partial install (a job killed mid-way)
        _create_env(env_dir)
        cmd = pip_command(env_dir, what, env)
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        code = run_process(
            cmd, cwd=cwd, env=env, on_line=on_line or (lambda _line: None), stop=stop or threading.Event(),
            grace_s=10.0, stderr_tail=tail,
        )
        if code != 0:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise InstallError(algorithm_error(error, code, tail, cmd))
        with open(os.path.join(env_dir, _COMPLETE), "w"):
            pass
    return site_packages(env_dir)
