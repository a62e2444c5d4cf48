from __future__ import annotations

import pytest

import raymaker.algorithms


@pytest.fixture
def fake_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test-local algorithms; also stand them in for xgboost (for TrainingImage tests)."""
    registry = dict(raymaker.algorithms._REGISTRY)
    registry.update(
        {
            "fake": "tests.engine.helpers:FakeAlgorithm",
            "fake-single": "tests.engine.helpers:SingleInstanceFake",
            "xgboost": "tests.engine.helpers:FakeAlgorithm",
        }
    )
    monkeypatch.setattr(raymaker.algorithms, "_REGISTRY", registry)
