"""The framework serving contract's vocabulary for script models: the environment variables and content
types SageMaker's framework containers read, the errors a script model raises, and where its code is
(``SAGEMAKER_PROGRAM``, ``SAGEMAKER_SUBMIT_DIRECTORY``). ``handlers.py`` says how it all serves."""

from __future__ import annotations

import os
from collections.abc import Mapping

from raymaker.serve.codecs import (
    InvocationError,
    clip,
)

SCRIPT = "script"  # ModelSpec.algorithm of a script model
FRAMEWORKS = ("pytorch", "sklearn", "xgboost")
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
SUBMIT_DIRECTORY_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
DEFAULT_PROGRAM = "inference.py"
DEFAULT_TIMEOUT_S = 60.0
CONTAINER_MODEL_DIR = "/opt/ml/model"  # where SageMaker extracts model.tar.gz in the container

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
LIBSVM = ("text/libsvm", "text/x-libsvm")
RECORDIO = "application/x-recordio-protobuf"
TEXT_TYPES = (JSON, CSV)  # decoded to str before input_fn (the toolkits' UTF8_TYPES)
ENCODABLE = (JSON, CSV, NPY)  # what the default output_fn writes, in every framework

MAX_MESSAGE = 1000


# --- errors -----------------------------------------------------------------------------------------


class ScriptError(InvocationError):
    """The user's script (or a framework default standing in for it) failed on a request: 424
    ModelError, as SageMaker's runtime answers when the container fails."""

    status = 424
    error_type = "ModelError"


class NoProgram(Exception):
    """The code directory has no such program (the path)."""


class ScriptLoadError(ValueError):
    """The script model cannot load (no entry point, an import error, ``model_fn`` raised): the message
    says what to change. A ValueError, as every other model load failure is."""


# --- where the code is ------------------------------------------------------------------------------


def script_program(environment: Mapping[str, str]) -> str:
    """``SAGEMAKER_PROGRAM`` (default ``inference.py``), checked: a relative path inside the code
    directory. ValueError says what to change."""
    program = (environment.get(PROGRAM_ENV) or "").strip() or DEFAULT_PROGRAM
    parts = program.replace("\\", "/").split("/")
    if program.startswith(("/", "\\")) or ".." in parts or "" in parts or "\0" in program:
        raise ValueError(
            f"Environment {PROGRAM_ENV} {clip(program)!r} must name the script inside its source "
            "directory, e.g. inference.py (a relative path without '..')"
        )
    return program


def submit_directory(environment: Mapping[str, str]) -> tuple[str | None, str]:
    """Where the code is, from ``SAGEMAKER_SUBMIT_DIRECTORY``: ``(archive URI, "")`` for a
    ``sourcedir.tar.gz`` to download, or ``(None, path)`` for a directory inside the model archive
    (``code`` when the variable is unset or ``/opt/ml/model/code``, the SDK's repack layout).
    ValueError says what to change for anything else."""
    value = (environment.get(SUBMIT_DIRECTORY_ENV) or "").strip()
    if not value:
        return None, "code"
    norm = os.path.normpath(value) if value.startswith("/") else value
    if norm == CONTAINER_MODEL_DIR or norm.startswith(CONTAINER_MODEL_DIR + "/"):
        return None, os.path.relpath(norm, CONTAINER_MODEL_DIR)
    fix = (
        f"Environment {SUBMIT_DIRECTORY_ENV} {clip(value)!r} must be the s3:// URI of the source "
        "directory packed as a .tar.gz (as the SageMaker SDK uploads source_dir: "
        f"s3://bucket/prefix/sourcedir.tar.gz), or {CONTAINER_MODEL_DIR}/code when the code is inside "
        "model.tar.gz"
    )
    if not value.endswith(".tar.gz"):
        raise ValueError(fix)
    from raymaker.io.storage import parse_uri

    try:
        parse_uri(value)
    except ValueError as e:
        raise ValueError(f"{fix}: {e}") from None
    return value, ""


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0].strip()
