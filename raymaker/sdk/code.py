"""A script's code, as the SageMaker Python SDK v2 stages it (``sagemaker.fw_utils``): the checks on
``entry_point``, ``source_dir`` and ``dependencies``, ``sourcedir.tar.gz`` (the source dir's contents
and each dependency folder at its root), its upload, and the reserved ``sagemaker_*`` names a
training job's hyperparameters and a model's environment carry them under.

Storage goes through ``raymaker.io.storage`` (``s3://`` or ``file://``), imported only when code is
uploaded, so that importing the SDK does not import boto3."""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

# The names SageMaker's containers read (sagemaker.model / sagemaker.estimator in SDK v2).
SCRIPT_PARAM_NAME = "sagemaker_program"
DIR_PARAM_NAME = "sagemaker_submit_directory"
CONTAINER_LOG_LEVEL_PARAM_NAME = "sagemaker_container_log_level"
JOB_NAME_PARAM_NAME = "sagemaker_job_name"
MODEL_SERVER_WORKERS_PARAM_NAME = "sagemaker_model_server_workers"
SAGEMAKER_REGION_PARAM_NAME = "sagemaker_region"
TUNING_OBJECTIVE_PARAM_NAME = "_tuning_objective_metric"

SOURCE_ARCHIVE = "sourcedir.tar.gz"  # fw_utils._TAR_SOURCE_FILENAME
_REMOTE = ("s3://", "file://")


@dataclass(frozen=True)
class UploadedCode:
    """Where a script's code is (``s3_prefix``: the URI of its ``sourcedir.tar.gz``) and the entry
    point's name inside it, as ``sagemaker.fw_utils.UploadedCode``."""

    s3_prefix: str
    script_name: str


def is_remote(source_dir: str | None) -> bool:
    """Whether ``source_dir`` names an archive in storage (``s3://`` or ``file://``) rather than a
    local folder."""
    return bool(source_dir) and str(source_dir).lower().startswith(_REMOTE)


