"""``Session``: which backend the SDK talks to. Local mode (the default) runs the engine in this
process against the local Ray instance (or ``RAY_ADDRESS``), with records in SQLite under
``RAYMAKER_HOME`` (default ``~/.raymaker``)."""

from __future__ import annotations

import os
from typing import Any, Protocol

from raymaker.engine.store import raymaker_home


class Backend(Protocol):
    """The one seam between the SDK and the engine: a SageMaker operation name and its request dict,
    answered with the response dict (errors raise ``raymaker.engine.errors.SageMakerError``)."""

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]: ...


class Session:
    def __init__(self, backend: Backend | None = None, *, default_output_path: str | None = None):
        if backend is None:
            from raymaker.engine.api import SageMakerAPI

            backend = SageMakerAPI()
        self.backend = backend
        self._default_output_path = default_output_path

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.backend.call(operation, params)

    @property
    def default_output_path(self) -> str:
        """Where models go when an Estimator names no ``output_path``: a local folder in local mode."""
        return self._default_output_path or "file://" + os.path.join(str(raymaker_home()), "output")
