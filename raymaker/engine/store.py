"""Job records: training jobs, their metric history and log lines, a CloudTrail-style audit trail of
API calls, users, owners and the endpoints' meter. The database is ``$RAYMAKER_HOME/raymaker.db``
(``~/.raymaker`` by default, SQLite in WAL mode), or PostgreSQL for a shared service
(``RAYMAKER_DATABASE_URL``); ``database.py`` holds the two back ends and ``migrations/`` the schema.

Concurrency: one connection per thread (and per process: a forked child opens its own) and short write
transactions that exclude other writers, so API servers, drivers and runners may share one database.
Uniqueness of job names is the table's constraint, never a read-then-write check.

Records are plain dicts with snake_case keys; times are epoch seconds (UTC floats). The API shapes
built from them live beside their operations (``training_jobs.describe_training_job``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raymaker.engine import states
from raymaker.engine.arns import training_job_arn
from raymaker.engine.database import database_ident, database_location, open_database
from raymaker.engine.iam import resource_of
from raymaker.engine.kinds import Kind
from raymaker.protocol.environment import raymaker_home, region
from raymaker.protocol.errors import ConflictException, ResourceInUse, ResourceNotFound, SageMakerError

SERVICE_HEARTBEAT_S = 2.0  # how often the job service says it is alive
SERVICE_STALE_S = 15.0  # a heartbeat older than this: the service is gone
AUDIT_RETENTION_ENV = "RAYMAKER_AUDIT_RETENTION_DAYS"
DEFAULT_AUDIT_RETENTION_DAYS = 90.0  # CloudTrail's event history keeps 90 days

_JSON_FIELDS = ("request", "transitions", "final_metrics", "warm_pool_status")
# Columns update_training_job may set (name, arn and creation_time never change).
UPDATABLE_FIELDS = frozenset(
    {
        "request",
        "status",
        "secondary_status",
        "transitions",
        "failure_reason",
        "final_metrics",
        "model_artifacts",
        "training_start_time",
        "training_end_time",
        "last_modified_time",
        "training_seconds",
        "billable_seconds",
        "cost",
        "attempt",
        "restart_count",
        "warm_pool_status",
        "tuning_job_arn",
        "runner_id",
        "heartbeat_time",
    }
)


def default_db_path() -> Path:
    return raymaker_home() / "raymaker.db"


def service_name(store: JobStore | str | os.PathLike) -> str:
    """The Ray actor name of the job service of the database ``store`` (namespace "raymaker")."""
    return f"raymaker-job-service-{database_ident(store.location if isinstance(store, JobStore) else store)}"


def _not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Could not find training job {name!r}: check the TrainingJobName")


class JobStore:
    """The job database. Cheap to create; safe to share between threads; pickles as its location."""

    def __init__(self, location: str | os.PathLike | None = None):
        self.db = open_database(database_location(location, default_db_path()))
        self.location = self.db.location
        # SQLite: the file; PostgreSQL: None. Checkpoints and other local files go under ``home``.
        self.path: Path | None = getattr(self.db, "path", None)
        self.home = self.path.parent if self.path is not None else raymaker_home()
        self._audit_written = 0  # audit events this process wrote: old ones are pruned every 1000
        self.db.migrate()

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobStore, (self.url,))

    @property
    def url(self) -> str:
        """What opens this database again, elsewhere: the file's path, or the URL with its password."""
        return getattr(self.db, "url", self.location)

    def __repr__(self) -> str:
        return f"JobStore({self.location!r})"

    # --- connections ---------------------------------------------------------------------------

    def connection(self) -> Any:
        """This thread's connection, for reads (autocommit: each statement sees the latest commit)."""
        return self.db.connection()

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A short write transaction, the one way records change; no other writer runs meanwhile, so a
        read-then-write inside it never races."""
        return self.db.transaction()

    def close(self) -> None:
        """Close every thread's connection (the store reconnects if used again)."""
        self.db.close()

    # --- training jobs -------------------------------------------------------------------------

    def create_training_job(
        self,
        spec_or_request: Any,
        *,
        now: float | None = None,
        tuning_job_arn: str | None = None,
    ) -> dict[str, Any]:
        """Record a new job (InProgress / Starting) from a TrainingJobSpec or a CreateTrainingJob
        request dict; ResourceInUse if the name is taken."""
        request = getattr(spec_or_request, "request", spec_or_request)
        request = dict(request)
        name = request["TrainingJobName"]
        now = time.time() if now is None else now
        transitions = states.transition([], None, states.SecondaryStatus.STARTING, now=now)
        row = {
            "name": name,
            "arn": training_job_arn(name),
            "request": request,
            "status": str(states.TrainingJobStatus.IN_PROGRESS),
            "secondary_status": str(states.SecondaryStatus.STARTING),
            "transitions": transitions,
            "creation_time": now,
            "last_modified_time": now,
            "tuning_job_arn": tuning_job_arn,
        }
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self.transaction() as c:
                c.execute(f"INSERT INTO training_jobs ({cols}) VALUES ({marks})", _encode_values(row))
        except self.db.integrity_error:
            raise ResourceInUse(
                f"Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({training_job_arn(name)}): choose another TrainingJobName"
            ) from None
        return self.get_training_job(name)

    def get_training_job(self, name: str) -> dict[str, Any]:
        row = self.connection().execute("SELECT * FROM training_jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise _not_found(name)
        return decode_row(row)

    def update_training_job(
        self,
        name: str,
        /,
        *,
        expected_status: str | None = None,
        expected_secondary_status: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Set ``fields`` atomically and return the new record. ``last_modified_time`` is set to now
        unless given. With ``expected_status`` / ``expected_secondary_status`` the update only happens
        if the job is still in that state (compare-and-set), else ConflictException."""
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(UPDATABLE_FIELDS)}")
        fields.setdefault("last_modified_time", time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        where, args = "name = ?", [name]
        for column, expected in (
            ("status", expected_status),
            ("secondary_status", expected_secondary_status),
        ):
            if expected is not None:
                where += f" AND {column} = ?"
                args.append(str(expected))
        with self.transaction() as c:
            n = c.execute(f"UPDATE training_jobs SET {sets} WHERE {where}", [*_encode_values(fields), *args])
            row = c.execute("SELECT * FROM training_jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise _not_found(name)
        if n.rowcount == 0:
            raise ConflictException(
                f"training job {name!r} is {row['status']} ({row['secondary_status']}), not "
                f"{expected_status or expected_secondary_status}: it changed meanwhile; re-read it"
            )
        return decode_row(row)

    def transition_training_job(
        self,
        name: str,
        new: states.SecondaryStatus | str,
        message: str | None = None,
        /,
        *,
        now: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Move the job to SecondaryStatus ``new`` (TrainingJobStatus follows) in one transaction,
        appending to SecondaryStatusTransitions and setting ``fields`` too (e.g. failure_reason,
        training_end_time). IllegalTransition (a ValidationException) if the state machine forbids
        it, e.g. stopping a job that has ended."""
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(UPDATABLE_FIELDS)}")
        now = time.time() if now is None else now
        with self.transaction() as c:
            row = c.execute("SELECT * FROM training_jobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise _not_found(name)
            record = decode_row(row)
            transitions = states.transition(
                record["transitions"], record["secondary_status"], new, message, now=now
            )
            values = {
                "status": str(states.primary_status(new)),
                "secondary_status": str(states.SecondaryStatus(new)),
                "transitions": transitions,
                "last_modified_time": now,
                **fields,
            }
            sets = ", ".join(f"{k} = ?" for k in values)
            c.execute(f"UPDATE training_jobs SET {sets} WHERE name = ?", [*_encode_values(values), name])
            row = c.execute("SELECT * FROM training_jobs WHERE name = ?", (name,)).fetchone()
        return decode_row(row)

    def set_status_message(self, name: str, message: str) -> None:
        """Say what the job's current SecondaryStatus is doing (its open transition's StatusMessage),
        e.g. what resources it waits for."""
        with self.transaction() as c:
            row = c.execute("SELECT transitions FROM training_jobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise _not_found(name)
            transitions = json.loads(row["transitions"])
            if transitions:
                transitions[-1]["StatusMessage"] = message
                c.execute(
                    "UPDATE training_jobs SET transitions = ?, last_modified_time = ? WHERE name = ?",
                    (json.dumps(transitions), time.time(), name),
                )

    def list_training_jobs(
        self,
        status: str | None = None,
        name_contains: str | None = None,
        max_results: int = 100,
        *,
        creation_time_after: float | None = None,
        creation_time_before: float | None = None,
        sort_by: str = "CreationTime",
        sort_order: str = "Descending",
        tuning_job_arn: str | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs filtered as ListTrainingJobs filters them (StatusEquals, NameContains, case-insensitive;
        CreationTimeAfter/Before; the tuning job that launched them), sorted by CreationTime, Name or
        Status."""
        order_col = {"CreationTime": "creation_time", "Name": "name", "Status": "status"}.get(sort_by)
        if order_col is None or sort_order not in ("Ascending", "Descending"):
            raise ValueError(
                "sort_by must be CreationTime, Name or Status; sort_order Ascending or Descending"
            )
        where, args = ["1 = 1"], []
        if status is not None:
            where.append("status = ?")
            args.append(str(status))
        if name_contains:
            where.append(CONTAINS)
            args.append(contains_pattern(name_contains))
        if tuning_job_arn is not None:
            where.append("tuning_job_arn = ?")
            args.append(tuning_job_arn)
        if creation_time_after is not None:
            where.append("creation_time > ?")
            args.append(creation_time_after)
        if creation_time_before is not None:
            where.append("creation_time < ?")
            args.append(creation_time_before)
        direction = "DESC" if sort_order == "Descending" else "ASC"
        rows = self.connection().execute(
            f"SELECT * FROM training_jobs WHERE {' AND '.join(where)} "
            f"ORDER BY {order_col} {direction}, name {direction} LIMIT ?",
            [*args, int(max_results)],
        )
        return [decode_row(r) for r in rows]

    # --- metrics -------------------------------------------------------------------------------

    def add_metrics(self, name: str, rows: Iterable[Sequence[Any]]) -> int:
        """Append ``(metric, value[, step[, timestamp]])`` rows; returns how many were added."""
        now = time.time()
        values = []
        for r in rows:
            metric, value, step, ts = (*r, None, None)[:4]
            values.append((name, str(metric), float(value), step, now if ts is None else float(ts)))
        if values:
            self.db.append(
                "INSERT INTO metrics (job, metric, value, step, timestamp) VALUES (?, ?, ?, ?, ?)", values
            )
        return len(values)

    def metric_history(self, name: str, metric: str | None = None) -> list[dict[str, Any]]:
        """Every reported value, oldest first: ``{"metric", "value", "step", "timestamp"}``."""
        sql = "SELECT metric, value, step, timestamp FROM metrics WHERE job = ?"
        args: list[Any] = [name]
        if metric is not None:
            sql += " AND metric = ?"
            args.append(metric)
        rows = self.connection().execute(f"{sql} ORDER BY timestamp, {self.db.insertion_order}", args)
        return [dict(r) for r in rows]

    def latest_metrics(self, name: str) -> list[dict[str, Any]]:
        """The last value of each metric as FinalMetricDataList entries ``{MetricName, Value, Timestamp}``."""
        latest: dict[str, dict[str, Any]] = {}
        for m in self.metric_history(name):
            latest[m["metric"]] = {
                "MetricName": m["metric"],
                "Value": m["value"],
                "Timestamp": m["timestamp"],
            }
        return list(latest.values())

    # --- logs ----------------------------------------------------------------------------------

    def append_logs(self, name: str, lines: Iterable[str], *, now: float | None = None) -> int:
        """Append log lines (numbered 1, 2, ... per job); returns the last sequence number."""
        text = [str(line).rstrip("\r\n") for line in lines]
        now = time.time() if now is None else now
        with self.transaction() as c:
            last = c.execute("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job = ?", (name,)).fetchone()[0]
            c.executemany(
                "INSERT INTO logs (job, seq, time, line) VALUES (?, ?, ?, ?)",
                [(name, last + i, now, line) for i, line in enumerate(text, start=1)],
            )
        return last + len(text)

    def logs(self, name: str, after_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Log lines after ``after_seq`` (pass the last seq seen to tail): ``{"seq", "time", "line"}``."""
        sql = "SELECT seq, time, line FROM logs WHERE job = ? AND seq > ? ORDER BY seq"
        args: list[Any] = [name, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self.connection().execute(sql, args)
        return [dict(r) for r in rows]

    # --- audit ---------------------------------------------------------------------------------

    def record_api_call(
        self,
        event_name: str,
        params: Mapping[str, Any] | None,
        error: BaseException | tuple[str, str] | None = None,
        *,
        caller: str | Mapping[str, Any] | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
        request_id: str | None = None,
        now: float | None = None,
    ) -> str:
        """Record one API call, CloudTrail-style; returns its request id. ``error`` is the exception the
        call raised (its SageMaker code, else its class name) or a ``(code, message)`` pair. ``caller``
        defaults to the local OS user (the in-process backend); the API server passes its client.
        Events older than the retention (``RAYMAKER_AUDIT_RETENTION_DAYS``, default 90) are dropped
        now and then, so the trail does not grow without end. Credential-named request parameters are
        hidden (``redact``)."""
        request_id = request_id or str(uuid.uuid4())
        self.record_api_calls([dict(event_name=event_name, params=params, error=error, caller=caller,
                                    source_ip=source_ip, user_agent=user_agent, request_id=request_id, now=now)])
        return request_id

    def record_api_calls(self, calls: Iterable[Mapping[str, Any]]) -> int:
        """Several ``record_api_call``s (their keyword arguments as dicts) in one transaction: how endpoint
        replicas' invocation events arrive. Returns how many were written."""
        # The rows (JSON, ids) are made where they are inserted: PostgreSQL's appender thread, off the
        # call's path. What can change after the call is fixed now: its time.
        now = time.time()
        calls = [{**call, "now": now if call.get("now") is None else call["now"]} for call in calls]
        if not calls:
            return 0
        self.db.append_later(  # PostgreSQL: the round trip leaves the call's path (flushed on read)
            "INSERT INTO audit_events (event_id, event_time, event_name, request_parameters, "
            "error_code, error_message, user_identity, source_ip, user_agent, region, request_id, "
            "user_name, resource) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            lambda: [_audit_row(**call) for call in calls],
            len(calls),
        )
        written = self._audit_written
        self._audit_written += len(calls)
        if written // 1000 != self._audit_written // 1000:  # pruning is cheap, but not every call
            self.prune_audit_events()
        return len(calls)

    def prune_audit_events(self, *, now: float | None = None) -> int:
        """Drop events older than the retention; returns how many went."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            return c.execute(
                "DELETE FROM audit_events WHERE event_time < ?", (now - audit_retention_s(),)
            ).rowcount

    def audit_events(
        self,
        event_name: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        errors_only: bool = False,
        user: str | None = None,
        resource: str | None = None,
        after_id: int = 0,
        before_id: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Recorded calls, oldest first (or newest first, as CloudTrail answers), as CloudTrail records
        (eventTime ISO 8601 UTC, eventName, eventSource, requestParameters, errorCode, errorMessage,
        userIdentity, requestID, ...), each with its row number under ``"_id"`` for paging
        (``after_id`` / ``before_id``)."""
        # A resource: its ARN, or its name (ARNs hold names lower-cased).
        self.db.flush()  # what this process recorded is readable
        named = None if resource is None else "%/" + resource.lower().replace("%", "").replace("_", "")
        where, args = _where(
            ("id > ?", after_id),
            ("id < ?", before_id),
            ("event_name = ?", event_name),
            ("event_time >= ?", since),
            ("event_time <= ?", until),
            ("error_code IS NOT NULL", errors_only or None),
            ("user_name = ?" + self.db.nocase, user),
            ("(resource = ? OR resource LIKE ?)", None if resource is None else (resource, named)),
        )
        rows = self.connection().execute(
            f"SELECT * FROM audit_events WHERE {where} ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?",
            [*args, limit],
        )
        out = []
        for r in rows:
            event = {
                "_id": r["id"],
                "eventVersion": "1.08",
                "eventID": r["event_id"],
                "eventTime": datetime.fromtimestamp(r["event_time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "eventSource": "sagemaker.amazonaws.com",
                "eventName": r["event_name"],
                "awsRegion": r["region"],
                "userIdentity": json.loads(r["user_identity"]) if r["user_identity"] else None,
                "sourceIPAddress": r["source_ip"],
                "userAgent": r["user_agent"],
                "requestParameters": json.loads(r["request_parameters"]) if r["request_parameters"] else None,
                "requestID": r["request_id"],
                "eventType": "AwsApiCall",
            }
            if r["resource"]:
                event["resources"] = [{"ARN": r["resource"]}]
            if r["error_code"]:
                event["errorCode"] = r["error_code"]
                event["errorMessage"] = r["error_message"]
            out.append(event)
        return out

    # --- endpoints' meter ------------------------------------------------------------------------

    def meter_endpoint(
        self, endpoint: str, arn: str, variants: Sequence[tuple[str, str, int, float]], *,
        only: str | None = None, now: float | None = None,
    ) -> None:
        """From ``now`` on, bill the endpoint's variants as (variant, instance type, instance count,
        price per hour): what ran before is closed at ``now``. ``only``: change just that variant (an
        autoscaled one whose replica count moved). No variants: the endpoint stops being billed."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            closing = "UPDATE endpoint_meter SET end_time = ? WHERE endpoint = ? AND end_time IS NULL"
            args: list[Any] = [now, endpoint]
            if only is not None:
                closing += " AND variant = ?"
                args.append(only)
            c.execute(closing, args)
            c.executemany(
                "INSERT INTO endpoint_meter (endpoint, arn, variant, instance_type, instance_count, "
                "price_per_hour, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(endpoint, arn, v, t, n, p, now) for v, t, n, p in variants if only is None or v == only],
            )

    def meter_rows(
        self, arn: str | None = None, *, since: float | None = None, until: float | None = None,
        running_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Metered spans (all, one endpoint's, or those overlapping [since, until]; open ones end NULL)."""
        where, args = _where(
            ("arn = ?", arn),
            ("(end_time IS NULL OR end_time > ?)", since),
            ("start_time < ?", until),
            ("end_time IS NULL", running_only or None),
        )
        rows = self.connection().execute(f"SELECT * FROM endpoint_meter WHERE {where} ORDER BY id", args)
        return [dict(r) for r in rows]

    # --- owners ----------------------------------------------------------------------------------

    def set_owner(self, arn: str, user_name: str) -> None:
        """``user_name`` made the resource ``arn`` (a name made anew after a delete gets its new maker)."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO owners (arn, user_name) VALUES (?, ?) "
                "ON CONFLICT (arn) DO UPDATE SET user_name = excluded.user_name",
                (arn, user_name),
            )

    def owners(self, arns: Sequence[str]) -> dict[str, str]:
        """The makers of those of ``arns`` a server's user made (others: none recorded). A tuning job's
        trial belongs to the tuning job's maker. One query per 400 ARNs (a round trip on PostgreSQL)."""
        out: dict[str, str] = {}
        trial_of: dict[str, str] = {}  # a training job's maker comes from its tuning job if it has none
        for i in range(0, len(arns), 400):  # both IN lists stay under SQLite's 999 bound parameters
            chunk = list(arns[i : i + 400])
            names = {a.rpartition("/")[2]: a for a in chunk if ":training-job/" in a}
            sql = f"SELECT arn, user_name, 0 AS trial FROM owners WHERE arn IN ({', '.join('?' for _ in chunk)})"
            if names:
                sql += (
                    " UNION ALL SELECT t.name, o.user_name, 1 FROM training_jobs t JOIN owners o "
                    f"ON o.arn = t.tuning_job_arn WHERE t.name IN ({', '.join('?' for _ in names)})"
                )
            for r in self.connection().execute(sql, [*chunk, *names]):
                if r["trial"]:
                    trial_of[names[r["arn"].lower()]] = r["user_name"]
                else:
                    out[r["arn"]] = r["user_name"]
        return {**trial_of, **out}

    # --- job services --------------------------------------------------------------------------

    def service_heartbeat(self, service_id: str, *, pid: int | None = None, now: float | None = None) -> None:
        """The job service ``service_id`` is alive now (it writes this every few seconds)."""
        now = time.time() if now is None else now
        with self.transaction() as c:
            c.execute(
                "INSERT INTO services (id, pid, started_time, heartbeat_time) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET heartbeat_time = excluded.heartbeat_time",
                (service_id, pid, now, now),
            )

    def service_last_seen(self, service_id: str) -> float | None:
        """When the job service ``service_id`` last wrote its heartbeat (None: never)."""
        row = self.connection().execute(
            "SELECT heartbeat_time FROM services WHERE id = ?", (service_id,)
        ).fetchone()
        return None if row is None else float(row[0])

    def service_gone_message(self, stale_s: float = SERVICE_STALE_S) -> str | None:
        """If no job service has written its heartbeat for ``stale_s`` seconds, a sentence saying so,
        for the Describe of anything still in progress (None while one is alive)."""
        latest = self.latest_service()
        if latest is None or time.time() - latest["heartbeat_time"] <= stale_s:
            return None
        when = datetime.fromtimestamp(latest["heartbeat_time"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"raymaker's job service has not been heard from since {when} (its Ray cluster may have "
            "stopped): this resumes or ends when the service starts again, with the next raymaker call"
        )

    def latest_service(self) -> dict[str, Any] | None:
        """The job service that wrote a heartbeat last: ``{"id", "pid", "started_time", "heartbeat_time"}``."""
        row = self.connection().execute(
            "SELECT * FROM services ORDER BY heartbeat_time DESC LIMIT 1"
        ).fetchone()
        return None if row is None else dict(row)


def audit_retention_s() -> float:
    """How long audit events are kept: ``RAYMAKER_AUDIT_RETENTION_DAYS`` (default 90), in seconds."""
    text = os.environ.get(AUDIT_RETENTION_ENV) or str(DEFAULT_AUDIT_RETENTION_DAYS)
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"{AUDIT_RETENTION_ENV} must be a number of days, not {text!r}") from None
    return days * 86400.0


# Keys whose values are credentials (an Environment's AWS_SECRET_ACCESS_KEY, a hyperparameter's
# api_token, ...): CloudTrail writes such request parameters as "HIDDEN_DUE_TO_SECURITY_REASONS".
_SECRET_KEY = re.compile(r"secret|passw|token|credential|api[_-]?key|private[_-]?key|session[_-]?key", re.I)
_NOT_SECRET = frozenset({"NextToken", "AccessKeyId"})
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"


def redact(value: Any) -> Any:
    """``value`` with every credential-named key's value hidden, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: HIDDEN if isinstance(k, str) and k not in _NOT_SECRET and _SECRET_KEY.search(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _where(*clauses: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE text and its arguments from (clause, value) pairs, leaving out those whose value is None;
    a clause with no ``?`` takes a true value as "include", a tuple fills several ``?``."""
    parts, args = ["1 = 1"], []
    for clause, value in clauses:
        if value is None:
            continue
        parts.append(clause)
        if "?" in clause:
            args.extend(value if isinstance(value, tuple) else (value,))
    return " AND ".join(parts), args


def _audit_row(
    event_name: str,
    params: Mapping[str, Any] | None = None,
    error: BaseException | tuple[str, str] | None = None,
    caller: str | Mapping[str, Any] | None = None,
    source_ip: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    now: float | None = None,
) -> tuple[Any, ...]:
    if isinstance(error, SageMakerError):
        code, message = error.code, error.message
    elif isinstance(error, BaseException):
        code, message = type(error).__name__, str(error)
    elif error is not None:
        code, message = error
    else:
        code = message = None
    if caller is None:
        identity: Mapping[str, Any] = {"type": "LocalUser", "userName": _os_user()}
    elif isinstance(caller, str):
        identity = {"type": "IAMUser", "userName": caller}
    else:
        identity = caller
    return (
        str(uuid.uuid4()),
        time.time() if now is None else now,
        event_name,
        None if params is None else json.dumps(redact(params), default=str),
        code,
        message,
        json.dumps(identity, default=str),
        source_ip,
        user_agent,
        region(),
        request_id or str(uuid.uuid4()),
        identity.get("userName"),
        _resource_of(event_name, params),
    )


def _resource_of(event_name: str, params: Mapping[str, Any] | None) -> str | None:
    if not isinstance(params, Mapping):
        return None
    found = resource_of(event_name, params)
    return None if found == "*" else found


# ListX's NameContains: case-insensitive, the user's text taken literally (no LIKE wildcards).
CONTAINS = "lower(name) LIKE ? ESCAPE '\\'"


def contains_pattern(text: str) -> str:
    """The LIKE pattern of ``CONTAINS`` for names holding ``text``."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _encode_values(values: Mapping[str, Any]) -> list[Any]:
    return [
        (None if v is None else json.dumps(v, default=str)) if k in _JSON_FIELDS else v
        for k, v in values.items()
    ]


def decode_row(row: Any) -> dict[str, Any]:
    record = dict(row)
    for k in _JSON_FIELDS:
        if record.get(k) is not None:
            record[k] = json.loads(record[k])
    return record


def as_datetime(t: float | None) -> datetime | None:
    """A record's epoch seconds as the aware datetime boto3 returns (None stays None)."""
    return None if t is None else datetime.fromtimestamp(t, UTC)


def log_key(kind: str, name: str) -> str:
    """Where a resource's log lines are kept: a training job's under its name (its job log), any other
    resource's under ``<kind>/<name>``."""
    return name if kind == Kind.TRAINING_JOB else f"{kind}/{name}"
