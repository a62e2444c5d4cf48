"""SageMaker's checkpoint sync for script mode (``CheckpointConfig``, the checkpoint row of
sagemaker-contract.md section 2.2): a local directory (``LocalPath``, default ``/opt/ml/checkpoints``)
mirrored file by file to an S3 prefix (``S3Uri``).

- At start, whatever is under the prefix is copied in (``restore``); objects added to S3 later are not.
- While the script runs, new or changed files (by size, mtime and inode, so a file replaced by a rename
  counts as changed) are uploaded every ``interval_s``, and files deleted locally are deleted from S3.
  Only objects this sync restored or uploaded are ever deleted: anything else under the prefix is left
  alone.
- At the end, one last sync (``stop(final=True)``).

Built-in algorithms checkpoint differently (``engine.worker.InstanceContext``: one archive object,
``raymaker-checkpoint.tar.gz``, replaced as a whole): they own their state's layout, while a script's
files are its own and SageMaker syncs them one by one. Both take ``s3://`` and ``file://`` URIs and the
same ``S3Settings``.

A file being written while a sync runs may be uploaded half-written; its size or mtime then differs at
the next sync, which uploads it again, and the final sync sees it complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from raymaker.io.storage import (
    LocalStorage,
    S3Settings,
    S3Storage,
    Storage,
    parse_uri,
    s3_errors,
    storage_for,
)

logger = logging.getLogger(__name__)

_Stat = tuple[int, int, int]  # size, mtime_ns, inode
# File times come from the kernel's coarse clock (one tick, up to 10 ms): a file rewritten with the same
# size within a tick of being recorded keeps its stat. Such "racy" records (git's term) also keep the
# content's hash, compared at the next sync.
RACY_NS = 20_000_000


class CheckpointSyncError(RuntimeError):
    """One or more files could not be synced; the message names each file and its URI."""


@dataclass
class SyncReport:
    uploaded: int = 0
    deleted: int = 0
    bytes_uploaded: int = 0


def delete_object(uri: str, settings: S3Settings | None = None) -> None:
    """Delete one object (``s3://``) or file (``file://`` / path); a missing one is not an error."""
    _delete(storage_for(uri, settings), uri)


def _delete(storage: Storage, uri: str) -> None:
    if isinstance(storage, S3Storage):
        u = parse_uri(uri)
        with s3_errors(uri):
            storage.client.delete_object(Bucket=u.bucket, Key=u.key)
    elif isinstance(storage, LocalStorage):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parse_uri(uri).path)
    else:
        raise NotImplementedError(f"deleting {uri}: {type(storage).__name__} cannot delete objects")


