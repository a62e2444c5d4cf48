"""The SDK's waits poll without sleeping in these tests: ``raymaker.sdk.waiter.sleep`` records the
pauses instead."""

from __future__ import annotations

import pytest

from raymaker.sdk import waiter


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the waiter asked for, in order (none is slept)."""
    pauses: list[float] = []
    monkeypatch.setattr(waiter, "sleep", pauses.append)
    return pauses
