"""The engine's one entry point, ``SageMakerAPI.call(operation, params)``: dict in, dict out.

This is the narrow seam of DESIGN.md: the in-process backend is ``SageMakerAPI`` itself; an HTTP server
speaking SageMaker's JSON 1.1 protocol wraps the same ``call``. The operations themselves (validation,
dispatch, audit) are ``dispatch.py``'s table; this module decides where it runs: here, on the node that
holds the job database, or in the job service for a process on any other node.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from raymaker.cluster.runtime import ensure_ray, on_head_node
from raymaker.engine.context import Engine
from raymaker.engine.database import database_location
from raymaker.engine.dispatch import OPERATIONS, dispatch
from raymaker.engine.service import job_service
from raymaker.engine.store import JobStore, default_db_path
from raymaker.engine.validation import validate_request
from raymaker.io.storage import S3Settings

__all__ = ["OPERATIONS", "SageMakerAPI"]


class SageMakerAPI:
    """The in-process backend: ``call(operation, params)``. On the node holding the job database (the
    Ray head, which is this machine in local mode) the operation runs here, against the database; from
    any other node of a Ray cluster the call goes to the job service, which alone touches the database
    there (the database's path then names a file on the head)."""

    def __init__(self, store: JobStore | None = None, settings: S3Settings | None = None):
        self.db_location = store.url if store is not None else str(database_location(None, default_db_path()))
        self._store = store
        self._engine: Engine | None = None
        # None: not decided yet (needs to know where this process runs); a given store is local.
        self._remote: bool | None = False if store is not None else None
        self.settings = (settings or S3Settings()).resolve()
        self._ray_ready = False
        self._lock = threading.Lock()
        # Load botocore's SageMaker model and find the job service while the caller sets up its job.
        threading.Thread(target=self._prewarm, daemon=True, name="raymaker-prewarm").start()

    @property
    def store(self) -> JobStore:
        """The job database, opened on first use: only by an API on the database's node."""
        with self._lock:
            if self._store is None:
                self._store = JobStore(self.db_location)
            return self._store

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.store, self.settings, service=self.service)
        return self._engine

    @property
    def resources(self) -> Any:
        return self.engine.resources

    def service(self) -> Any:
        """The job service's actor handle: Ray is joined or started on first use, and the service is
        looked up by name every time (a millisecond), so a service that died and was replaced is never
        called through a stale handle."""
        self._join()
        return job_service(self.db_location)

    def _join(self) -> None:
        with self._lock:
            if not self._ray_ready:
                ensure_ray()
                self._ray_ready = True

    def is_remote(self) -> bool:
        """Whether calls go to the job service: this process runs on a Ray node other than the head.
        Without a Ray cluster to join (local mode, no RAY_ADDRESS) this machine holds the database."""
        if self._remote is None:
            import ray

            if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
                self._join()
                self._remote = not on_head_node()
            else:
                self._remote = False
        return self._remote

    def ensure_ready(self) -> bool:
        """Join Ray and start the job service now, for work that must outlive this process (the CLI's
        deploy, or a job it does not wait for). False, with nothing started, when there is no Ray
        cluster to join (this process would start one that ends with it)."""
        import ray

        joined = ray.is_initialized()
        ensure_ray()
        from ray._private import worker

        node = getattr(worker, "_global_node", None)
        if not joined and node is not None and getattr(node, "head", False):
            ray.shutdown()  # a head started here would end with this process, and the work with it
            return False
        self.service()
        return True

    def _prewarm(self) -> None:
        try:
            validate_request("DescribeTrainingJob", {"TrainingJobName": "prewarm"})
            import ray

            if ray.is_initialized():
                self.service()
        except Exception:  # noqa: BLE001 - only a head start; the real call reports any problem
            pass

    def call(
        self,
        operation: str,
        params: dict[str, Any],
        *,
        caller: str | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        audit = dict(caller=caller, source_ip=source_ip, user_agent=user_agent, request_id=request_id)
        if not self.is_remote():
            return dispatch(self.engine, operation, params, **audit)
        import ray

        try:
            return ray.get(self.service().call.remote(operation, params, self.settings, **audit))
        except ray.exceptions.RayTaskError as e:  # the operation's own error, as in-process
            if isinstance(getattr(e, "cause", None), Exception):
                raise e.cause from None
            raise
