from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from raymaker.algorithms import registered_algorithm
from raymaker.engine.store import JobStore
from tests.engine.helpers import FakeAlgorithm, SingleInstanceFake


@pytest.fixture
def fake_algorithms() -> Iterator[None]:
    """Register the test-local algorithms; also stand them in for xgboost (for TrainingImage tests)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(registered_algorithm(FakeAlgorithm))
        stack.enter_context(registered_algorithm(SingleInstanceFake))
        stack.enter_context(registered_algorithm(FakeAlgorithm, name="xgboost"))
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A new job database on each back end: a SQLite file, and a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        store = JobStore(tmp_path / "jobs.db")
    else:
        store = JobStore(request.getfixturevalue("postgres_server").new_database())
    yield store
    store.close()
