"""Which backend a ``Session`` talks to: a registry of backend factories by name (as Metaflow picks its
metadata and datastore providers). ``local`` (the default) runs the engine in this process against the
local Ray instance or ``RAY_ADDRESS``; ``http`` talks to a raymaker API server (the default while
``RAYMAKER_ENDPOINT_URL`` is set); ``RAYMAKER_BACKEND`` names one, and ``register_backend`` adds one (a
test double).

This is the only SDK module that may import the engine, and only inside the ``local`` factory, so that
importing the SDK never imports the engine, Ray or Serve."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

DEFAULT_BACKEND = "local"
HTTP_BACKEND = "http"  # a raymaker API server (raymaker.sdk.http_backend)
BACKEND_ENV = "RAYMAKER_BACKEND"


class Backend(Protocol):
    """The one seam between the SDK and the engine: a SageMaker operation name and its request dict,
    answered with the response dict (errors raise ``raymaker.protocol.errors.SageMakerError``)."""

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]: ...


BackendFactory = Callable[[], Backend]

_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> None:
    """Make ``name`` (as ``Session(backend=name)`` or ``RAYMAKER_BACKEND`` give it) build its backend
    with ``factory()``. A name already taken needs ``replace=True``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a backend name must be a non-empty string, not {name!r}")
    if name in _FACTORIES and not replace:
        raise ValueError(f"backend {name!r} is already registered; pass replace=True to replace it")
    _FACTORIES[name] = factory


def backend_names() -> list[str]:
    """The registered backend names, sorted."""
    return sorted(_FACTORIES)


def get_backend(name: str | None = None) -> Backend:
    """A new backend: ``name``, else ``RAYMAKER_BACKEND``, else ``local``."""
    from_env = name is None and bool(os.environ.get(BACKEND_ENV))
    # A server's URL in the environment (RAYMAKER_ENDPOINT_URL, AWS_ENDPOINT_URL_SAGEMAKER) means "talk to it".
    from raymaker.sdk.http_backend import endpoint_from_env

    fallback = HTTP_BACKEND if endpoint_from_env() else DEFAULT_BACKEND
    chosen = name or os.environ.get(BACKEND_ENV) or fallback
    factory = _FACTORIES.get(chosen)
    if factory is None:
        where = f" (from {BACKEND_ENV})" if from_env else ""
        raise ValueError(
            f"unknown raymaker backend {chosen!r}{where}: use one of {', '.join(backend_names())}, "
            "or register it first with raymaker.sdk.backends.register_backend(name, factory)"
        )
    return factory()


def _local() -> Backend:
    # The one engine import in the SDK, made only when a local Session is created.
    from raymaker.engine.api import SageMakerAPI

    return SageMakerAPI()


def _http() -> Backend:
    from raymaker.sdk.http_backend import HTTPBackend, endpoint_from_env

    url = endpoint_from_env()
    if not url:
        raise ValueError("the http backend needs the server's URL: set RAYMAKER_ENDPOINT_URL, or pass "
                         "Session(endpoint_url=...)")
    return HTTPBackend(url)


register_backend(DEFAULT_BACKEND, _local)
register_backend(HTTP_BACKEND, _http)
