from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from raymaker.engine.metering import billable_seconds, cost, running_seconds


def test_per_second_rounded_up_no_minimum() -> None:
    assert running_seconds(100.0, 160.0) == 60
    assert running_seconds(100.0, 160.2) == 61  # partial seconds round up
    assert running_seconds(0.1, 0.3) == 1  # ran at all: at least one second
    assert running_seconds(100.0, 100.0 + 2.0000001) == 2  # float noise does not bill a second
    assert running_seconds(100.0, 100.0) == 0 and running_seconds(100.0, 90.0) == 0
    assert running_seconds(None, 5.0) == 0 and running_seconds(5.0, None) == 0


def test_billable_is_instances_times_seconds() -> None:
    assert billable_seconds(3, 0.0, 10.5) == 33
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert billable_seconds(2, start, start + timedelta(minutes=5)) == 600
    assert billable_seconds(2, None, None) == 0


def test_cost() -> None:
    assert cost(3600, 0.23) == pytest.approx(0.23)
    assert cost(600, 0.115) == pytest.approx(0.115 / 6)
    assert cost(0, 1.0) == 0.0
