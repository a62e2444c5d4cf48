"""Live progress for the SDK's waits: ``fit(logs=True)``, ``tuner.fit()``, ``deploy()``, ``transform()``
and the CLI commands on them show the same thing, from the same descriptions ``waiter.wait_for`` reads.

- In a terminal (the stream's ``isatty()``), a rich ``Live`` area under the streamed log lines: status,
  a bar and ``round 3/10`` when the total is known, the latest metrics, elapsed and remaining time.
- Anywhere else (pipes, CI, Ray job logs, notebooks), plain lines: one when the status changes, and a
  short progress line at most every ``PLAIN_INTERVAL`` seconds when something moved. No escapes.

A waiter opens ``watch(resource, session, name)`` and passes ``watch.on_describe`` to ``wait_for``; log
lines go through ``watch.line`` so they print above the live area. What a description means per kind:

- training job: the total steps from its hyperparameters (``STEP_COUNTERS``: xgboost's ``num_round``,
  linear-learner's and k-means' ``epochs``), the steps done and latest metrics from the metric rows'
  ``Step`` (raymaker's GetTrainingJobMetrics); remaining = elapsed x (total - done) / done, with
  elapsed counted from TrainingStartTime here (start-up is not a step);
- tuning job: trials ended / MaxNumberOfTrainingJobs, trials running, the best objective so far;
- transform job: status, elapsed, records transformed (raymaker's GetTransformJobProgress);
- endpoint: status and elapsed since the wait began (CreationTime is the endpoint's first creation,
  not this update's).

The extra calls (metrics, transform progress) are made every ``TERMINAL_FETCH`` s in a terminal and only
when a plain progress line is due elsewhere, and a caller not allowed them (an IAM policy on a server)
just sees less."""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

from raymaker.protocol.errors import SageMakerError
from raymaker.protocol.frameworks import image_repository
from raymaker.sdk.waiter import Caller, Resource

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

__all__ = ["STEP_COUNTERS", "Snapshot", "Watch", "watch"]

# Module-level so tests can drive the clocks (monkeypatch ``progress.monotonic`` / ``progress.utcnow``).
monotonic = time.monotonic


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


PLAIN_INTERVAL = 20.0  # seconds between plain progress lines: 3 a minute at most, not a flood
TERMINAL_FETCH = 2.0  # seconds between metric / progress calls behind a live display
TERMINAL_REFRESH = 0.2  # at most 5 redraws a second (endpoints and transforms are polled every 0.1 s)
MAX_METRICS = 4  # metrics shown; linear-learner reports a dozen per epoch

# Built-in algorithm -> (hyperparameter holding the total, unit, the first step's number). The
# algorithms number their metric steps differently: xgboost rounds and linear-learner epochs from 0,
# k-means epochs from 1 (raymaker/algorithms/*). PCA makes one pass and counts nothing.
STEP_COUNTERS: dict[str, tuple[str, str, int]] = {
    "xgboost": ("num_round", "round", 0),
    "linear-learner": ("epochs", "epoch", 0),
    "kmeans": ("epochs", "epoch", 1),
}
_IMAGE_ALGORITHMS = {"sagemaker-xgboost": "xgboost"}

_GOOD = {"Completed", "InService"}
_LABELS = {
    "DescribeTrainingJob": "Training job",
    "DescribeTransformJob": "Transform job",
    "DescribeHyperParameterTuningJob": "Tuning job",
    "DescribeEndpoint": "Endpoint",
}


