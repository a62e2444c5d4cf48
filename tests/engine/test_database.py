"""The job database's back ends and migrations: Alembic's head is the revision the store expects, a
SQLite file from before migrations is adopted with its records, concurrent openers of a new database
migrate it once, and a bad or unreachable database URL gets an error naming it (never its password)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from raymaker.engine import database
from raymaker.engine.database import HEAD_REVISION, MIGRATIONS
from raymaker.engine.store import JobStore, default_db_path
from tests.engine.helpers import training_request

# The schema raymaker wrote before migrations (PRAGMA user_version = 1), as it was released.
VERSION_1 = """
CREATE TABLE IF NOT EXISTS training_jobs (
    name                TEXT PRIMARY KEY COLLATE NOCASE,  -- SageMaker names are case-insensitive
    arn                 TEXT NOT NULL,
    request             TEXT NOT NULL,                    -- the CreateTrainingJob request, JSON
    status              TEXT NOT NULL,                    -- TrainingJobStatus
    secondary_status    TEXT NOT NULL,
    transitions         TEXT NOT NULL DEFAULT '[]',       -- SecondaryStatusTransitions, JSON
    failure_reason      TEXT,
    final_metrics       TEXT,                             -- FinalMetricDataList, JSON
    model_artifacts     TEXT,                             -- S3ModelArtifacts
    creation_time       REAL NOT NULL,
    training_start_time REAL,
    training_end_time   REAL,
    last_modified_time  REAL NOT NULL,
    training_seconds    INTEGER,                          -- wall clock (TrainingTimeInSeconds)
    billable_seconds    INTEGER,                          -- instance-seconds (instances x seconds)
    cost                REAL,
    attempt             INTEGER NOT NULL DEFAULT 1,       -- 1 = first run, RetryStrategy adds more
    restart_count       INTEGER NOT NULL DEFAULT 0,       -- worker restarts within the job
    warm_pool_status    TEXT,                             -- WarmPoolStatus, JSON
    tuning_job_arn      TEXT,
    runner_id           TEXT,                             -- which process runs it (orphan detection)
    heartbeat_time      REAL
);
CREATE INDEX IF NOT EXISTS training_jobs_status ON training_jobs(status, creation_time);
CREATE INDEX IF NOT EXISTS training_jobs_created ON training_jobs(creation_time);

CREATE TABLE IF NOT EXISTS metrics (
    job       TEXT NOT NULL COLLATE NOCASE,
    metric    TEXT NOT NULL,
    value     REAL NOT NULL,
    step      INTEGER,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job, metric, timestamp);

CREATE TABLE IF NOT EXISTS logs (
    job  TEXT NOT NULL COLLATE NOCASE,
    seq  INTEGER NOT NULL,                                -- 1, 2, ... per job
    time REAL NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job, seq)
);

