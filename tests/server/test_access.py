"""``access.Owners``: resources' makers as the API's checks read them, remembered briefly so a
Describe costs no ownership query, and read afresh after this process changes the resource."""

from __future__ import annotations

from pathlib import Path

from raymaker.engine.store import JobStore
from raymaker.server.access import Owners


class CountingStore:
    def __init__(self, store: JobStore):
        self.store, self.queries = store, 0

    def owners(self, arns):
        self.queries += 1
        return self.store.owners(arns)


def test_makers_are_remembered_for_their_ttl_and_forgotten_on_change(tmp_path: Path, monkeypatch) -> None:
    store = JobStore(str(tmp_path / "j.db"))
    store.set_owner("arn:a", "alice")
    counting = CountingStore(store)
    clock = [100.0]
    monkeypatch.setattr("raymaker.server.access.time.monotonic", lambda: clock[0])
    owners = Owners(counting, ttl_s=2.0)  # type: ignore[arg-type]
    assert owners(["arn:a", "arn:none"]) == {"arn:a": "alice"}
    assert owners(["arn:a", "arn:none"]) == {"arn:a": "alice"} and counting.queries == 1  # both remembered
    store.set_owner("arn:a", "bob")  # remade by another user, elsewhere: seen within the ttl
    clock[0] += 1.9
    assert owners(["arn:a"]) == {"arn:a": "alice"} and counting.queries == 1
    clock[0] += 0.2
    assert owners(["arn:a"]) == {"arn:a": "bob"} and counting.queries == 2
    store.set_owner("arn:none", "carol")  # made through this server: forgotten, so read at once
    owners.forget("arn:none")
    assert owners(["arn:none", "arn:a"]) == {"arn:none": "carol", "arn:a": "bob"} and counting.queries == 3
