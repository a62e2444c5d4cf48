from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from raymaker.algorithms import registered_algorithm
from tests.engine.helpers import FakeAlgorithm, SingleInstanceFake


@pytest.fixture
def fake_algorithms() -> Iterator[None]:
    """Register the test-local algorithms; also stand them in for xgboost (for TrainingImage tests)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(registered_algorithm(FakeAlgorithm))
        stack.enter_context(registered_algorithm(SingleInstanceFake))
        stack.enter_context(registered_algorithm(FakeAlgorithm, name="xgboost"))
        yield
