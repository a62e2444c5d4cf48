"""Resource names as the SageMaker Python SDK makes them (``sagemaker.utils``): a base (the job's base
name, or the algorithm part of its image) plus a timestamp suffix. Timestamps are UTC, so that names
sort the same on every machine that shares a raymaker service."""

from __future__ import annotations

import re
import secrets
import threading
import time

TUNING_JOB_NAME_MAX_LENGTH = 32


def sagemaker_timestamp() -> str:
    """``YYYY-mm-dd-HH-MM-SS-mmm`` (millisecond precision), as ``sagemaker.utils.sagemaker_timestamp``."""
    moment = time.time()
    millis = int((moment % 1) * 1000)
    return time.strftime(f"%Y-%m-%d-%H-%M-%S-{millis:03d}", time.gmtime(moment))


def sagemaker_short_timestamp() -> str:
    """``yymmdd-HHMM``, as ``sagemaker.utils.sagemaker_short_timestamp`` (for 32-character names)."""
    return time.strftime("%y%m%d-%H%M", time.gmtime())


def name_from_base(base: str, max_length: int = 63, short: bool = False) -> str:
    """``<base>-<timestamp>``, the base trimmed so the name fits ``max_length`` (63, SageMaker's limit
    for job, model and endpoint names), as ``sagemaker.utils.name_from_base``."""
    timestamp = sagemaker_short_timestamp() if short else sagemaker_timestamp()
    trimmed = base[: max_length - len(timestamp) - 1]
    return f"{trimmed}-{timestamp}"


def base_name_from_image(image: str | None, default_base_name: str | None = None) -> str:
    """The algorithm part of an image URI (``.../sagemaker-xgboost:1.7-1`` -> ``sagemaker-xgboost``);
    a bare algorithm name as is. As ``sagemaker.utils.base_name_from_image``: no image falls back to
    ``default_base_name``."""
    if image is None:
        if default_base_name is None:
            raise TypeError("no image to name the job after: give a base name (base_job_name=...)")
        return default_base_name
    match = re.match(r"^(.+/)?([^:/]+)(:[^:]+)?$", image)
    return match.group(2) if match else image


_issued: set[str] = set()
_issued_lock = threading.Lock()


def tuning_job_name(base: str, max_length: int = TUNING_JOB_NAME_MAX_LENGTH) -> str:
    """``<base>-<yymmdd-HHMM>-<5 hex>``, at most ``max_length`` (32) characters: the SageMaker SDK's
    ``name_from_base(base, max_length=32, short=True)`` plus a random part, because the short timestamp
    alone gives two fits in the same minute the same name (never the same one twice in a process).
    Characters a tuning job name cannot hold become ``-``."""
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "tuning"
    while True:
        suffix = f"{sagemaker_short_timestamp()}-{secrets.token_hex(3)[:5]}"
        trimmed = base[: max_length - len(suffix) - 1].rstrip("-")
        name = f"{trimmed}-{suffix}"
        with _issued_lock:
            if name not in _issued:
                _issued.add(name)
                return name
