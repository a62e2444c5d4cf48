"""Checkpoint sync as SageMaker does it for a script: restore at start, changes and deletions uploaded
while the script runs, a final sync at the end; against the real S3 test server and file://."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from raymaker.io.storage import storage_for
from raymaker.toolkit.checkpoints import CheckpointSync, CheckpointSyncError, delete_object


def s3_objects(s3_server, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in s3_server.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            try:
                body = s3_server.client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            except s3_server.client.exceptions.NoSuchKey:  # deleted by the sync since the listing
                continue
            out[obj["Key"][len(prefix) :]] = body
    return out


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def write(path, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_restore_then_changes_and_deletions_reach_s3_within_the_interval(s3_server, s3_bucket, tmp_path):
    s3 = storage_for(f"s3://{s3_bucket}")
    s3.put_bytes(f"s3://{s3_bucket}/job/checkpoints/epoch-1.pt", b"one")
    s3.put_bytes(f"s3://{s3_bucket}/job/checkpoints/sub/state.json", b'{"epoch": 1}')
    s3.put_bytes(f"s3://{s3_bucket}/job/checkpoints-old/stale.pt", b"a sibling prefix")
    local = tmp_path / "opt" / "ml" / "checkpoints"

    with CheckpointSync(local, f"s3://{s3_bucket}/job/checkpoints", interval_s=0.2) as sync:
        # What was in S3 at start is here; the sibling prefix is not.
        assert read(local / "epoch-1.pt") == b"one"
        assert read(local / "sub" / "state.json") == b'{"epoch": 1}'
        assert sorted(os.listdir(local)) == ["epoch-1.pt", "sub"]
        # Added to S3 after start: neither copied in nor deleted (it is not ours).
        s3.put_bytes(f"s3://{s3_bucket}/job/checkpoints/later.pt", b"someone else's")

        write(local / "epoch-2.pt", b"two")
        write(local / "sub" / "state.json", b'{"epoch": 2}')
        os.unlink(local / "epoch-1.pt")
        want = {"epoch-2.pt": b"two", "sub/state.json": b'{"epoch": 2}', "later.pt": b"someone else's"}
        started = time.monotonic()
        # While the script still runs: uploaded and deleted by the background thread.
        assert eventually(lambda: s3_objects(s3_server, s3_bucket, "job/checkpoints/") == want)
        assert time.monotonic() - started < 3
        assert sync.last_error is None
        assert not (local / "later.pt").exists()

        write(local / "final.pt", b"last words")  # written just before the end: at the latest, the final sync
    assert s3_objects(s3_server, s3_bucket, "job/checkpoints/")["final.pt"] == b"last words"
    assert sync.total.uploaded >= 3 and sync.total.deleted == 1
    assert s3_objects(s3_server, s3_bucket, "job/checkpoints-old/") == {"stale.pt": b"a sibling prefix"}


def test_unchanged_restored_files_are_not_uploaded_again(s3_bucket, tmp_path):
    s3 = storage_for(f"s3://{s3_bucket}")
    s3.put_bytes(f"s3://{s3_bucket}/c/model.pt", b"weights")
    sync = CheckpointSync(tmp_path / "ck", f"s3://{s3_bucket}/c/", interval_s=60)
    assert sync.restore() == 1
    report = sync.sync_once()
    assert (report.uploaded, report.deleted) == (0, 0)
    # A file replaced by a rename (same size, maybe same mtime) is a change.
    write(tmp_path / "tmp.pt", b"WEIGHTS")
    os.replace(tmp_path / "tmp.pt", tmp_path / "ck" / "model.pt")
    assert sync.sync_once().uploaded == 1
    assert s3.read_bytes(f"s3://{s3_bucket}/c/model.pt") == b"WEIGHTS"


def test_file_uri_checkpoints(tmp_path):
    remote = tmp_path / "remote" / "checkpoints"
    write(remote / "a.txt", b"a")
    write(remote / "deep" / "b.txt", b"b")
    local = tmp_path / "local"
    sync = CheckpointSync(str(local), remote.as_uri(), interval_s=0.1)
    assert sync.restore() == 2
    sync.start()
    os.unlink(local / "deep" / "b.txt")
    write(local / "c.txt", b"c")
    assert eventually(lambda: (remote / "c.txt").exists() and not (remote / "deep" / "b.txt").exists())
    sync.stop(final=True)
    assert read(remote / "a.txt") == b"a" and read(remote / "c.txt") == b"c"


def test_fresh_start_and_a_missing_bucket(s3_server, s3_bucket, tmp_path):
    sync = CheckpointSync(tmp_path / "new", f"s3://{s3_bucket}/none/yet", interval_s=60)
    assert sync.restore() == 0 and os.path.isdir(tmp_path / "new")
    write(tmp_path / "new" / "x", b"x")
    sync.start()
    sync.stop(final=True)  # nothing ran in the background (60 s): the final sync uploads it
    assert s3_objects(s3_server, s3_bucket, "none/yet/") == {"x": b"x"}

    gone = f"s3://rm-missing-{s3_bucket[-10:]}/ck"
    broken = CheckpointSync(tmp_path / "b", gone, interval_s=60)
    write(tmp_path / "b" / "model.pt", b"x")
    with pytest.raises(CheckpointSyncError, match=rf"uploading model.pt to {gone}/model.pt"):
        broken.sync_once()


def test_the_context_does_not_hide_the_scripts_error(s3_server, s3_bucket, tmp_path):
    with pytest.raises(RuntimeError, match="script failed"):
        with CheckpointSync(tmp_path / "ck", f"s3://{s3_bucket}/f", interval_s=60):
            write(tmp_path / "ck" / "partial.pt", b"p")
            raise RuntimeError("script failed")
    # Its checkpoints were still saved, for a retry to resume from.
    assert s3_objects(s3_server, s3_bucket, "f/") == {"partial.pt": b"p"}


def test_delete_object_is_idempotent(s3_server, s3_bucket, tmp_path):
    storage_for(f"s3://{s3_bucket}").put_bytes(f"s3://{s3_bucket}/d/x", b"x")
    delete_object(f"s3://{s3_bucket}/d/x")
    delete_object(f"s3://{s3_bucket}/d/x")
    assert s3_objects(s3_server, s3_bucket, "d/") == {}
    write(tmp_path / "f", b"f")
    delete_object(str(tmp_path / "f"))
    delete_object((tmp_path / "f").as_uri())
    assert not (tmp_path / "f").exists()


def test_a_same_size_rewrite_within_one_clock_tick_is_still_uploaded(s3_server, s3_bucket, tmp_path):
    """File times tick coarsely: a checkpoint rewritten with the same size right after it was synced
    can keep its size, inode and mtime. Its content decides then."""
    uri = f"s3://{s3_bucket}/racy/checkpoints"
    storage_for(uri).put_bytes(f"{uri}/state.json", b'{"epoch": 1}')
    local = tmp_path / "checkpoints"
    sync = CheckpointSync(local, uri)
    sync.restore()
    path = local / "state.json"
    before = os.stat(path)
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(b'{"epoch": 2}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns and os.stat(path).st_ino == before.st_ino
    assert sync.sync_once().uploaded == 1
    assert s3_objects(s3_server, s3_bucket, "racy/checkpoints/") == {"state.json": b'{"epoch": 2}'}
    assert sync.sync_once().uploaded == 0  # and only once