@dataclass(frozen=True)
class Snapshot:
    """What a wait knows about its resource at one moment, whatever its kind."""

    status: str  # SecondaryStatus for a training job, else the resource's status
    ended: bool = False
    unit: str | None = None  # "round", "epoch", "trials"
    done: int | None = None
    total: int | None = None
    metrics: tuple[tuple[str, float], ...] = ()  # latest values, in the order shown
    more_metrics: int = 0  # how many further metrics were left out
    note: str | None = None  # "2 running", "1,200 records"
    started: datetime.datetime | None = None  # elapsed counts from here
    finished: datetime.datetime | None = None  # its end, once known: elapsed stops there
    steps_since: datetime.datetime | None = None  # when the counted steps began (for remaining)

    def progress_key(self) -> tuple[Any, ...]:
        """What changed since a line was printed, the clock aside."""
        return (self.status, self.done, self.total, self.metrics, self.note)

    def elapsed(self, now: datetime.datetime) -> float | None:
        if self.started is None:
            return None
        return max(0.0, ((self.finished or now) - self.started).total_seconds())

    def remaining(self, now: datetime.datetime) -> float | None:
        """elapsed x (total - done) / done, while some but not all steps are done."""
        if self.ended or not self.done or self.total is None or self.done >= self.total:
            return None
        since = self.steps_since or self.started
        if since is None:
            return None
        spent = max(0.0, (now - since).total_seconds())
        return spent * (self.total - self.done) / self.done

    def counts(self) -> list[str]:
        """``round 3/10``, ``trials 4/10``, and a note (``2 running``, ``1,200 records``)."""
        out = []
        if self.done is not None:
            of = f"/{self.total}" if self.total is not None else ""
            out.append(f"{self.unit} {self.done}{of}")
        if self.note:
            out.append(self.note)
        return out

    def metric_text(self) -> str:
        """``validation:auc 0.95 train:auc 0.97``, or "" when there are none yet."""
        shown = " ".join(f"{k} {_number(v)}" for k, v in self.metrics)
        return shown + (f" (+{self.more_metrics} more)" if self.more_metrics else "")

    def times(self, now: datetime.datetime) -> list[str]:
        """``elapsed 12s`` and, while it can be told, ``remaining 28s``."""
        out = []
        elapsed = self.elapsed(now)
        if elapsed is not None:
            out.append(f"elapsed {duration(elapsed)}")
        remaining = self.remaining(now)
        if remaining is not None:
            out.append(f"remaining {duration(remaining)}")
        return out

    def parts(self, now: datetime.datetime) -> list[str]:
        """Everything after the status, in the order both displays show it."""
        metrics = self.metric_text()
        return [*self.counts(), *([metrics] if metrics else []), *self.times(now)]


def duration(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h02m03s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def _number(v: float) -> str:
    return f"{v:.5g}"


def _when(moment: Any) -> datetime.datetime | None:
    """A Describe timestamp as an aware datetime: botocore's and the engine's are aware already."""
    if isinstance(moment, datetime.datetime):
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)
    if isinstance(moment, (int, float)):
        return datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return None


def _metric_order(name: str) -> tuple[int, str]:
    # validation metrics are what tuning and early stopping watch: show them first
    prefix = name.split(":", 1)[0]
    return ({"validation": 0, "train": 1, "test": 2}.get(prefix, 3), name)


def _latest_metrics(latest: Mapping[str, float]) -> tuple[tuple[tuple[str, float], ...], int]:
    names = sorted(latest, key=_metric_order)
    return tuple((n, latest[n]) for n in names[:MAX_METRICS]), max(0, len(names) - MAX_METRICS)


# --- descriptions -> snapshots ---------------------------------------------------------------------


def step_counter(desc: Mapping[str, Any]) -> tuple[str, int | None, int] | None:
    """(unit, total, first step's number) for a training job's description, or None when its steps are
    not counted (a script, a custom container, PCA)."""
    hyperparameters = desc.get("HyperParameters") or {}
    if "sagemaker_program" in hyperparameters:
        return None  # a script's metrics come from its log lines, without steps
    spec = desc.get("AlgorithmSpecification") or {}
    algorithm = spec.get("AlgorithmName")
    if not algorithm and spec.get("TrainingImage"):
        repo = image_repository(spec["TrainingImage"])
        algorithm = _IMAGE_ALGORITHMS.get(repo, repo) if repo else None
    counter = STEP_COUNTERS.get(algorithm or "")
    if counter is None:
        return None
    key, unit, first = counter
    try:
        total: int | None = int(str(hyperparameters[key]).strip('"'))
    except (KeyError, ValueError):
        total = None
    return unit, total, first