class CheckpointSync:
    """Mirror ``local_dir`` to ``s3_uri`` (a prefix: ``s3://bucket/job/checkpoints`` holds
    ``.../checkpoints/<relative path>``). ``with CheckpointSync(...) as sync:`` restores, starts the
    background sync, and stops with a final sync on the way out."""

    def __init__(
        self,
        local_dir: str | os.PathLike,
        s3_uri: str,
        settings: S3Settings | None = None,
        interval_s: float = 10.0,
        *,
        max_concurrency: int = 8,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.local_dir = os.path.abspath(os.fspath(local_dir))
        self.s3_uri = s3_uri
        self.interval_s = interval_s
        self.max_concurrency = max(1, max_concurrency)
        self._storage = storage_for(s3_uri, settings)
        u = parse_uri(s3_uri)
        # Objects are "<prefix>/<relative path>"; local destinations are plain paths (no URI quoting).
        self._local = u.scheme == "file"
        key = u.key.rstrip("/")
        self._prefix = u.path if self._local else f"s3://{u.bucket}/{key + '/' if key else ''}"
        self._synced: dict[str, _Stat] = {}  # relative path -> the local file's stat when last in sync
        self._racy: dict[str, str] = {}  # relative path -> content hash, for records within a tick of a write
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None  # the background thread's latest failure
        self.total = SyncReport()

    def uri_of(self, relative: str) -> str:
        if self._local:
            return os.path.join(self._prefix, *relative.split("/"))
        return self._prefix + relative

    # ---------------------------------------------------------------------------------- restore

    def restore(self) -> int:
        """Copy every object under the prefix into ``local_dir`` (overwriting local files of the same
        name); returns how many. Nothing under the prefix (or no prefix yet) is a fresh start: 0."""
        os.makedirs(self.local_dir, exist_ok=True)
        objects = self._storage.list(self._prefix, allow_empty=True)
        targets = []
        for obj in objects:
            dest = os.path.normpath(os.path.join(self.local_dir, obj.relative))
            if os.path.isabs(obj.relative) or not dest.startswith(self.local_dir + os.sep):
                raise CheckpointSyncError(
                    f"checkpoint {obj.uri} would be restored outside {self.local_dir} "
                    f"(relative path {obj.relative!r}); rename or delete the object"
                )
            targets.append((obj, dest))

        def fetch(obj, dest: str) -> None:
            try:
                self._storage.download(obj.uri, dest, size=obj.size, etag=obj.etag)
            except Exception as e:
                raise CheckpointSyncError(f"restoring checkpoint {obj.uri} to {dest}: {e}") from e

        with self._lock:
            if targets:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(targets))) as pool:
                    list(pool.map(lambda t: fetch(*t), targets))
            for obj, dest in targets:
                self._record(obj.relative, _stat(dest), time.time_ns())
        return len(targets)

    def _record(self, rel: str, st: _Stat, taken_ns: int) -> None:
        self._synced[rel] = st
        if st[1] + RACY_NS >= taken_ns:
            with contextlib.suppress(OSError):
                self._racy[rel] = _digest(os.path.join(self.local_dir, *rel.split("/")))
                return
        self._racy.pop(rel, None)

    def _changed(self, rel: str, st: _Stat, now_ns: int) -> bool:
        if self._synced.get(rel) != st:
            return True
        racy = self._racy.get(rel)
        if racy is None:
            return False
        try:
            same = _digest(os.path.join(self.local_dir, *rel.split("/"))) == racy
        except OSError:
            return True
        if same and st[1] + RACY_NS < now_ns:
            del self._racy[rel]  # no longer within a tick of its record: its stat tells from now on
        return not same

    # ------------------------------------------------------------------------------------- sync

    def sync_once(self) -> SyncReport:
        """Upload new and changed files, delete from S3 what was deleted here. Every file is tried;
        then CheckpointSyncError lists those that failed (they are retried at the next sync)."""
        with self._lock:
            scanned_ns = time.time_ns()
            current = self._scan()
            changed = [(rel, st) for rel, st in current.items() if self._changed(rel, st, scanned_ns)]
            gone = [rel for rel in self._synced if rel not in current]
            report = SyncReport()
            errors: list[str] = []

            def upload(rel: str) -> None:
                self._storage.upload(os.path.join(self.local_dir, *rel.split("/")), self.uri_of(rel))

            def delete(rel: str) -> None:
                _delete(self._storage, self.uri_of(rel))

            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                ups = [(rel, st, pool.submit(upload, rel)) for rel, st in changed]
                dels = [(rel, pool.submit(delete, rel)) for rel in gone]
                for rel, st, f in ups:
                    e = f.exception()
                    if e is None:
                        self._record(rel, st, scanned_ns)  # the stat before the upload: a later write shows
                        report.uploaded += 1
                        report.bytes_uploaded += st[0]
                    elif isinstance(e, FileNotFoundError) and not os.path.exists(
                        os.path.join(self.local_dir, *rel.split("/"))
                    ):
                        pass  # deleted while we looked: the next scan handles it
                    else:
                        errors.append(f"uploading {rel} to {self.uri_of(rel)}: {e}")
                for rel, f in dels:
                    e = f.exception()
                    if e is None:
                        del self._synced[rel]
                        self._racy.pop(rel, None)
                        report.deleted += 1
                    else:
                        errors.append(f"deleting {self.uri_of(rel)} ({rel} was deleted locally): {e}")
            self.total.uploaded += report.uploaded
            self.total.deleted += report.deleted
            self.total.bytes_uploaded += report.bytes_uploaded
            if errors:
                raise CheckpointSyncError("checkpoint sync failed: " + "; ".join(errors))
            return report

    def _scan(self) -> dict[str, _Stat]:
        out: dict[str, _Stat] = {}
        for dirpath, dirnames, filenames in os.walk(self.local_dir):
            dirnames.sort()
            for name in filenames:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.path.isfile(path):
                        out[os.path.relpath(path, self.local_dir).replace(os.sep, "/")] = _stat(path)
        return out

    # -------------------------------------------------------------------------------- lifecycle

    def start(self) -> CheckpointSync:
        if self._thread is not None:
            raise RuntimeError("CheckpointSync already started")
        os.makedirs(self.local_dir, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="checkpoint-sync", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync_once()
                self.last_error = None
            except Exception as e:  # retried at the next interval; the final sync raises
                self.last_error = e
                logger.warning("%s", e)

    def stop(self, final: bool = True) -> SyncReport | None:
        """Stop the background sync; with ``final``, one last sync (raising what it could not do)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.sync_once() if final else None

    def __enter__(self) -> CheckpointSync:
        self.restore()
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            self.stop(final=True)
            return
        try:  # the block failed: still save what it left, without hiding its error
            self.stop(final=True)
        except Exception as e:
            logger.warning("final checkpoint sync after a failure: %s", e)


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: str) -> _Stat:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)
