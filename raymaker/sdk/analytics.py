"""Job results as pandas DataFrames, named and shaped as the SageMaker Python SDK v2's
(``sagemaker.analytics``): a tuning job's trials (``HyperparameterTuningJobAnalytics``) and a training
job's metrics over time (``TrainingJobAnalytics``, from GetTrainingJobMetrics where SageMaker reads
CloudWatch). raymaker adds ``.plot()`` to both: a PNG-ready matplotlib Figure (``raymaker.sdk.plots``)."""

from __future__ import annotations

import datetime
import logging
import os
from typing import TYPE_CHECKING, Any

from raymaker.sdk.session import Session

if TYPE_CHECKING:  # matplotlib is imported only when something is plotted
    from matplotlib.figure import Figure

__all__ = ["HyperparameterTuningJobAnalytics", "TrainingJobAnalytics"]

HYPERPARAMETER_TUNING_JOB_NAME = "HyperParameterTuningJobName"
LOGGER = logging.getLogger("raymaker.sdk")


class AnalyticsMetricsBase:
    """What every analytics object shares (as ``sagemaker.analytics`` has it): a DataFrame fetched once
    and cached until ``clear_cache`` or ``dataframe(force_refresh=True)``."""

    _dataframe: Any = None

    def clear_cache(self) -> None:
        self._dataframe = None

    def dataframe(self, force_refresh: bool = False) -> Any:
        if force_refresh:
            self.clear_cache()
        if self._dataframe is None:
            self._dataframe = self._fetch_dataframe()
        return self._dataframe

    def export_csv(self, filename: str) -> None:
        self.dataframe().to_csv(filename)

    def _fetch_dataframe(self) -> Any:
        raise NotImplementedError