def training_snapshot(desc: Mapping[str, Any], metric_rows: list[Mapping[str, Any]] | None) -> Snapshot:
    """A training job from DescribeTrainingJob and its GetTrainingJobMetrics rows (None: not fetched)."""
    counter = step_counter(desc)
    latest: dict[str, tuple[int, float]] = {}  # name -> (step, value), the highest step's
    top: int | None = None
    for row in metric_rows or []:
        step = row.get("Step")
        rank = int(step) if step is not None else -1
        name = row["MetricName"]
        if name not in latest or rank >= latest[name][0]:
            latest[name] = (rank, float(row["Value"]))
        if step is not None:
            top = max(top if top is not None else int(step), int(step))
    values = {k: v for k, (_, v) in latest.items()}
    for m in desc.get("FinalMetricDataList") or []:  # the job's own last word
        values[m["MetricName"]] = float(m["Value"])
    metrics, more = _latest_metrics(values)
    unit = done = total = None
    if counter is not None:
        unit, total, first = counter
        if top is not None:
            done = top + 1 - first
            if total is not None:
                done = min(done, total)
    return Snapshot(
        status=desc.get("SecondaryStatus") or desc["TrainingJobStatus"],
        unit=unit,
        done=done,
        total=total,
        metrics=metrics,
        more_metrics=more,
        started=_when(desc.get("CreationTime")),
        finished=_when(desc.get("TrainingEndTime")),
        steps_since=_when(desc.get("TrainingStartTime")),
    )


def tuning_snapshot(desc: Mapping[str, Any]) -> Snapshot:
    """A tuning job: trials ended out of MaxNumberOfTrainingJobs, those running, the best objective."""
    counters = desc.get("TrainingJobStatusCounters") or {}
    running = int(counters.get("InProgress", 0))
    ended = sum(int(v) for k, v in counters.items() if k != "InProgress")
    limits = (desc.get("HyperParameterTuningJobConfig") or {}).get("ResourceLimits") or {}
    total = limits.get("MaxNumberOfTrainingJobs")
    best = (desc.get("BestTrainingJob") or {}).get("FinalHyperParameterTuningJobObjectiveMetric")
    metrics = ((f"best {best['MetricName']}", float(best["Value"])),) if best else ()
    return Snapshot(
        status=desc["HyperParameterTuningJobStatus"],
        unit="trials",
        done=ended,
        total=int(total) if total is not None else None,
        metrics=metrics,
        note=f"{running} running" if running else None,
        started=_when(desc.get("CreationTime")),
        finished=_when(desc.get("HyperParameterTuningEndTime")),
    )


def transform_snapshot(desc: Mapping[str, Any], progress: Mapping[str, Any] | None) -> Snapshot:
    """A transform job, with GetTransformJobProgress's counts when fetched."""
    note = None
    if progress is not None:
        records = int(progress.get("RecordsTransformed", 0))
        objects = int(progress.get("ObjectsWritten", 0))
        note = f"{records:,} records, {objects:,} objects written"
    return Snapshot(
        status=desc["TransformJobStatus"],
        note=note,
        started=_when(desc.get("CreationTime")),
        finished=_when(desc.get("TransformEndTime")),
    )


def endpoint_snapshot(desc: Mapping[str, Any], since: datetime.datetime) -> Snapshot:
    return Snapshot(status=desc["EndpointStatus"], started=since)


# --- the two displays ------------------------------------------------------------------------------


