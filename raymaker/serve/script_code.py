"""The user's inference module: imported from its code directory under a name of its own, its code
directory on ``sys.path`` while its model lives, its ``requirements.txt`` installed (see ``handlers.py``)."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from raymaker.serve.codecs import (
    clip,
)
from raymaker.serve.script_contract import MAX_MESSAGE, NoProgram, ScriptLoadError

logger = logging.getLogger(__name__)


# --- the user's module ------------------------------------------------------------------------------

_MODULE_IDS = itertools.count()
IMPORT_LOCK = threading.RLock()  # sys.path and sys.modules are the process's


def _under(path: str | None, directory: str) -> bool:
    if not path:
        return False
    path = os.path.realpath(path)
    return path == directory or path.startswith(directory + os.sep)


def where_raised(error: BaseException, code_dir: str | None) -> str:
    """`` (inference.py, line 12)``: the deepest frame of the traceback inside the user's code."""
    if not code_dir:
        return ""
    found = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if _under(frame.filename, code_dir):
            found = f" ({os.path.relpath(os.path.realpath(frame.filename), code_dir)}, line {frame.lineno})"
    return found


def _arity(fn: Callable[..., Any]) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def call_user(name: str, fn: Callable[..., Any], nargs: int) -> Callable[..., Any]:
    """``fn`` called with ``nargs`` arguments, plus the request context (None) if it takes one more,
    as the inference toolkit's ``_run_handler_function`` does."""
    arity = _arity(fn)
    if arity is None or arity == nargs:
        return fn
    if arity == nargs + 1:
        return lambda *args: fn(*args, None)
    raise ScriptLoadError(
        f"{name} takes {arity} arguments; the serving contract calls it with {nargs} (or {nargs} and a context)"
    )


def import_user_module(code_dir: str, program: str, label: str) -> Any:
    """Import ``program`` from ``code_dir`` under a name of its own, so several models in one process
    do not collide (the caller has put ``code_dir`` on ``sys.path`` with ``use_code_dir``)."""
    path = os.path.join(code_dir, program)
    if not path.endswith(".py") and not os.path.isfile(path):
        path += ".py"  # SAGEMAKER_PROGRAM may name the module
    if not os.path.isfile(path):
        raise NoProgram(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"_raymaker_script_{next(_MODULE_IDS)}_{re.sub(r'[^0-9A-Za-z_]', '_', label)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"{program} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up by their module's name
    _CODE_DIRS.setdefault(os.path.realpath(code_dir), []).append(name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# code directory (real path) -> the unique module names imported from it, for the loaded models
_CODE_DIRS: dict[str, list[str]] = {}


def _drop_modules_under(directories: list[str]) -> None:
    if not directories:
        return
    prefixes = tuple(d + os.sep for d in directories)
    for name, module in sys.modules.copy().items():  # copy(): atomic, while other threads import
        path = getattr(module, "__file__", None)
        # Modules found through a code directory on sys.path have paths that start with it (it is a
        # real path): no realpath() per module, of which there are thousands.
        if isinstance(path, str) and path.startswith(prefixes):
            sys.modules.pop(name, None)


def use_code_dir(code_dir: str) -> None:
    """Put ``code_dir`` first on ``sys.path`` for as long as its model lives (the script may import
    its helper modules lazily, and pickles name them), as SageMaker's containers have it. The helper
    modules other loaded models imported from their code directories leave ``sys.modules`` first, so
    a model with a helper of the same name (a new version of the model, swapped in by an update)
    imports its own. Call with ``IMPORT_LOCK`` held."""
    code_dir = os.path.realpath(code_dir)
    _drop_modules_under([d for d in _CODE_DIRS if d != code_dir])
    _CODE_DIRS.setdefault(code_dir, [])
    while code_dir in sys.path:
        sys.path.remove(code_dir)
    sys.path.insert(0, code_dir)
    importlib.invalidate_caches()


def release_code_dir(code_dir: str) -> None:
    """Undo ``use_code_dir`` when its model is gone: off ``sys.path``, its modules forgotten."""
    code_dir = os.path.realpath(code_dir)
    with IMPORT_LOCK:
        for name in _CODE_DIRS.pop(code_dir, []):
            sys.modules.pop(name, None)
        while code_dir in sys.path:
            sys.path.remove(code_dir)
        _drop_modules_under([code_dir])


def install_requirements(code_dir: str) -> None:
    """``code_dir/requirements.txt``, installed as a training job's is (a cached environment per
    content, on top of the cluster's packages); its site-packages goes first on ``sys.path`` for good
    (packages import lazily)."""
    if not os.path.isfile(os.path.join(code_dir, "requirements.txt")):
        return
    from raymaker.protocol.environment import raymaker_home
    from raymaker.toolkit.entry_point import install_requirements as install

    try:
        target = install(code_dir, str(raymaker_home() / "cache" / "pip"))  # training's cache too
    except Exception as e:  # noqa: BLE001 - pip's failure is the requirements file's
        raise ScriptLoadError(
            f"code/requirements.txt could not be installed: {type(e).__name__}: {clip(str(e).strip(), MAX_MESSAGE)}"
        ) from None
    if target and target not in sys.path:
        with IMPORT_LOCK:
            sys.path.insert(0, target)
            importlib.invalidate_caches()