def join_uri(base: str, *parts: str) -> str:
    """``base`` (a URI or a prefix, with or without its trailing ``/``) and ``parts``, ``/``-joined."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def check_code(
    entry_point: str | None,
    source_dir: str | None,
    dependencies: list[str] | None = None,
    *,
    required: bool = True,
) -> None:
    """ValueError, saying what to change, when the code cannot be staged: no entry point (when
    ``required``), an entry point in S3, a source dir that does not exist or lacks the entry point,
    a source archive that is not a ``.tar.gz``, a dependency that is not a folder."""
    if entry_point is None:
        if required or source_dir or dependencies:
            raise ValueError(
                "entry_point is required: give the script to run, e.g. entry_point='train.py' (a file in "
                "source_dir if you give one, else a path from the current directory)"
            )
        return
    if not isinstance(entry_point, str) or not entry_point.strip():
        raise ValueError(f"entry_point must name a file, e.g. 'train.py', not {entry_point!r}")
    if entry_point.lower().startswith(_REMOTE):
        raise ValueError(
            f"Invalid entry point script: {entry_point}. Must be a path to a local file: put it in "
            "source_dir and give its name within it as entry_point"
        )
    if source_dir is not None and (not isinstance(source_dir, str) or not source_dir):
        raise ValueError(f"source_dir must be a local folder or an s3:// .tar.gz, not {source_dir!r}")
    if is_remote(source_dir):
        if not source_dir.endswith(".tar.gz"):  # type: ignore[union-attr]
            raise ValueError(
                f"source_dir {source_dir!r} must name a .tar.gz archive of your code (e.g. "
                "s3://bucket/prefix/sourcedir.tar.gz), or be a local folder"
            )
        if dependencies:
            raise ValueError(
                f"dependencies {dependencies} cannot be added to the archive {source_dir}: put them in "
                "that archive, or give source_dir as a local folder"
            )
        if os.path.isabs(entry_point) or entry_point.startswith(".."):
            raise ValueError(
                f"entry_point {entry_point!r} must be a path inside the archive {source_dir}, e.g. 'train.py'"
            )
        return
    if source_dir:
        if not os.path.isdir(source_dir):
            raise ValueError(
                f"source_dir {source_dir!r} does not exist or is not a folder (looked in "
                f"{os.path.abspath(source_dir)}): give the folder that holds {entry_point!r}"
            )
        if not os.path.isfile(os.path.join(source_dir, entry_point)):
            raise ValueError(
                f'No file named "{entry_point}" was found in directory "{source_dir}": entry_point is a '
                "path relative to source_dir"
            )
    elif not os.path.isfile(entry_point):
        raise ValueError(
            f"entry_point {entry_point!r} does not exist (looked for {os.path.abspath(entry_point)}): "
            "give a path to the script, or source_dir and the script's name within it"
        )
    for dep in dependencies or ():
        if not isinstance(dep, str) or not os.path.exists(dep):
            raise ValueError(
                f"dependency {dep!r} does not exist: dependencies are local folders (or files) copied into "
                "the root of the source dir"
            )


def tar_source(script: str, directory: str | None, dependencies: list[str] | None, target: str) -> str:
    """Write ``sourcedir.tar.gz`` to ``target`` as ``sagemaker.utils.create_tar_file`` does: each entry
    of ``directory`` (else the script alone) and each dependency, at the archive's root under its
    base name, symlinks followed."""
    sources = (
        [script] if directory is None else [os.path.join(directory, n) for n in sorted(os.listdir(directory))]
    )
    sources += list(dependencies or ())
    with tarfile.open(target, mode="w:gz", dereference=True) as tar:
        for source in sources:
            tar.add(source, arcname=os.path.basename(os.path.normpath(source)))
    return target


def tar_and_upload_dir(
    uri_prefix: str,
    script: str,
    directory: str | None = None,
    dependencies: list[str] | None = None,
    settings: Any = None,
) -> UploadedCode:
    """``<uri_prefix>/sourcedir.tar.gz`` uploaded (``sagemaker.fw_utils.tar_and_upload_dir``). A
    ``directory`` already in storage is used as it is, nothing uploaded. ``script_name``: the entry
    point's path within ``directory``, else its base name."""
    check_code(script, directory, dependencies)
    if is_remote(directory):
        return UploadedCode(s3_prefix=str(directory), script_name=script)
    script_name = script if directory else os.path.basename(script)
    uri = join_uri(uri_prefix, SOURCE_ARCHIVE)
    with tempfile.TemporaryDirectory(prefix="raymaker-code-") as tmp:
        archive = tar_source(script, directory, dependencies, os.path.join(tmp, SOURCE_ARCHIVE))
        _storage(uri, settings).upload(archive, uri)
    return UploadedCode(s3_prefix=uri, script_name=script_name)


def _storage(uri: str, settings: Any = None) -> Any:
    # Lazy: raymaker.io.storage imports boto3, s3fs and pyarrow helpers (~0.7 s).
    from raymaker.io.storage import S3Settings, storage_for

    if settings is None and uri.startswith("s3://"):
        settings = S3Settings().resolve()
    return storage_for(uri, settings)


# --- hyperparameters and distribution ------------------------------------------------------------

# distribution key -> the hyperparameter SageMaker's PyTorch container reads (sagemaker.pytorch.PyTorch).
DISTRIBUTIONS = {
    "torch_distributed": "sagemaker_torch_distributed_enabled",
    "pytorchddp": "sagemaker_pytorch_ddp_enabled",
}
INSTANCE_TYPE_PARAM_NAME = "sagemaker_instance_type"
# Strategies SageMaker offers that raymaker does not run (MPI, SMDDP / SMP, parameter servers, XLA).
_UNSUPPORTED_DISTRIBUTIONS = (
    "mpi",
    "smdistributed",
    "parameter_server",
    "pytorchxla",
    "multi_worker_mirrored_strategy",
    "instance_groups",
)


