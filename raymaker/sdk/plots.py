"""Plots of job results, drawn from the DataFrames of ``raymaker.sdk.analytics`` with matplotlib's
object API on the Agg canvas (never pyplot, whose global state a library must not touch):

- ``training_curves``: a training job's metrics over time, one panel per metric ("rmse") with one line
  per channel ("train:rmse", "validation:rmse"), each channel in the same colour on every panel;
- ``tuning_trials``: a tuning job's objective per trial with the best so far, and the objective
  against each tuned hyperparameter, the best trial starred.

Both return a ``matplotlib.figure.Figure`` of a fixed size in pixels; ``save_png`` writes it.
``TrainingJobAnalytics.plot`` and ``HyperparameterTuningJobAnalytics.plot`` are the usual way in."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = [
    "BEST_COLOR",
    "BEST_SO_FAR_COLOR",
    "DPI",
    "NO_OBJECTIVE_COLOR",
    "TRIAL_COLOR",
    "channel_colors",
    "save_png",
    "split_metric",
    "training_curves",
    "tuning_trials",
]

DPI = 100
# Matplotlib's default cycle; the usual channels keep their colour from one job's plot to the next.
PALETTE = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
KNOWN_CHANNELS = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}
TRIAL_COLOR = "tab:blue"
BEST_SO_FAR_COLOR = "tab:orange"
BEST_COLOR = "tab:red"
NO_OBJECTIVE_COLOR = "tab:gray"

# Panel sizes in inches (at DPI), so a plot's size in pixels follows from its number of panels.
CURVE_PANEL = (5.5, 3.6)
CURVE_COLUMNS = 2
TITLE_HEIGHT = 0.5
TRIALS_WIDTH = 12.0
TRIALS_TOP_HEIGHT = 3.8
TRIALS_ROW_HEIGHT = 3.2
TRIALS_COLUMNS = 3
MARKERS_UP_TO = 60  # points per line; more and markers would hide the curve
MINUTES_FROM = 600.0  # seconds: a longer time axis reads better in minutes


def split_metric(metric_name: str) -> tuple[str, str]:
    """("train", "rmse") for "train:rmse"; ("", "loss") for a name without a channel."""
    channel, sep, base = metric_name.partition(":")
    return (channel, base) if sep and base else ("", metric_name)


def channel_colors(channels: Sequence[str]) -> dict[str, str]:
    """A colour per channel: train, validation and test always their own, the rest in order."""
    colors = {c: KNOWN_CHANNELS[c] for c in channels if c in KNOWN_CHANNELS}
    free = [c for c in PALETTE if c not in colors.values()]
    for channel in channels:
        if channel not in colors:
            colors[channel] = free[len(colors) % len(free)] if free else PALETTE[len(colors) % len(PALETTE)]
    return colors


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: PNGs with no display and no pyplot
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Write the figure as a PNG of its own size in pixels (no tight cropping); returns the path."""
    fig.savefig(os.fspath(path), format="png", dpi=fig.dpi)
    return os.fspath(path)


# --- training curves -------------------------------------------------------------------------------


def training_curves(df: Any, title: str) -> Figure:
    """A training job's metrics from ``TrainingJobAnalytics.dataframe()`` (columns ``timestamp`` in
    seconds, ``metric_name``, ``value``): a panel per metric base name, a line per channel. The figure
    is ``5.5 x cols`` by ``3.6 x rows + 0.5`` inches at 100 dpi, two panels a row."""
    if df is None or len(df) == 0:
        raise ValueError(f"{title}: no metric points to plot")
    df = df[np.isfinite(df["value"].astype(float))]
    if len(df) == 0:
        raise ValueError(f"{title}: every metric value is NaN or infinite, nothing to plot")
    metrics = list(dict.fromkeys(df["metric_name"]))
    bases: dict[str, list[tuple[str, str]]] = {}
    for metric in metrics:
        channel, base = split_metric(metric)
        bases.setdefault(base, []).append((channel, metric))
    colors = channel_colors(list(dict.fromkeys(split_metric(m)[0] for m in metrics)))

    span = float(df["timestamp"].max())
    in_minutes = span >= MINUTES_FROM
    scale = 60.0 if in_minutes else 1.0
    x_label = f"{'minutes' if in_minutes else 'seconds'} since the first metric"

    cols = min(len(bases), CURVE_COLUMNS)
    rows = math.ceil(len(bases) / cols)
    fig = _new_figure(CURVE_PANEL[0] * cols, CURVE_PANEL[1] * rows + TITLE_HEIGHT)
    fig.suptitle(title, fontsize="large")
    grid = fig.add_gridspec(rows, cols)
    for i, (base, lines) in enumerate(bases.items()):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        for channel, metric in lines:
            points = df[df["metric_name"] == metric].sort_values("timestamp")
            ax.plot(
                points["timestamp"].to_numpy(dtype=float) / scale,
                points["value"].to_numpy(dtype=float),
                color=colors[channel],
                label=channel or metric,
                marker="o" if len(points) <= MARKERS_UP_TO else None,
                markersize=4,
                linewidth=1.8,
            )
        ax.set_title(base)
        ax.set_xlabel(x_label)
        ax.set_ylabel(base)
        ax.grid(True, alpha=0.3)
        if any(channel for channel, _ in lines):
            ax.legend(title="channel", fontsize="small")
    return fig


# --- tuning trials ---------------------------------------------------------------------------------