class _Plain:
    """Plain lines: the status when it changes (unless the caller prints its own, as a training job's
    SecondaryStatusTransitions), and a progress line at most every ``PLAIN_INTERVAL`` s when it moved."""

    terminal = False

    def __init__(self, title: str, out: TextIO, status_lines: bool):
        self.title = title
        self.out = out
        self.status_lines = status_lines
        self.last_status: str | None = None
        self.last_key: tuple[Any, ...] | None = None
        self.last_check = monotonic()  # the first progress line comes one interval in

    def due(self) -> bool:
        """Whether a progress line may be printed now (the caller fetches its extras only then)."""
        return monotonic() - self.last_check >= PLAIN_INTERVAL

    def show(self, snap: Snapshot) -> None:
        now = utcnow()
        if snap.status != self.last_status:
            self.last_status = snap.status
            if self.status_lines:
                self._print(snap, now)
                return
        if snap.ended or not self.due():
            return
        self.last_check = monotonic()  # checked: the next look is an interval away, printed or not
        if snap.progress_key() != self.last_key:
            self._print(snap, now)

    def _print(self, snap: Snapshot, now: datetime.datetime) -> None:
        self.line(" | ".join([f"{self.title}: {snap.status}", *snap.parts(now)]))
        self.last_key = snap.progress_key()
        self.last_check = monotonic()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def close(self) -> None:
        pass


class _LiveArea:
    """The rich renderable under the log lines; it reads the clock at each redraw, so elapsed moves."""

    BAR = 24  # the bar's widest

    def __init__(self, name: str):
        from rich.spinner import Spinner

        self.name = name
        self.snap: Snapshot | None = None
        self.spinner = Spinner("dots")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        snap = self.snap
        if snap is None:
            return
        # One line that never wraps, kept by priority (status, counts and times, name, bar) so a narrow
        # terminal loses the bar and the end of the name first; the metrics on a second line.
        if snap.ended:
            ok = snap.status in _GOOD
            head = Text.assemble(("✔" if ok else "✘", "bold green" if ok else "bold red"), " ")
        else:
            head = self.spinner.render(console.get_time()) + Text(" ")
        head.append(snap.status, style="bold cyan")
        core = " · ".join([*snap.counts(), *snap.times(utcnow())])
        tail = Text(core)
        name = f"{' · ' if core else ''}{self.name}"
        room = options.max_width - head.cell_len - 1 - tail.cell_len  # for the bar and the name
        bar = 0
        if snap.done is not None and snap.total:
            bar = min(self.BAR, room - 1 - min(len(name), 16))  # leave the name's start, at least
            bar = bar if bar >= 10 else 0
            room -= bar + 1 if bar else 0
        if room >= len(name):
            tail.append(name, style="dim")
        elif room > 4:
            tail.append(name[: room - 1] + "…", style="dim")
        grid = Table.grid(padding=(0, 1))
        cells: list[Any] = [head]
        if bar and snap.total:
            cells.append(ProgressBar(total=snap.total, completed=snap.done, width=bar))
        cells.append(tail)
        for _ in cells:
            grid.add_column(no_wrap=True)
        grid.add_row(*cells)
        yield grid
        metrics = snap.metric_text()
        if metrics:
            yield Text("  " + metrics, style="dim", no_wrap=True, overflow="ellipsis")


