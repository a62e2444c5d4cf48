"""``raymaker.sdk.backends``: the registry a ``Session`` picks its backend from, and the layering it
keeps (importing the SDK imports no engine, Serve, algorithms or Ray)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from raymaker.sdk import Session, backends
from tests.sdk.helpers import RecordingBackend


@pytest.fixture
def registered() -> Iterator[RecordingBackend]:
    backend = RecordingBackend(ListEndpoints={"Endpoints": []})
    backends.register_backend("recording-test", lambda: backend)
    try:
        yield backend
    finally:
        backends._FACTORIES.pop("recording-test", None)


def test_local_is_the_default_backend() -> None:
    assert backends.DEFAULT_BACKEND == "local" and "local" in backends.backend_names()


def test_session_by_name_and_by_env(registered: RecordingBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Session(backend="recording-test").backend is registered
    monkeypatch.setenv("RAYMAKER_BACKEND", "recording-test")
    session = Session()
    assert session.backend is registered
    assert session.call("ListEndpoints", {}) == {"Endpoints": []}


def test_unknown_backend_names_what_there_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYMAKER_BACKEND", "http-nope")
    with pytest.raises(
        ValueError,
        match=r"unknown raymaker backend 'http-nope' \(from RAYMAKER_BACKEND\): use one of .*local",
    ):
        Session()
    with pytest.raises(ValueError, match="register_backend"):
        Session(backend="also-nope")


def test_a_name_is_registered_once(registered: RecordingBackend) -> None:
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        backends.register_backend("recording-test", lambda: registered)
    backends.register_backend("recording-test", lambda: registered, replace=True)


def test_importing_the_sdk_imports_no_engine() -> None:
    code = (
        "import sys, raymaker, raymaker.sdk.tuner, raymaker.sdk.analytics, raymaker.sdk.waiter;"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'raymaker.engine',"
        " 'raymaker.serve', 'raymaker.algorithms')));"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
