"""Charts as inline SVG, drawn here in Python: no JavaScript library, nothing to fetch, and the same
picture every time for the same numbers (screenshot tests compare what they see).

Only SVG presentation attributes, never ``style=``: the console's Content-Security-Policy allows no
inline styles."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'

LEFT, RIGHT, TOP, BOTTOM = 64, 16, 44, 42  # room for the y labels, the title and legend, the x labels


@dataclass
class Series:
    """One line of a chart. ``style``: "line" (joined points, each marked), "points" (marks only) or
    "step" (a value that holds until the next one: a best-so-far)."""

    name: str
    points: Sequence[tuple[float, float]]
    style: str = "line"
    colour: str = field(default="")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def time_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round clock times (every 1 s ... 1 day) covering [low, high] (seconds since the epoch)."""
    if high <= low:
        low, high = low - 30, high + 30
    raw = (high - low) / max(count, 1)
    step = next((s for s in _TIME_STEPS if s >= raw), _TIME_STEPS[-1])
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 2)]


def number(value: float) -> str:
    """A value as a chart labels it: 4 significant digits, no trailing noise."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick's label with as many decimals as the ticks' spacing needs, so neighbours never read the same."""
    step = min((b - a for a, b in zip(ticks, ticks[1:]) if b > a), default=0.0)
    if step <= 0 or abs(value) >= 1e5:
        return number(value)
    decimals = min(max(0, -math.floor(math.log10(step) + 1e-9)), 9)
    return f"{value:.{decimals}f}"


def clock(epoch: float, span: float) -> str:
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 * 2 else "%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(epoch))


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str = "",
    x_time: bool = False,
    x_integer: bool = False,
    width: int = 560,
    height: int = 240,
    empty: str = "No data yet",
) -> Markup:
    """An SVG chart of ``series`` on shared axes. ``x_time``: x values are seconds since the epoch,
    labelled as UTC clock times; ``x_integer``: x values are counts (steps, trials), ticked at whole
    numbers only."""
    series = [Series(s.name, [(float(x), float(y)) for x, y in s.points if math.isfinite(y)], s.style,
                     s.colour or COLOURS[i % len(COLOURS)]) for i, s in enumerate(series)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text class="chart-title" x="{LEFT}" y="18" {FONT} font-size="13" font-weight="bold" '
           f'fill="#222">{escape(title)}</text>']
    points = [p for s in series for p in s.points]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    if not points:
        out.append(f'<text x="{width / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" {FONT} font-size="12" '
                   f'fill="#777">{escape(empty)}</text></svg>')
        return Markup("".join(out))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks = time_ticks(min(xs), max(xs)) if x_time else nice_ticks(min(xs), max(xs))
    if x_integer:
        x_ticks = sorted({float(round(t)) for t in x_ticks})
    y_ticks = nice_ticks(min(ys), max(ys))
    # x spans the data (a time axis or a run of steps has no use for room past its ends); y gets round ends.
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (x_ticks[0], x_ticks[-1])
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    x_ticks = [t for t in x_ticks if x0 <= t <= x1]
    y_ticks = [t for t in y_ticks if y0 <= t <= y1]

    def sx(x: float) -> float:
        return round(LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w, 1)

    def sy(y: float) -> float:
        return round(TOP + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h, 1)

    for t in y_ticks:  # grid and y labels
        out.append(f'<line x1="{LEFT}" y1="{sy(t)}" x2="{LEFT + plot_w}" y2="{sy(t)}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 6}" y="{sy(t) + 4}" text-anchor="end" {FONT} font-size="10" '
                   f'fill="#555">{tick_label(t, y_ticks)}</text>')
    for t in x_ticks:
        label = clock(t, x1 - x0) if x_time else tick_label(t, x_ticks)
        out.append(f'<line x1="{sx(t)}" y1="{TOP + plot_h}" x2="{sx(t)}" y2="{TOP + plot_h + 4}" stroke="#999"/>'
                   f'<text x="{sx(t)}" y="{TOP + plot_h + 16}" text-anchor="middle" {FONT} font-size="10" '
                   f'fill="#555">{escape(label)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{height - 6}" text-anchor="middle" {FONT} font-size="11" '
               f'fill="#333">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" {FONT} font-size="11" fill="#333" '
                   f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}</text>')
    legend_x = LEFT
    for s in series:  # the legend, in a row under the title
        out.append(f'<rect x="{legend_x}" y="26" width="10" height="10" fill="{s.colour}"/>'
                   f'<text x="{legend_x + 14}" y="35" {FONT} font-size="11" fill="#333">{escape(s.name)}</text>')
        legend_x += 24 + 7 * len(s.name)
    for s in series:
        out.append(f'<g class="series" data-series="{escape(s.name)}" data-points="{len(s.points)}">')
        ordered = sorted(s.points)
        if s.style in ("line", "step") and len(ordered) > 1:
            path = ordered
            if s.style == "step":  # hold each value until the next point
                path = [p for a, b in zip(ordered, ordered[1:]) for p in (a, (b[0], a[1]))] + [ordered[-1]]
            coords = " ".join(f"{sx(x)},{sy(y)}" for x, y in path)
            out.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        if s.style != "step" or len(ordered) == 1:
            radius = 3 if len(ordered) <= 30 else 1.5  # marks stay readable on a dense line
            for x, y in ordered if len(ordered) <= 400 else ():
                tip = f"{s.name}: {number(y)} at {clock(x, 0) + ' UTC' if x_time else number(x)}"
                out.append(f'<circle cx="{sx(x)}" cy="{sy(y)}" r="{radius}" fill="{s.colour}"><title>{escape(tip)}'
                           "</title></circle>")
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))