class _Terminal:
    """rich's Live area below the streamed lines, redrawn on each description."""

    terminal = True

    def __init__(self, name: str, console: Console):
        from rich.live import Live

        self.console = console
        self.area = _LiveArea(name)
        # Redrawn by us (no refresh thread): a wait describes at least once a second anyway.
        self.live: Live = Live(self.area, console=console, auto_refresh=False, transient=False)
        self.started = False
        self.last_draw = -1e9

    def due(self) -> bool:
        return True  # the caller's own throttle (TERMINAL_FETCH) decides

    def show(self, snap: Snapshot) -> None:
        self.area.snap = snap
        if not self.started:
            self.live.start()
            self.started = True
        if snap.ended or monotonic() - self.last_draw >= TERMINAL_REFRESH:
            self.live.refresh()
            self.last_draw = monotonic()

    def line(self, text: str) -> None:
        from rich.text import Text

        # Literal text (no markup, no highlighting), the terminal wraps it: log lines stay as written.
        self.console.print(Text(text), soft_wrap=True, highlight=False, markup=False, emoji=False)

    def close(self) -> None:
        if self.started:
            self.live.stop()  # its last redraw stays on screen
            self.started = False


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is an interactive terminal that can redraw (not a pipe, file, CI log, notebook,
    nor TERM=dumb)."""
    import os

    isatty = getattr(out, "isatty", None)
    try:
        tty = bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        tty = False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


# --- what the waiters use --------------------------------------------------------------------------


@dataclass
class Watch:
    """One wait's display. ``on_describe`` goes to ``wait_for``; ``line`` prints a log line (above the
    live area in a terminal); ``close`` (or leaving the ``with``) leaves the last state on screen."""

    snapshot: Callable[[dict[str, Any], dict[str, Any] | None], Snapshot]
    display: _Plain | _Terminal
    fetch: Callable[[], dict[str, Any]] | None = None  # the extra call (metrics, transform progress)
    ends: frozenset[str] = frozenset()
    status_key: str = ""
    extra: dict[str, Any] | None = None
    last_fetch: float = field(default=-1e9)

    @property
    def terminal(self) -> bool:
        return self.display.terminal

    def on_describe(self, desc: dict[str, Any]) -> None:
        ended = desc.get(self.status_key) in self.ends
        if self.fetch is not None and self._fetch_due(ended):
            try:
                self.extra = self.fetch()
            except SageMakerError:
                self.fetch = None  # not allowed or not there (an older server): show what Describe says
            self.last_fetch = monotonic()
        snap = replace(self.snapshot(desc, self.extra), ended=ended)
        self.display.show(snap)

    def _fetch_due(self, ended: bool) -> bool:
        if self.display.terminal:
            return ended or monotonic() - self.last_fetch >= TERMINAL_FETCH
        # Plain: only for a progress line about to be printed; the end is summed up by the caller.
        return not ended and self.display.due()

    def line(self, text: str) -> None:
        self.display.line(text)

    def close(self) -> None:
        self.display.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch(
    resource: Resource,
    session: Caller,
    name: str,
    *,
    out: TextIO | None = None,
    console: Console | None = None,
    status_lines: bool = True,
) -> Watch:
    """The display for waiting on ``name``: a live one when ``console`` is a terminal (tests inject a
    ``Console(force_terminal=True)``), or when ``console`` is None and ``out`` (default stdout) is a
    tty; plain lines otherwise. ``status_lines=False`` when the caller prints the status itself."""
    title = f"{_LABELS.get(resource.describe, resource.label)} {name}"
    display: _Plain | _Terminal
    if console is None:
        out = out or sys.stdout
        if is_terminal(out):
            from rich.console import Console

            console = Console(file=out, force_terminal=True, force_jupyter=False)
    if console is not None and console.is_terminal:
        display = _Terminal(name, console)
    else:
        display = _Plain(title, console.file if console is not None else out or sys.stdout, status_lines)

    snapshot: Callable[[dict[str, Any], dict[str, Any] | None], Snapshot]
    fetch: Callable[[], dict[str, Any]] | None = None
    if resource.describe == "DescribeTrainingJob":

        def snapshot(d: dict[str, Any], extra: dict[str, Any] | None) -> Snapshot:
            return training_snapshot(d, extra["Metrics"] if extra else None)

        def fetch() -> dict[str, Any]:
            return session.call("GetTrainingJobMetrics", {"TrainingJobName": name})

    elif resource.describe == "DescribeTransformJob":

        def snapshot(d: dict[str, Any], extra: dict[str, Any] | None) -> Snapshot:
            return transform_snapshot(d, extra)

        def fetch() -> dict[str, Any]:
            return session.call("GetTransformJobProgress", {"TransformJobName": name})

    elif resource.describe == "DescribeHyperParameterTuningJob":

        def snapshot(d: dict[str, Any], extra: dict[str, Any] | None) -> Snapshot:
            return tuning_snapshot(d)

    else:
        since = utcnow()

        def snapshot(d: dict[str, Any], extra: dict[str, Any] | None) -> Snapshot:
            return endpoint_snapshot(d, since)

    return Watch(snapshot, display, fetch, resource.ends, resource.status_key)