def check_distribution(distribution: Any, framework: str | None, entry_point: str | None) -> dict[str, Any]:
    """``distribution`` as SageMaker's PyTorch estimator takes it, checked: a dict with one of
    ``torch_distributed`` / ``pytorchddp``, each ``{"enabled": bool}``; PyTorch only. Returns a copy."""
    if distribution is None:
        return {}
    if not isinstance(distribution, dict):
        raise ValueError(
            f"distribution must be a dict such as {{'torch_distributed': {{'enabled': True}}}}, not "
            f"{type(distribution).__name__}"
        )
    if not distribution:
        return {}
    if framework != "pytorch":
        raise ValueError(
            f"distribution {distribution} is for PyTorch scripts; the {framework or 'built-in'} container "
            "runs one process per instance: remove distribution"
        )
    for key, value in distribution.items():
        if key in _UNSUPPORTED_DISTRIBUTIONS:
            raise ValueError(
                f"distribution {key!r} is not supported by raymaker: use {{'torch_distributed': "
                "{'enabled': True}} (torchrun's environment; also what pytorchddp gives)"
            )
        if key not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown distribution {key!r}: use 'torch_distributed' or 'pytorchddp', e.g. "
                "{'torch_distributed': {'enabled': True}}"
            )
        if not isinstance(value, dict) or set(value) - {"enabled"}:
            raise ValueError(
                f"distribution[{key!r}] must be {{'enabled': True}} or {{'enabled': False}}, not {value!r}"
            )
        if not isinstance(value.get("enabled", False), bool):
            raise ValueError(
                f"distribution[{key!r}]['enabled'] must be True or False, not {value.get('enabled')!r}"
            )
    if len(distribution) > 1:
        raise ValueError(
            f"distribution names both {' and '.join(distribution)}: give one (torch_distributed is "
            "torchrun's environment; pytorchddp runs the same way)"
        )
    if _enabled(distribution) and entry_point is not None and not entry_point.endswith(".py"):
        raise ValueError(
            "Unsupported entry point type for the distribution torch_distributed. Only python programs "
            f"(*.py) are supported, not {entry_point!r}"
        )
    return {k: dict(v) for k, v in distribution.items()}


def _enabled(distribution: dict[str, Any]) -> str | None:
    return next((k for k, v in distribution.items() if v.get("enabled", False) is True), None)


def distribution_hyperparameters(distribution: dict[str, Any], instance_type: str) -> dict[str, Any]:
    """What ``PyTorch._pytorch_distribution_configuration`` adds (values not yet JSON-encoded):
    ``sagemaker_torch_distributed_enabled`` (or ``sagemaker_pytorch_ddp_enabled``) and
    ``sagemaker_instance_type``; nothing when no strategy is enabled."""
    key = _enabled(distribution)
    if key is None:
        return {}
    return {DISTRIBUTIONS[key]: True, INSTANCE_TYPE_PARAM_NAME: instance_type}


def distribution_from_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, Any] | None:
    """The ``distribution`` a job's hyperparameters were made from (for attach), or None."""
    for key, name in DISTRIBUTIONS.items():
        if decode(hyperparameters.get(name, "false")) is True:
            return {key: {"enabled": True}}
    return None


def decode(value: Any) -> Any:
    """A hyperparameter as the training toolkit reads it: JSON, else the raw string."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def check_metric_definitions(metric_definitions: Any) -> list[dict[str, str]] | None:
    """``metric_definitions`` as AlgorithmSpecification.MetricDefinitions: a list of
    ``{"Name": ..., "Regex": ...}`` whose regexes compile. Returns a copy (None stays None)."""
    if metric_definitions is None:
        return None
    if not isinstance(metric_definitions, (list, tuple)):
        raise ValueError(
            "metric_definitions must be a list of {'Name': ..., 'Regex': ...} dicts, e.g. "
            "[{'Name': 'loss', 'Regex': 'loss=([0-9.]+)'}]"
        )
    out = []
    for d in metric_definitions:
        if not isinstance(d, dict) or set(d) != {"Name", "Regex"}:
            raise ValueError(
                f"metric definition {d!r} must be a dict with exactly the keys 'Name' and 'Regex'"
            )
        try:
            re.compile(d["Regex"])
        except (re.error, TypeError) as e:
            raise ValueError(
                f"metric {d['Name']!r}: Regex {d['Regex']!r} is not a valid regular expression ({e})"
            ) from None
        out.append({"Name": d["Name"], "Regex": d["Regex"]})
    return out
