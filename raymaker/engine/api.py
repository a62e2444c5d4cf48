"""SageMaker's control-plane operations over the engine, one method per operation, dict in, dict out.

This is the narrow seam of DESIGN.md: the in-process backend calls ``SageMakerAPI.call`` directly; an
HTTP server speaking SageMaker's JSON 1.1 protocol wraps the same call, so boto3 clients and the SDK
reach the same engine. Every call is recorded in the audit trail, failed ones with their error.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from raymaker.engine import hosting, states, transform, tuning
from raymaker.protocol.errors import SageMakerError, ValidationError
from raymaker.engine.instance_types import load_instance_types
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore, describe_training_job, training_job_summary
from raymaker.engine.validation import validate_request, validate_training_job
from raymaker.io.channels import list_objects
from raymaker.io.storage import S3Settings


def ensure_ray() -> None:
    """Connect to the Ray cluster in ``RAY_ADDRESS``, or start a local one (local mode)."""
    import ray

    if ray.is_initialized():
        return
    # Train's controller polls worker reports at this interval (2 s by default): every checkpoint
    # report would wait that long. Set before Ray starts so every Ray process inherits it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    ray_env_for_serving(os.environ)
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def ray_env_for_serving(environ: Any) -> None:
    """Serve's HAProxy ingress answers in ~1 ms where its Python proxy takes ~10 ms, but it does not
    terminate TLS: use it unless the runtime URL is https. Read by Serve's controller when it starts,
    so it must be in the environment Ray starts with."""
    https = (environ.get("RAYMAKER_RUNTIME_URL") or "").startswith("https:")
    environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "0" if https else "1")
    # Under HAProxy a stopping replica lingers 30 s for external load balancers to notice; here the
    # only balancer is Serve's own HAProxy, which the controller updates at once.
    environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")


class SageMakerAPI:
    def __init__(self, store: JobStore | None = None, settings: S3Settings | None = None):
        self.store = store or JobStore()
        self.settings = (settings or S3Settings()).resolve()
        self.resources = ResourceStore(self.store)
        self._operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateTrainingJob": self.create_training_job,
            "DescribeTrainingJob": self.describe_training_job,
            "StopTrainingJob": self.stop_training_job,
            "ListTrainingJobs": self.list_training_jobs,
            # raymaker's own: what CloudWatch Logs and Metrics hold for a SageMaker job
            "GetTrainingJobLogs": self.get_training_job_logs,
            "GetTrainingJobMetrics": self.get_training_job_metrics,
            "WaitForTrainingJob": self.wait_for_training_job,
            # hosting
            "CreateModel": lambda p: hosting.create_model(self.resources, p),
            "DescribeModel": lambda p: hosting.describe_model(self.resources, p),
            "DeleteModel": lambda p: self._delete("model", "DeleteModel", "ModelName", p),
            "ListModels": lambda p: self._list("model", "ListModels", "Models", "Model", p),
            "CreateEndpointConfig": lambda p: hosting.create_endpoint_config(self.resources, p),
            "DescribeEndpointConfig": lambda p: hosting.describe_endpoint_config(self.resources, p),
            "DeleteEndpointConfig": lambda p: self._delete(
                "endpoint-config", "DeleteEndpointConfig", "EndpointConfigName", p
            ),
            "ListEndpointConfigs": lambda p: self._list(
                "endpoint-config", "ListEndpointConfigs", "EndpointConfigs", "EndpointConfig", p
            ),
            "CreateEndpoint": self.create_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "DeleteEndpoint": self.delete_endpoint,
            "DescribeEndpoint": lambda p: hosting.describe_endpoint(self.resources, p),
            "ListEndpoints": self.list_endpoints,
            # batch transform
            "CreateTransformJob": self.create_transform_job,
            "DescribeTransformJob": lambda p: transform.describe_transform_job(self.resources, p),
            "StopTransformJob": lambda p: transform.stop_transform_job(self.resources, p) or {},
            "ListTransformJobs": self.list_transform_jobs,
            # automatic model tuning
            "CreateHyperParameterTuningJob": self.create_tuning_job,
            "DescribeHyperParameterTuningJob": lambda p: tuning.describe_tuning_job(
                self.resources, self.store, p
            ),
            "StopHyperParameterTuningJob": lambda p: tuning.stop_tuning_job(self.resources, p),
            "ListHyperParameterTuningJobs": self.list_tuning_jobs,
            "ListTrainingJobsForHyperParameterTuningJob": lambda p: tuning.list_training_jobs_for_tuning_job(
                self.resources, self.store, p
            ),
        }
        # Load botocore's SageMaker model and find the job service while the caller sets up its job.
        threading.Thread(target=self._prewarm, daemon=True, name="raymaker-prewarm").start()

    def _prewarm(self) -> None:
        try:
            validate_request("DescribeTrainingJob", {"TrainingJobName": "prewarm"})
            import ray

            if ray.is_initialized():
                from raymaker.engine.runner import job_service

                job_service(str(self.store.path))
        except Exception:  # noqa: BLE001 - only a head start; the real call reports any problem
            pass

    def call(self, operation: str, params: dict[str, Any], *, caller: str | None = None) -> dict[str, Any]:
        handler = self._operations.get(operation)
        try:
            if handler is None:
                raise ValidationError(f"raymaker does not support the operation {operation!r} yet")
            result = handler(dict(params))
        except SageMakerError as e:
            self.store.record_api_call(operation, params, error=e, caller=caller)
            raise
        self.store.record_api_call(operation, params, caller=caller)
        return result

    # --- training jobs -------------------------------------------------------------------------

    def create_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        from raymaker.engine.runner import start_runner

        validate_request("CreateTrainingJob", params)
        spec = validate_training_job(params, instance_types=load_instance_types())
        # The data must be there before any Ray work starts: a missing bucket or an empty prefix is
        # the user's to fix, and says so now rather than from inside a worker.
        for channel in spec.channels:
            if channel.name == "model":
                continue
            try:
                list_objects(channel, self.settings)
            except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
                raise ValidationError(f"channel {channel.name!r}: {e}") from None
        ensure_ray()
        record = self.store.create_training_job(spec)
        start_runner(spec, self.settings, str(self.store.path))
        return {"TrainingJobArn": record["arn"]}

    def describe_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("DescribeTrainingJob", params)
        record = self.store.get_training_job(params["TrainingJobName"])
        out = describe_training_job(record)
        # raymaker extension: the job's cost at the instance type's hourly price
        if record.get("cost") is not None:
            out["raymaker:Cost"] = record["cost"]
        return out

    def stop_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("StopTrainingJob", params)
        name = params["TrainingJobName"]
        record = self.store.get_training_job(name)
        if states.is_terminal(states.SecondaryStatus(record["secondary_status"])):
            raise ValidationError(
                f"training job {name!r} has already ended ({record['status']}): nothing to stop"
            )
        if record["secondary_status"] != states.SecondaryStatus.STOPPING:
            self.store.transition_training_job(name, states.SecondaryStatus.STOPPING)
        return {}

    def list_training_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("ListTrainingJobs", params)
        records = self.store.list_training_jobs(
            status=params.get("StatusEquals"),
            name_contains=params.get("NameContains"),
            max_results=int(params.get("MaxResults", 100)),
            sort_by=params.get("SortBy", "CreationTime"),
            sort_order=params.get("SortOrder", "Descending"),
        )
        return {"TrainingJobSummaries": [training_job_summary(r) for r in records]}

    def get_training_job_logs(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TrainingJobName"]
        self.store.get_training_job(name)
        events = self.store.logs(name, after_seq=int(params.get("AfterSeq", 0)))
        return {"Events": events}

    def wait_for_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        """Long poll: return once the job's SecondaryStatus differs from ``SinceSecondaryStatus`` (or it
        has ended), or after ``TimeoutSeconds``. Lets ``wait()`` see the end of a job within 50 ms
        without describing it over and over."""
        name = params["TrainingJobName"]
        since = params.get("SinceSecondaryStatus")
        deadline = time.time() + float(params.get("TimeoutSeconds", 10))
        while True:
            record = self.store.get_training_job(name)
            status = states.SecondaryStatus(record["secondary_status"])
            if status != since or states.is_terminal(status) or time.time() >= deadline:
                return {"TrainingJobStatus": record["status"], "SecondaryStatus": record["secondary_status"]}
            time.sleep(0.05)

    def get_training_job_metrics(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TrainingJobName"]
        self.store.get_training_job(name)
        return {"Metrics": self.store.metric_history(name)}

    # --- hosting -------------------------------------------------------------------------------

    def _apply_endpoint(self, name: str) -> None:
        """The job service deploys (or deletes) the endpoint; this call returns at once."""
        from raymaker.engine.runner import job_service

        ensure_ray()
        job_service(str(self.store.path)).apply_endpoint.remote(name, self.settings)

    def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        out = hosting.create_endpoint(self.resources, params)
        self._apply_endpoint(params["EndpointName"])
        return out

    def update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        out = hosting.update_endpoint(self.resources, params)
        self._apply_endpoint(params["EndpointName"])
        return out

    def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        hosting.delete_endpoint(self.resources, params)
        self._apply_endpoint(params["EndpointName"])
        return {}

    def list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("ListEndpoints", params)
        records = self.resources.list(
            "endpoint",
            name_contains=params.get("NameContains"),
            status=params.get("StatusEquals"),
            sort_by=params.get("SortBy", "CreationTime"),
            sort_order=params.get("SortOrder", "Descending"),
            max_results=int(params.get("MaxResults", 100)),
        )
        return {"Endpoints": [hosting.endpoint_summary(r) for r in records]}

    def _delete(self, kind: str, operation: str, key: str, params: dict[str, Any]) -> dict[str, Any]:
        validate_request(operation, params)
        self.resources.delete(kind, params[key])
        return {}

    def _list(
        self, kind: str, operation: str, out_key: str, prefix: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        validate_request(operation, params)
        records = self.resources.list(
            kind,
            name_contains=params.get("NameContains"),
            sort_by=params.get("SortBy", "CreationTime"),
            sort_order=params.get("SortOrder", "Descending"),
            max_results=int(params.get("MaxResults", 100)),
        )
        return {
            out_key: [
                {
                    f"{prefix}Name": r["name"],
                    f"{prefix}Arn": r["arn"],
                    "CreationTime": hosting._dt(r["creation_time"]),
                }
                for r in records
            ]
        }

    # --- batch transform -------------------------------------------------------------------------

    def create_transform_job(self, params: dict[str, Any]) -> dict[str, Any]:
        from raymaker.engine.runner import job_service

        out = transform.create_transform_job(self.resources, params, self.settings)
        ensure_ray()
        job_service(str(self.store.path)).run_transform.remote(params["TransformJobName"], self.settings)
        return out

    def list_transform_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("ListTransformJobs", params)
        records = self.resources.list(
            "transform-job",
            name_contains=params.get("NameContains"),
            status=params.get("StatusEquals"),
            sort_by=params.get("SortBy", "CreationTime"),
            sort_order=params.get("SortOrder", "Descending"),
            max_results=int(params.get("MaxResults", 100)),
        )
        return {"TransformJobSummaries": [transform.transform_job_summary(r) for r in records]}

    # --- automatic model tuning ----------------------------------------------------------------

    def create_tuning_job(self, params: dict[str, Any]) -> dict[str, Any]:
        from raymaker.engine.runner import job_service

        out = tuning.create_tuning_job(self.resources, params, self.settings)
        ensure_ray()
        job_service(str(self.store.path)).run_tuning.remote(
            params["HyperParameterTuningJobName"], self.settings
        )
        return out

    def list_tuning_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_request("ListHyperParameterTuningJobs", params)
        records = self.resources.list(
            tuning.KIND,
            name_contains=params.get("NameContains"),
            status=params.get("StatusEquals"),
            sort_by=params.get("SortBy", "CreationTime"),
            sort_order=params.get("SortOrder", "Descending"),
            max_results=int(params.get("MaxResults", 100)),
        )
        return {"HyperParameterTuningJobSummaries": [tuning.tuning_job_summary(r) for r in records]}
