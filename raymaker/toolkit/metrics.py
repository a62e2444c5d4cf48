"""Metrics from a script's log, as SageMaker finds them (sagemaker-contract.md 2.10): each
MetricDefinition's regex is searched in every log line and its first capture group is the value.

SageMaker reads the lines after CloudWatch has stored them, and CloudWatch writes a TAB as ``#011``;
the built-in algorithms' regexes (XGBoost's ``.*\\[[0-9]+\\].*#011validation-error:(\\S+)``) depend on
that, while user regexes are usually written against the raw line. Each regex is therefore tried on the
escaped line first, then on the line as printed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

TAB_ESCAPE = "#011"


class MetricParser:
    """Feeds log lines, returns the metric values each line holds."""

    def __init__(self, definitions: Sequence[tuple[str, str]]):
        """``definitions``: (Name, Regex) pairs of AlgorithmSpecification.MetricDefinitions. A regex that
        does not compile, or has no capture group to take the value from, is refused here (ValueError
        naming the metric), not discovered as a silence in the middle of training."""
        self._metrics: list[tuple[str, re.Pattern[str]]] = []
        for name, regex in definitions:
            try:
                pattern = re.compile(regex)
            except re.error as e:
                raise ValueError(f"MetricDefinitions: metric {name!r} has an invalid Regex {regex!r}: {e}") from None
            if pattern.groups < 1:
                raise ValueError(
                    f"MetricDefinitions: metric {name!r} Regex {regex!r} has no capture group: put the value "
                    "in parentheses, e.g. 'loss: ([0-9.]+)'"
                )
            self._metrics.append((name, pattern))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._metrics]

    def feed(self, line: str) -> dict[str, float]:
        """The values in one log line: {metric name: value} for each regex that matches with a number.
        A capture that is not a number is skipped, as are NaN and infinities (CloudWatch stores only
        finite values)."""
        if not self._metrics:
            return {}
        escaped = line.replace("\t", TAB_ESCAPE)
        candidates = (escaped,) if escaped == line else (escaped, line)
        out: dict[str, float] = {}
        for name, pattern in self._metrics:
            for text in candidates:
                value = _number(pattern.search(text))
                if value is not None:
                    out[name] = value
                    break
        return out


def _number(m: re.Match[str] | None) -> float | None:
    if m is None or m.group(1) is None:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) else None