CREATE TABLE IF NOT EXISTS audit_events (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           TEXT NOT NULL,
    event_time         REAL NOT NULL,
    event_name         TEXT NOT NULL,
    request_parameters TEXT,
    error_code         TEXT,
    error_message      TEXT,
    user_identity      TEXT,
    source_ip          TEXT,
    user_agent         TEXT,
    region             TEXT
);
CREATE INDEX IF NOT EXISTS audit_events_name ON audit_events(event_name, event_time);
"""


def test_the_store_expects_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_database_from_before_migrations_is_adopted_with_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(VERSION_1)
    old.execute(
        "INSERT INTO training_jobs (name, arn, request, status, secondary_status, creation_time, "
        "last_modified_time) VALUES ('Old-Job', 'arn:old', '{}', 'Completed', 'Completed', 1.0, 2.0)"
    )
    old.execute("INSERT INTO metrics (job, metric, value, step, timestamp) VALUES ('Old-Job', 'rmse', 0.5, 1, 1.5)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    store = JobStore(path)
    assert store.get_training_job("old-job")["status"] == "Completed"  # still case-insensitive
    assert store.metric_history("Old-Job") == [{"metric": "rmse", "value": 0.5, "step": 1, "timestamp": 1.5}]
    # The columns and tables added since work.
    store.record_api_call("DescribeTrainingJob", {"TrainingJobName": "Old-Job"}, caller="alice")
    assert store.audit_events(user="ALICE")[0]["resources"] == [{"ARN": "arn:aws:sagemaker:us-east-1:000000000000:training-job/old-job"}]
    store.set_owner("arn:old", "alice")
    assert store.owners(["arn:old"]) == {"arn:old": "alice"}
    conn = store.connection()
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    store.close()


def _open(location: str, barrier) -> None:
    barrier.wait()
    store = JobStore(location)
    store.create_training_job(training_request(TrainingJobName=f"job-{multiprocessing.current_process().pid}"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_openers_of_a_new_database_migrate_it_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location = (
        str(tmp_path / "new.db") if backend == "sqlite" else request.getfixturevalue("postgres_server").new_database()
    )
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: each runs the migration itself
    n = 4
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_open, args=(location, barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = JobStore(location)
    assert len(store.list_training_jobs()) == n
    assert store.connection().execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] == 1
    store.close()


def test_a_url_that_is_no_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="mysql://db/x.*RAYMAKER_DATABASE_URL"):
        JobStore("mysql://db/x")


def test_an_unreachable_server_is_named_without_its_password() -> None:
    with pytest.raises(ConnectionError) as info:
        JobStore("postgresql://someone:s3cret-pw@127.0.0.1:1/jobs")
    message = str(info.value)
    assert "postgresql://someone@127.0.0.1:1/jobs" in message and "s3cret-pw" not in message


def test_the_environment_chooses_the_database(
    monkeypatch: pytest.MonkeyPatch, postgres_server, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    monkeypatch.setenv(database.DATABASE_URL_ENV, url)
    store = JobStore()
    assert store.path is None and store.location == database._without_password(url)
    assert repr(store).find("raymaker-test") == -1  # the password stays out of reprs and logs
    store.create_training_job(training_request(TrainingJobName="pg-job"))
    assert JobStore(url).get_training_job("PG-JOB")["name"] == "pg-job"
    monkeypatch.delenv(database.DATABASE_URL_ENV)
    assert JobStore().path == default_db_path()  # without it: the SQLite file under RAYMAKER_HOME


def _audit_and_exit(location: str, n: int) -> None:
    store = JobStore(location)
    store.record_api_calls([{"event_name": "DescribeTrainingJob", "params": {"i": i}} for i in range(n)])
    # no close(): the process's exit hands over what is still queued


def test_postgresql_audit_rows_leave_the_call_path_and_all_arrive(postgres_server) -> None:
    """On PostgreSQL a call's audit row is inserted by a thread of its own: the rows arrive in order,
    are readable in the process that recorded them, survive the writer's connection being cut and a
    process that exits without closing its store."""
    url = postgres_server.new_database()
    store, other = JobStore(url), JobStore(url)
    for i in range(300):
        store.record_api_call("DescribeTrainingJob", {"TrainingJobName": f"j{i}"})
    assert [e["requestParameters"]["TrainingJobName"] for e in store.audit_events(limit=1000)] == [
        f"j{i}" for i in range(300)
    ]
    # The server ends the writer's connection (as a restart does): the next rows are retried.
    cut = other.connection().execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    assert cut
    store.db.drop_connection()  # this thread's was cut too
    for i in range(300, 310):
        store.record_api_call("DescribeTrainingJob", {"TrainingJobName": f"j{i}"})
    assert len(store.audit_events(limit=1000)) == 310
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_audit_and_exit, args=(url, 500))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert len(other.audit_events(limit=10_000)) == 810
    store.close()
    other.close()


def test_postgresql_audit_rows_that_cannot_be_made_are_logged_and_the_rest_arrive(postgres_server, caplog) -> None:
    """The appender thread makes the rows: one call it cannot make a row of (an error given as three
    parts) is logged by name, and the calls around it still arrive, with flush returning."""
    store = JobStore(postgres_server.new_database())
    store.record_api_call("DescribeTrainingJob", {"TrainingJobName": "before"})
    store.record_api_calls([{"event_name": "StopTrainingJob", "error": ("A", "B", "C")}])
    store.record_api_call("DescribeTrainingJob", {"TrainingJobName": "after"})
    store.db.flush(30)
    names = [e["requestParameters"]["TrainingJobName"] for e in store.audit_events(limit=10)]
    assert sorted(names) == ["after", "before"]
    assert "rows not made for INSERT INTO audit_events" in caplog.text
    store.close()
