"""The job database's two back ends behind one interface: SQLite, a file (the embedded default), and
PostgreSQL for a shared service (``RAYMAKER_DATABASE_URL=postgresql://user:pass@host/db``).

The store writes its SQL once, with ``?`` placeholders, and runs it on either: a back end hands out
this thread's connection (autocommit, for reads) and short write transactions that exclude every
other writer, as SQLite's ``BEGIN IMMEDIATE`` does (PostgreSQL: a transaction-scoped advisory lock),
so a read-then-write inside one never races another process. Rows answer by column name and index
on both. The few spellings that differ (case-insensitive comparison, the insertion order) are
attributes of the back end.

Schemas are Alembic migrations (``raymaker/engine/migrations``), run when a store opens a database
whose recorded revision is not the newest; opening an up-to-date one costs one query.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import multiprocessing.util
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

DATABASE_URL_ENV = "RAYMAKER_DATABASE_URL"
BUSY_TIMEOUT_S = 30.0
HEAD_REVISION = "0001"  # the newest migration; tests/engine/test_database.py keeps it true
MIGRATIONS = Path(__file__).with_name("migrations")
_WRITE_LOCK = 0x7261796D  # "raym": the advisory lock every PostgreSQL write transaction holds

logger = logging.getLogger(__name__)


class Row:
    """A result row readable as ``row["column"]``, ``row[0]`` and ``dict(row)`` (sqlite3.Row's API)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]):
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


class Database:
    """One job database. Subclasses: ``SQLiteDatabase`` and ``PostgresDatabase`` (``open_database``)."""

    location: str  # what identifies it: a file's path, or the URL
    integrity_error: type[Exception]  # what a unique key's violation raises
    insertion_order: str  # a column that orders rows as inserted
    nocase: str  # appended to a comparison with a column that is not case-insensitive itself

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._pid = os.getpid()

    def connection(self) -> Any:
        """This thread's connection, for reads (autocommit: each statement sees the latest commit)."""
        if os.getpid() != self._pid:  # forked: the parent's connections must not be used here
            self._local = threading.local()
            self._connections = []
            self._lock = threading.Lock()
            self._pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def drop_connection(self) -> None:
        """Close this thread's connection (a broken one): the next ``connection()`` opens another."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A short write transaction, the one way records change; no other writer runs meanwhile."""
        conn = self.connection()
        self._begin(conn)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def append(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` that no other writer's reads depend on (audit events, metric points): no
        exclusion is needed, only that each lands whole."""
        with self.transaction() as conn:
            conn.executemany(sql, rows)

    def append_later(self, sql: str, make_rows: Callable[[], Sequence[Sequence[Any]]], count: int) -> None:
        """``append`` of the ``count`` rows ``make_rows`` gives, off the caller's path where the insert
        costs a round trip (PostgreSQL: one thread makes and inserts them shortly after, in order);
        ``flush`` waits for them. SQLite makes and appends them now."""
        self.append(sql, make_rows())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every row this process handed to ``append_later`` is in the database."""

    def close(self) -> None:
        """Close every thread's connection (the database reconnects if used again)."""
        self.flush()
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def migrate(self) -> None:
        """Bring the schema to the newest revision, unless it is there already."""
        conn = self.connection()  # an unreachable database says so here
        with contextlib.suppress(Exception):  # no such table yet: a new database
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if row is not None and row[0] == HEAD_REVISION:
                return
        self._migrate()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _migrate(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """A file in WAL mode: readers never block the writer, and records survive restarts."""

    integrity_error = sqlite3.IntegrityError
    insertion_order = "rowid"
    nocase = " COLLATE NOCASE"

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # journal_mode=WAL is persistent in the file; setting it again is a no-op. Switching a new file
        # needs it to itself, and SQLite answers "locked" at once, without its busy timeout, while other
        # processes open it too: wait for them as the busy timeout would.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.connection().execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode (isolation_level=None): transactions are the explicit BEGINs.
        # check_same_thread=False only so close() may close every thread's connection.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
        return conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE takes the write lock up front, so two writers never both read and then deadlock
        # upgrading.
        conn.execute("BEGIN IMMEDIATE")

    def _migrate(self) -> None:
        import sqlalchemy as sa

        # SQLAlchemy's own recipe for transactional DDL on SQLite: the driver leaves transactions to
        # us, and BEGIN IMMEDIATE makes concurrent openers of a new file migrate one at a time.
        engine = sa.create_engine(
            f"sqlite:///{self.path}",
            poolclass=sa.pool.NullPool,
            connect_args={"timeout": BUSY_TIMEOUT_S, "isolation_level": None},
        )
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        _upgrade(engine)


class PostgresDatabase(Database):
    """A PostgreSQL database, for several service processes (or hosts) sharing one job database.
    Names are ``citext`` (case-insensitive as SageMaker's are); times double precision."""

    insertion_order = "id"
    nocase = ""  # the columns compared case-insensitively are citext

    def __init__(self, url: str):
        import psycopg

        super().__init__()
        self.url = url
        self.location = _without_password(url)
        self.integrity_error = psycopg.IntegrityError
        self._psycopg = psycopg
        self._appender: _Appender | None = None

    def _connect(self) -> _PostgresConnection:
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, row_factory=_rows)
        except self._psycopg.OperationalError as e:
            raise ConnectionError(
                f"cannot connect to the job database {self.location} ({DATABASE_URL_ENV}): {e}".strip()
            ) from None
        return _PostgresConnection(conn)

    def _begin(self, conn: _PostgresConnection) -> None:
        conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_WRITE_LOCK})")  # one round trip

    def append(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # Autocommit: each row its own statement, psycopg pipelines them (one round trip), and no
        # writer waits for the lock behind an audit event.
        self.connection().executemany(sql, rows)

    def append_later(self, sql: str, make_rows: Callable[[], Sequence[Sequence[Any]]], count: int) -> None:
        if self._appender is None or self._appender.pid != os.getpid():  # none yet, or forked
            with self._lock:
                if self._appender is None or self._appender.pid != os.getpid():
                    self._appender = _Appender(self)
        self._appender.put(sql, make_rows, count)

    def flush(self, timeout: float = 30.0) -> None:
        if self._appender is not None and self._appender.pid == os.getpid():
            self._appender.flush(timeout)

    def _migrate(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(
            re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", self.url), poolclass=sa.pool.NullPool
        )

        def locked(conn: Any) -> None:  # concurrent openers of a new database migrate one at a time
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")

        _upgrade(engine, before=locked)


class _Appender:
    """Rows handed over by any thread, inserted in order by one thread of its own (its own connection):
    the audit row of a call leaves the call's path, as CloudTrail delivers events after the call.
    ``flush`` waits for what was handed over before it; the process flushes at exit. A lost connection
    is retried until the database answers again; a row the database refuses is logged and skipped, so
    one bad row cannot hold back the rest."""

    MAX_PENDING = 50_000  # rows handed over and not yet inserted: more waits (memory stays bounded)

    def __init__(self, db: PostgresDatabase):
        self.db, self.pid = db, os.getpid()
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Callable[[], Sequence[Sequence[Any]]], int]] = []
        self._queued = self._written = 0  # rows, counted alike, so flush knows what it waits for
        self.last_error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True, name="raymaker-db-appender").start()
        # At exit, also of a multiprocessing child (which skips atexit): multiprocessing's own hook.
        multiprocessing.util.Finalize(self, self._flush_at_exit, exitpriority=10)

    def put(self, sql: str, make_rows: Callable[[], Sequence[Sequence[Any]]], count: int) -> None:
        """``count`` rows, made by ``make_rows`` in this thread (their JSON and ids cost the caller
        nothing), then inserted."""
        with self._cond:
            while self._queued - self._written > self.MAX_PENDING:
                self._cond.wait(1.0)
            self._pending.append((sql, make_rows, count))
            self._queued += count
            self._cond.notify_all()

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{target - self._written} rows not yet written to the job database {self.db.location} "
                        f"after {timeout:g} s (last error: {self.last_error!r})"
                    )
                self._cond.wait(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                # No waiting for more rows: inserted at once, a call's row mostly goes in while its
                # caller reads the answer and the server is idle.
                batch, self._pending = self._pending, []
            merged: list[tuple[str, list[Sequence[Any]]]] = []
            for sql, make_rows, _ in batch:  # consecutive rows of one statement: one executemany
                try:
                    rows = list(make_rows())
                except Exception:  # a row that cannot be made: say so, and insert the others
                    logger.exception("job database %s: rows not made for %s", self.db.location, sql[:40])
                    continue
                if merged and merged[-1][0] == sql:
                    merged[-1][1].extend(rows)
                else:
                    merged.append((sql, rows))
            for sql, rows in merged:
                self._insert(sql, rows)
            with self._cond:
                self._written += sum(count for _, _, count in batch)
                self._cond.notify_all()

    def _insert(self, sql: str, rows: list[Sequence[Any]]) -> None:
        psycopg = self.db._psycopg
        while True:
            try:
                self.db.connection().executemany(sql, rows)  # autocommit: pipelined, one round trip
                return
            except psycopg.OperationalError as e:  # the server went away: reconnect and retry
                self.last_error = e
                logger.warning("job database %s: %s; retrying the audit rows in 1 s", self.db.location, e)
                self.db.drop_connection()
                time.sleep(1.0)
            except psycopg.Error as e:  # a row it refuses: the others still go in
                self.last_error = e
                for row in rows:
                    try:
                        self.db.connection().executemany(sql, [row])
                    except psycopg.Error as refused:
                        logger.error("job database %s refused a row (%s): %r", self.db.location, refused, row[:3])
                return

    def _flush_at_exit(self) -> None:
        if os.getpid() == self.pid:
            try:
                self.flush(10.0)
            except Exception as e:  # noqa: BLE001 - exiting: say what is lost
                logger.error("%s", e)


class _PostgresConnection:
    """A psycopg connection that takes the store's ``?`` placeholders."""

    def __init__(self, conn: Any):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        # No parameters: the simple protocol, which also takes several statements in one round trip.
        return self._conn.execute(_pg_sql(sql) if params else sql, params or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cur = self._conn.cursor()
        cur.executemany(_pg_sql(sql), rows)
        return cur

    def close(self) -> None:
        self._conn.close()


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    # No "?" sits inside a literal in the store's SQL; a literal "%" must be doubled for psycopg.
    return sql.replace("%", "%%").replace("?", "%s")


def _rows(cursor: Any) -> Any:
    # The result's column names, as psycopg's own dict_row reads them (cursor.description would build
    # a Column object per column per query: a tenth of a millisecond for a job's row).
    res = cursor.pgresult
    names = [res.fname(i).decode() for i in range(res.nfields)] if res is not None else []
    index = {name: i for i, name in enumerate(names)}
    return lambda values: Row(values, index)


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1@", url)


def _upgrade(engine: Any, before: Any = None) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if before is not None:
                before(conn)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def database_ident(location: str | os.PathLike) -> str:
    """A short stable name for the database at ``location``, without opening it (the Ray actor name of
    its job service holds it): one file is one database whatever path names it."""
    text = str(location)
    if re.match(r"^postgres(ql)?://", text):
        key = _without_password(text)
    else:
        key = os.path.realpath(text.removeprefix("sqlite:///"))
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def database_location(location: str | os.PathLike | None, default: Path) -> str | os.PathLike:
    """Where the job database is: ``location`` if given, else ``RAYMAKER_DATABASE_URL``, else ``default``."""
    if location is not None:
        return location
    return os.environ.get(DATABASE_URL_ENV) or default


def open_database(location: str | os.PathLike) -> Database:
    """The back end for ``location``: a ``postgresql://`` URL, a ``sqlite:///path`` URL or a file path."""
    text = str(location)
    if re.match(r"^postgres(ql)?://", text):
        return PostgresDatabase(text)
    if text.startswith("sqlite:///"):
        return SQLiteDatabase(text.removeprefix("sqlite:///"))
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        raise ValueError(
            f"the job database must be a postgresql:// URL, a sqlite:/// URL or a file path, not {text!r} "
            f"(check {DATABASE_URL_ENV})"
        )
    return SQLiteDatabase(text)