class HyperparameterTuningJobAnalytics(AnalyticsMetricsBase):
    """A tuning job's trials as a pandas DataFrame (``sagemaker.analytics``)."""

    def __init__(self, hyperparameter_tuning_job_name: str, sagemaker_session: Session | None = None):
        self._session = sagemaker_session or Session()
        self._tuning_job_name = hyperparameter_tuning_job_name
        self.clear_cache()

    @property
    def name(self) -> str:
        return self._tuning_job_name

    def __repr__(self) -> str:
        return f"<raymaker.HyperparameterTuningJobAnalytics for {self.name}>"

    def clear_cache(self) -> None:
        super().clear_cache()
        self._description: dict[str, Any] | None = None
        self._summaries: list[dict[str, Any]] | None = None

    def _fetch_dataframe(self) -> Any:
        """One row per trial: a column per tuned hyperparameter (floats for Integer and Continuous
        ranges, strings for Categorical ones), then TrainingJobName, TrainingJobStatus,
        FinalObjectiveValue, TrainingStartTime, TrainingEndTime, TrainingElapsedTimeSeconds."""
        import pandas as pd

        ranges = self.tuning_ranges
        numeric = {name for name, r in ranges.items() if "Values" not in r}

        def reshape(summary: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in (summary.get("TunedHyperParameters") or {}).items():
                out[key] = _as_float(value) if key in numeric or key not in ranges else value
            out["TrainingJobName"] = summary["TrainingJobName"]
            out["TrainingJobStatus"] = summary["TrainingJobStatus"]
            out["FinalObjectiveValue"] = (
                summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            ).get("Value")
            start, end = summary.get("TrainingStartTime"), summary.get("TrainingEndTime")
            out["TrainingStartTime"] = start
            out["TrainingEndTime"] = end
            out["TrainingElapsedTimeSeconds"] = _elapsed(start, end)
            if "TrainingJobDefinitionName" in summary:
                out["TrainingJobDefinitionName"] = summary["TrainingJobDefinitionName"]
            return out

        rows = [reshape(s) for s in self.training_job_summaries()]
        columns = [*ranges, *_FIXED_COLUMNS]
        if not rows:
            return pd.DataFrame(columns=columns)
        return pd.DataFrame(rows)

    @property
    def tuning_ranges(self) -> dict[str, dict[str, Any]]:
        """Each tuned hyperparameter's ParameterRanges entry, by name."""
        ranges = self._parameter_ranges()
        return {item["Name"]: item for items in ranges.values() for item in items or ()}

    def _parameter_ranges(self) -> dict[str, list[dict[str, Any]]]:
        desc = self.description()
        config = desc.get("HyperParameterTuningJobConfig") or {}
        return (
            config.get("ParameterRanges")
            or (desc.get("TrainingJobDefinition") or {}).get("HyperParameterRanges")
            or {}
        )

    def _objective(self) -> dict[str, Any]:
        """HyperParameterTuningJobObjective: the job's, else its (first) training job definition's."""
        desc = self.description()
        objective = (desc.get("HyperParameterTuningJobConfig") or {}).get("HyperParameterTuningJobObjective")
        for definition in [desc.get("TrainingJobDefinition"), *(desc.get("TrainingJobDefinitions") or ())]:
            objective = objective or (definition or {}).get("TuningObjective")
        return objective or {"MetricName": "objective", "Type": "Maximize"}

    def plot(self, filename: str | os.PathLike[str] | None = None) -> Figure:
        """The trials as a matplotlib Figure: the objective of each trial, in the order they started,
        with the best so far; then the objective against each tuned hyperparameter, the best trial
        starred. With ``filename``, also written there as a PNG. ValueError while no trial has
        reported its objective."""
        from raymaker.sdk import plots

        df = self.dataframe()
        objective = self._objective()
        if df.empty or df["FinalObjectiveValue"].isna().all():
            statuses = df["TrainingJobStatus"].value_counts().to_dict() if not df.empty else {}
            trials = ", ".join(f"{n} {s}" for s, n in statuses.items()) or "no trials yet"
            raise ValueError(
                f"tuning job {self.name} has no trial with an objective ({objective['MetricName']}) "
                f"to plot yet ({trials}): plot it again once a trial has completed"
            )
        fig = plots.tuning_trials(
            df,
            self.name,
            objective["MetricName"],
            objective.get("Type", "Maximize"),
            self._parameter_ranges(),
        )
        if filename is not None:
            plots.save_png(fig, filename)
        return fig

    def description(self, force_refresh: bool = False) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob of the tuning job (cached)."""
        if force_refresh:
            self.clear_cache()
        if self._description is None:
            self._description = self._session.call(
                "DescribeHyperParameterTuningJob", {HYPERPARAMETER_TUNING_JOB_NAME: self.name}
            )
        return self._description

    def training_job_summaries(self, force_refresh: bool = False) -> list[dict[str, Any]]:
        """Every ListTrainingJobsForHyperParameterTuningJob summary, all pages (cached)."""
        if force_refresh:
            self.clear_cache()
        if self._summaries is not None:
            return self._summaries
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {HYPERPARAMETER_TUNING_JOB_NAME: self.name, "MaxResults": 100}
        while True:
            page = self._session.call("ListTrainingJobsForHyperParameterTuningJob", params)
            summaries = page.get("TrainingJobSummaries") or []
            out.extend(summaries)
            if not page.get("NextToken") or not summaries:
                break
            params = {**params, "NextToken": page["NextToken"]}
        self._summaries = out
        return out


_FIXED_COLUMNS = (
    "TrainingJobName",
    "TrainingJobStatus",
    "FinalObjectiveValue",
    "TrainingStartTime",
    "TrainingEndTime",
    "TrainingElapsedTimeSeconds",
)


def _as_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _elapsed(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    if isinstance(start, datetime.datetime) and isinstance(end, datetime.datetime):
        return (end - start).total_seconds()
    return float(end) - float(start)


class TrainingJobAnalytics(AnalyticsMetricsBase):
    """A training job's metrics over time as a pandas DataFrame (``sagemaker.analytics``): columns
    ``timestamp`` (seconds since the metric's first point), ``metric_name`` and ``value``, one row per
    point the algorithm reported, metric by metric. raymaker keeps every point (GetTrainingJobMetrics),
    so ``period`` (CloudWatch's aggregation in the SageMaker SDK) is accepted and has no effect."""

    def __init__(
        self,
        training_job_name: str,
        metric_names: list[str] | None = None,
        sagemaker_session: Session | None = None,
        start_time: datetime.datetime | None = None,
        end_time: datetime.datetime | None = None,
        period: int | None = None,
    ):
        self._session = sagemaker_session or Session()
        self._training_job_name = training_job_name
        self._metric_names = list(metric_names) if metric_names is not None else None
        self._start_time = start_time
        self._end_time = end_time
        self._period = period
        self._first_points: dict[str, datetime.datetime] = {}

    @property
    def name(self) -> str:
        return self._training_job_name

    def __repr__(self) -> str:
        return f"<raymaker.TrainingJobAnalytics for {self.name}>"

    def _fetch_dataframe(self) -> Any:
        import pandas as pd

        by_metric: dict[str, list[dict[str, Any]]] = {}
        self._first_points = {}
        if self._metric_names is None:
            for point in self._points(None):
                by_metric.setdefault(point["MetricName"], []).append(point)
        else:
            for metric_name in self._metric_names:
                by_metric[metric_name] = self._points(metric_name)
        data: dict[str, list[Any]] = {"timestamp": [], "metric_name": [], "value": []}
        for metric_name, points in by_metric.items():
            points = [p for p in points if self._in_interval(p["Timestamp"])]
            if not points:
                LOGGER.warning("Warning: No metrics called %s found", metric_name)
                continue
            base_time = min(p["Timestamp"] for p in points)
            self._first_points[metric_name] = base_time
            for p in points:
                data["timestamp"].append((p["Timestamp"] - base_time).total_seconds())
                data["metric_name"].append(metric_name)
                data["value"].append(p["Value"])
        return pd.DataFrame(data)

    def plot(self, filename: str | os.PathLike[str] | None = None) -> Figure:
        """The metrics as a matplotlib Figure: a panel per metric ("rmse") with a line per channel
        ("train:rmse", "validation:rmse"), against the time since the job's first metric point. With
        ``filename``, also written there as a PNG. ValueError while the job has no metrics."""
        from raymaker.sdk import plots

        df = self.dataframe()
        if df.empty:
            asked = f" called {', '.join(self._metric_names)}" if self._metric_names else ""
            when = " in the time asked for" if self._start_time or self._end_time else ""
            raise ValueError(
                f"training job {self.name} has no metrics{asked}{when} to plot yet: built-in algorithms "
                "report theirs as they train, a script's are the log lines its estimator's "
                "metric_definitions match"
            )
        # The DataFrame counts each metric from its own first point (as SageMaker's); one time axis
        # for all of them keeps train and validation points of the same moment at the same x.
        first = min(self._first_points.values(), default=None)
        if first is not None and set(df["metric_name"]) <= set(self._first_points):
            shift = {m: (t - first).total_seconds() for m, t in self._first_points.items()}
            df = df.assign(timestamp=df["timestamp"] + df["metric_name"].map(shift))
        fig = plots.training_curves(df, f"{self.name}: metrics")
        if filename is not None:
            plots.save_png(fig, filename)
        return fig

    def _points(self, metric_name: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"TrainingJobName": self.name}
        if metric_name is not None:
            params["MetricName"] = metric_name
        return list(self._session.call("GetTrainingJobMetrics", params)["Metrics"])

    def _in_interval(self, moment: datetime.datetime) -> bool:
        return (self._start_time is None or moment >= self._start_time) and (
            self._end_time is None or moment <= self._end_time
        )