def _best_so_far(values: np.ndarray, maximize: bool) -> np.ndarray:
    """The best objective up to each trial (NaN before the first one with an objective)."""
    out = np.full(len(values), np.nan)
    best = np.nan
    for i, v in enumerate(values):
        if not np.isnan(v) and (np.isnan(best) or (v > best if maximize else v < best)):
            best = v
        out[i] = best
    return out


def tuning_trials(
    df: Any,
    title: str,
    objective_metric: str,
    objective_type: str,
    parameter_ranges: Mapping[str, Sequence[Mapping[str, Any]]],
) -> Figure:
    """A tuning job's trials from ``HyperparameterTuningJobAnalytics.dataframe()``: on top the
    objective of each trial in the order they started with the best so far; below, the objective
    against each tuned hyperparameter (``parameter_ranges``: the tuning job's ParameterRanges, SageMaker's
    ``{"IntegerParameterRanges": [...], ...}``; a Logarithmic range on a log axis, a Categorical one by
    its values). Trials without an objective (failed,
    stopped, still running) are grey crosses along the bottom of the top panel. The figure is 12 inches
    wide, ``3.8 + 3.2 x rows`` high at 100 dpi, three hyperparameters a row."""
    if df is None or len(df) == 0:
        raise ValueError(f"{title}: no trials to plot")
    maximize = objective_type != "Minimize"
    start = df["TrainingStartTime"] if "TrainingStartTime" in df else None
    order = df.assign(_start=start).sort_values(["_start", "TrainingJobName"], na_position="last")
    objective = order["FinalObjectiveValue"].to_numpy(dtype=float)
    scored = ~np.isnan(objective)
    if not scored.any():
        raise ValueError(f"{title}: no trial has reported its objective ({objective_metric}) yet")
    trial = np.arange(1, len(order) + 1)
    best_index = int(np.nanargmax(objective) if maximize else np.nanargmin(objective))
    best_value = objective[best_index]
    best_name = order["TrainingJobName"].iloc[best_index]

    ranges = {spec["Name"]: (kind, spec) for kind, specs in parameter_ranges.items() for spec in specs or ()}
    hyperparameters = [name for name in ranges if name in order.columns]
    cols = max(1, min(len(hyperparameters), TRIALS_COLUMNS))
    rows = math.ceil(len(hyperparameters) / cols)
    fig = _new_figure(TRIALS_WIDTH, TRIALS_TOP_HEIGHT + TRIALS_ROW_HEIGHT * rows)
    fig.suptitle(
        f"{title}: {int(scored.sum())} of {len(order)} trials with an objective; "
        f"best {objective_metric} = {best_value:.4g} ({best_name})",
        fontsize="large",
    )
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[TRIALS_TOP_HEIGHT] + [TRIALS_ROW_HEIGHT] * rows)
    y_label = f"{objective_metric} ({'higher' if maximize else 'lower'} is better)"

    ax = fig.add_subplot(grid[0, :])
    ax.step(
        trial,
        _best_so_far(objective, maximize),
        where="post",
        color=BEST_SO_FAR_COLOR,
        linewidth=2,
        label="best so far",
        zorder=2,
    )
    ax.scatter(trial[scored], objective[scored], color=TRIAL_COLOR, s=36, label="trial", zorder=3)
    ax.scatter(
        [trial[best_index]], [best_value], color=BEST_COLOR, marker="*", s=220, label="best trial", zorder=4
    )
    if (~scored).any():
        # At the bottom edge whatever the objective's scale: these trials have no value to place.
        ax.scatter(
            trial[~scored],
            np.full((~scored).sum(), 0.03),
            transform=ax.get_xaxis_transform(),
            color=NO_OBJECTIVE_COLOR,
            marker="x",
            s=40,
            label="no objective",
            zorder=3,
        )
    ax.margins(x=0.03, y=0.1)  # room for the star
    ax.set_title("objective per trial")
    ax.set_xlabel("trial (in the order they started)")
    ax.set_ylabel(y_label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: hides no trial

    for i, name in enumerate(hyperparameters):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        kind, spec = ranges[name]
        _hyperparameter_panel(ax, name, kind, spec, order[name], objective, best_index, objective_metric)
    return fig


def _hyperparameter_panel(
    ax: Any,
    name: str,
    kind: str,
    spec: Mapping[str, Any],
    values: Any,
    objective: np.ndarray,
    best_index: int,
    y_label: str,
) -> None:
    present = values.notna().to_numpy() & ~np.isnan(objective)
    if kind == "CategoricalParameterRanges":  # one x position per value, in the range's order
        categories = [str(v) for v in spec["Values"]]
        categories += sorted({str(v) for v in values[present]} - set(categories))
        x = np.array(
            [categories.index(str(v)) if ok else np.nan for v, ok in zip(values, present, strict=True)]
        )
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    else:
        x = values.to_numpy(dtype=float)
        if spec.get("ScalingType") == "Logarithmic" and present.any() and (x[present] > 0).all():
            ax.set_xscale("log")
            # Plain numbers (0.01, 0.02, 0.05, 0.1 within two decades, powers of ten beyond): a short
            # range would otherwise label its minor ticks in overlapping powers of ten.
            decades = np.log10(x[present].max() / x[present].min())
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if kind == "IntegerParameterRanges":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.scatter(x[present], objective[present], color=TRIAL_COLOR, s=36, zorder=3)
    if present[best_index]:
        ax.scatter([x[best_index]], [objective[best_index]], color=BEST_COLOR, marker="*", s=220, zorder=4)
    ax.margins(x=0.08, y=0.1)  # room for the star
    scaling = spec.get("ScalingType")
    ax.set_title(name + (f" ({scaling} scaling)" if scaling and scaling != "Auto" else ""))
    ax.set_xlabel(name)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
