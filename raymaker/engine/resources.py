"""Records of models, endpoint configs, endpoints and transform jobs, in the job database.

One table holds them all (``kind`` + ``name``, names case-insensitive as SageMaker's are): the
request as given, a status where the kind has one, a failure reason, timestamps, and ``state`` (JSON
the runner keeps, e.g. which Serve applications serve an endpoint now). Status moves go through
``resource_states`` in one transaction, so a stale writer gets a clear error instead of a lost update.
"""

from __future__ import annotations

import json
import time
from typing import Any

from raymaker.engine.arns import arn
from raymaker.engine.kinds import Kind
from raymaker.engine.resource_states import ACTIVE, check_transition
from raymaker.engine.store import CONTAINS, JobStore, contains_pattern
from raymaker.protocol.errors import ResourceInUse, ValidationError

_JSON = ("request", "state")


class ResourceStore:
    """Create / get / list / update / delete records of one database (shared with ``JobStore``)."""

    def __init__(self, store: JobStore):
        self.store = store

    def create(
        self, kind: str, name: str, request: dict[str, Any], status: str | None = None
    ) -> dict[str, Any]:
        now = time.time()
        row = {
            "kind": kind,
            "name": name,
            "arn": arn(kind, name),
            "request": json.dumps(request, default=str),
            "status": status,
            "creation_time": now,
            "last_modified_time": now,
        }
        try:
            with self.store.transaction() as c:
                c.execute(
                    f"INSERT INTO resources ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                    list(row.values()),
                )
        except self.store.db.integrity_error:
            raise ResourceInUse(
                f'Cannot create already existing {Kind(kind).noun} "{arn(kind, name)}": choose another name '
                f"or delete the existing {Kind(kind).noun} first"
            ) from None
        return self.get(kind, name)

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        row = (
            self.store.connection()
            .execute("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name))
            .fetchone()
        )
        return None if row is None else _decode(row)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The record, or SageMaker's not-found error for hosting resources: a ValidationException
        (boto3's waiters rely on that code)."""
        record = self.find(kind, name)
        if record is None:
            raise ValidationError(f'Could not find {Kind(kind).noun} "{arn(kind, name)}".')
        return record

    def list(
        self,
        kind: str,
        *,
        name_contains: str | None = None,
        status: str | None = None,
        sort_by: str = "CreationTime",
        sort_order: str = "Descending",
        max_results: int = 100,
    ) -> list[dict[str, Any]]:
        where, args = ["kind = ?"], [kind]
        if name_contains:
            where.append(CONTAINS)
            args.append(contains_pattern(name_contains))
        if status:
            where.append("status = ?")
            args.append(status)
        column = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}.get(
            sort_by, "creation_time"
        )
        order = "ASC" if sort_order == "Ascending" else "DESC"
        rows = (
            self.store.connection()
            .execute(
                f"SELECT * FROM resources WHERE {' AND '.join(where)} ORDER BY {column} {order} LIMIT ?",
                [*args, int(max_results)],
            )
            .fetchall()
        )
        return [_decode(r) for r in rows]

    def update(
        self,
        kind: str,
        name: str,
        *,
        status: str | None = None,
        expect: tuple[str, ...] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Set ``fields`` (failure_reason, state, request, start_time, end_time) and move to ``status``
        if given, checking the move against the kind's lifecycle (and that the status is one of
        ``expect``) in the same transaction."""
        now = time.time()
        with self.store.transaction() as c:
            row = c.execute("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if row is None:
                raise ValidationError(f'Could not find {Kind(kind).noun} "{arn(kind, name)}".')
            if expect is not None and row["status"] not in expect:
                raise ValidationError(
                    f"{Kind(kind).noun} {name!r} is {row['status']}, not {' or '.join(expect)}: "
                    "wait for it to settle and retry"
                )
            values = {"last_modified_time": now}
            if status is not None and status != row["status"]:
                check_transition(kind, name, row["status"], status)
                values["status"] = status
            for k, v in fields.items():
                values[k] = json.dumps(v, default=str) if k in _JSON else v
            sets = ", ".join(f"{k} = ?" for k in values)
            c.execute(
                f"UPDATE resources SET {sets} WHERE kind = ? AND name = ?", [*values.values(), kind, name]
            )
            row = c.execute("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return _decode(row)

    def next_number(self, kind: str, name: str, counter: str) -> int:
        """Atomically add one to the counter ``counter`` in the record's state and return it (1, 2, ...):
        parallel callers each get their own number."""
        with self.store.transaction() as c:
            row = c.execute("SELECT state FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if row is None:
                raise ValidationError(f'Could not find {Kind(kind).noun} "{arn(kind, name)}".')
            state = json.loads(row["state"])
            state[counter] = int(state.get(counter, 0)) + 1
            c.execute(
                "UPDATE resources SET state = ? WHERE kind = ? AND name = ?", (json.dumps(state), kind, name)
            )
        return state[counter]

    def active(self) -> list[dict[str, Any]]:
        """Every record whose status says its runner still has work to do (``resource_states.ACTIVE``):
        what a job service that starts must resume or end."""
        out = []
        for kind, statuses in ACTIVE.items():
            marks = ", ".join("?" for _ in statuses)
            rows = self.store.connection().execute(
                f"SELECT * FROM resources WHERE kind = ? AND status IN ({marks}) ORDER BY creation_time",
                [kind, *statuses],
            )
            out += [_decode(r) for r in rows]
        return out

    def delete(self, kind: str, name: str) -> None:
        with self.store.transaction() as c:
            n = c.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name)).rowcount
        if n == 0:
            raise ValidationError(f'Could not find {Kind(kind).noun} "{arn(kind, name)}".')


def _decode(row: Any) -> dict[str, Any]:
    record = dict(row)
    for k in _JSON:
        if record.get(k) is not None:
            record[k] = json.loads(record[k])
    return record
