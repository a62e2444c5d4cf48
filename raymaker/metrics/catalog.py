"""Every metric raymaker exports, declared once: its name in Prometheus, its kind, and where it sits in
CloudWatch (namespace, metric name, dimensions), so the code that records it, the dashboards and
docs/metrics.md all read one table.

Names: Ray prefixes every application metric with ``ray_``, writes it in lower case, and Prometheus'
conventions add ``_total`` to counters and ``_bucket`` / ``_sum`` / ``_count`` to histograms. The part
raymaker chooses is ``sagemaker_<namespace>_<CloudWatch metric name>``; labels are the CloudWatch dimensions, spelled as
CloudWatch spells them. Where CloudWatch puts a metric's name in the data (a training job's algorithm
metrics, e.g. ``train:loss``), it is the ``MetricName`` label. Units are CloudWatch's (latencies in
microseconds, utilizations in percent). What CloudWatch has no metric for (jobs by status, tuning
progress) lives under ``raymaker_``, with labels named after the API fields it mirrors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

RAY_PREFIX = "ray_"  # Ray's exporter puts it before every application metric
ENV = "RAYMAKER_METRICS"  # "off": export nothing (cluster-wide, or in a model's / job's Environment)

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

# Microseconds, CloudWatch's unit for the endpoint latencies: 100 us to 60 s (SageMaker's timeout).
LATENCY_BUCKETS_US = (
    100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0,
    250_000.0, 500_000.0, 1_000_000.0, 2_500_000.0, 5_000_000.0, 10_000_000.0, 30_000_000.0, 60_000_000.0,
)  # fmt: skip

AWS_SAGEMAKER = "AWS/SageMaker"
ENDPOINTS = "/aws/sagemaker/Endpoints"
TRAINING_JOBS = "/aws/sagemaker/TrainingJobs"
RAYMAKER = ""  # no CloudWatch namespace: raymaker's own

_NAMESPACE_PREFIX = {
    AWS_SAGEMAKER: "sagemaker_",
    ENDPOINTS: "sagemaker_endpoints_",
    TRAINING_JOBS: "sagemaker_trainingjobs_",
    RAYMAKER: "raymaker_",
}


@dataclass(frozen=True)
class Metric:
    """One exported metric. ``labels`` are CloudWatch's dimensions (or, for raymaker's own, the API
    fields), in the order the recorder passes them."""

    cloudwatch_name: str  # CloudWatch's metric name ("" where the name is the MetricName label)
    namespace: str
    kind: str
    labels: tuple[str, ...]
    unit: str
    description: str
    buckets: tuple[float, ...] = ()
    name_override: str = ""  # the Prometheus name where it is not namespace prefix + CloudWatch name
    mirrors: str = ""  # for raymaker's own: the API field it mirrors

    @property
    def name(self) -> str:
        """The name given to Ray (``ray.util.metrics``): lower case, as Ray's exporter writes every
        name (CloudWatch's ``Invocations`` is ``invocations`` in a scrape whatever Ray is given)."""
        return (self.name_override or _NAMESPACE_PREFIX[self.namespace] + self.cloudwatch_name).lower()

    @property
    def exported(self) -> str:
        """The name a Prometheus scrape shows (for histograms, the family: ``_bucket`` etc. follow)."""
        return RAY_PREFIX + self.name + ("_total" if self.kind == COUNTER else "")

    def series(self) -> tuple[str, ...]:
        """Every sample name a scrape shows for it."""
        if self.kind == HISTOGRAM:
            base = RAY_PREFIX + self.name
            return (base + "_bucket", base + "_sum", base + "_count")
        return (self.exported,)


_EP = ("EndpointName", "VariantName")

# --- endpoints: AWS/SageMaker (invocations) and /aws/sagemaker/Endpoints (instances) ---------------
INVOCATIONS = Metric(
    "Invocations", AWS_SAGEMAKER, COUNTER, _EP, "Count",
    "InvokeEndpoint requests a variant answered (any status)",
)
INVOCATION_4XX = Metric(
    "Invocation4XXErrors", AWS_SAGEMAKER, COUNTER, _EP, "Count",
    "InvokeEndpoint requests answered with a 4xx status",
)
INVOCATION_5XX = Metric(
    "Invocation5XXErrors", AWS_SAGEMAKER, COUNTER, _EP, "Count",
    "InvokeEndpoint requests answered with a 5xx status",
)
INVOCATIONS_PER_INSTANCE = Metric(
    "InvocationsPerInstance", AWS_SAGEMAKER, COUNTER, _EP, "Count",
    "Requests the model of one instance (Serve replica) ran; one series per instance, so the "
    "average over a variant's series is CloudWatch's InvocationsPerInstance",
)
MODEL_LATENCY = Metric(
    "ModelLatency", AWS_SAGEMAKER, HISTOGRAM, _EP, "Microseconds",
    "Time the model took to answer (decode, predict, encode; a container's round trip)",
    LATENCY_BUCKETS_US,
)
OVERHEAD_LATENCY = Metric(
    "OverheadLatency", AWS_SAGEMAKER, HISTOGRAM, _EP, "Microseconds",
    "Time the replica's request handler spent beyond ModelLatency (checks, body, routing, response)",
    LATENCY_BUCKETS_US,
)
ENDPOINT_CPU = Metric(
    "CPUUtilization", ENDPOINTS, GAUGE, _EP, "Percent",
    "CPU use of one instance's processes, summed over cores (0-100 x cores)",
)
ENDPOINT_MEMORY = Metric(
    "MemoryUtilization", ENDPOINTS, GAUGE, _EP, "Percent",
    "Resident memory of one instance's processes over its instance type's memory (the node's when "
    "the type names none)",
)

# --- training jobs: /aws/sagemaker/TrainingJobs ----------------------------------------------------
_HOST = ("Host",)  # "<training job name>/algo-<n>", as CloudWatch names a job's instances
TRAINING_CPU = Metric(
    "CPUUtilization", TRAINING_JOBS, GAUGE, _HOST, "Percent",
    "CPU use of one instance's processes, summed over cores (0-100 x cores)",
)
TRAINING_MEMORY = Metric(
    "MemoryUtilization", TRAINING_JOBS, GAUGE, _HOST, "Percent",
    "Resident memory of one instance's processes over its instance type's memory",
)
TRAINING_GPU = Metric(
    "GPUUtilization", TRAINING_JOBS, GAUGE, _HOST, "Percent",
    "Use of the instance's GPUs, summed over GPUs (0-100 x GPUs); only instances with GPUs",
)
TRAINING_GPU_MEMORY = Metric(
    "GPUMemoryUtilization", TRAINING_JOBS, GAUGE, _HOST, "Percent",
    "Memory used on the instance's GPUs, summed over GPUs (0-100 x GPUs); only instances with GPUs",
)
ALGORITHM_METRIC = Metric(
    "", TRAINING_JOBS, GAUGE, ("TrainingJobName", "MetricName"), "None",
    "The latest value of each metric a training job emitted (a built-in algorithm's, or a "
    "MetricDefinitions match): CloudWatch's metric name is the MetricName label",
    name_override="sagemaker_trainingjobs_AlgorithmMetric",
)

# --- raymaker's own: no CloudWatch metric -----------------------------------------------------------
JOBS = Metric(
    "", RAYMAKER, GAUGE, ("JobDatabase", "Kind", "Status"), "Count",
    "Resources by kind (TrainingJob, HyperParameterTuningJob, TransformJob, Endpoint) and status, per job "
    "database (a cluster may serve several: its job service's id)",
    name_override="raymaker_jobs", mirrors="List*(StatusEquals)",
)
TUNING_TRAINING_JOBS = Metric(
    "", RAYMAKER, GAUGE, ("HyperParameterTuningJobName", "Status"), "Count",
    "A tuning job's training jobs by status",
    name_override="raymaker_tuning_training_jobs",
    mirrors="DescribeHyperParameterTuningJob TrainingJobStatusCounters",
)
TUNING_BEST_OBJECTIVE = Metric(
    "", RAYMAKER, GAUGE, ("HyperParameterTuningJobName", "MetricName"), "None",
    "The best final objective value among a tuning job's training jobs so far",
    name_override="raymaker_tuning_best_objective",
    mirrors="DescribeHyperParameterTuningJob BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric",
)

CATALOG: tuple[Metric, ...] = (
    INVOCATIONS, INVOCATION_4XX, INVOCATION_5XX, INVOCATIONS_PER_INSTANCE, MODEL_LATENCY,
    OVERHEAD_LATENCY, ENDPOINT_CPU, ENDPOINT_MEMORY,
    TRAINING_CPU, TRAINING_MEMORY, TRAINING_GPU, TRAINING_GPU_MEMORY, ALGORITHM_METRIC,
    JOBS, TUNING_TRAINING_JOBS, TUNING_BEST_OBJECTIVE,
)  # fmt: skip

# Exported only where the hardware is: a scrape of a CPU-only cluster has no series for them.
GPU_ONLY = frozenset({TRAINING_GPU.name, TRAINING_GPU_MEMORY.name})


def by_exported_name() -> dict[str, Metric]:
    """Every sample name a scrape may show -> its metric."""
    return {s: m for m in CATALOG for s in m.series()}


def enabled(*environments: Mapping[str, str] | None) -> bool:
    """Whether metrics are on: ``RAYMAKER_METRICS=off`` in the first environment that sets it (a
    model's or job's own Environment first, then the process's) turns them off."""
    for env in (*environments, os.environ):
        value = (env or {}).get(ENV)
        if value:
            return value.strip().lower() not in ("off", "0", "false", "no")
    return True
