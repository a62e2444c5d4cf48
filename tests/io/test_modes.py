"""Input modes against the real S3 server and local dirs: File (with cache), FastFile, Pipe FIFOs."""

from __future__ import annotations

import gzip
import io
import os
import struct
import threading
import time

import pytest

from raymaker.io.channels import Channel, list_objects
from raymaker.io.modes import FastFileChannel, PipeFifoWriter, download_channel
from raymaker.io.modes.fifo import recordio_frame
from raymaker.io.storage import storage_for


def put(bucket: str, files: dict[str, bytes]) -> None:
    s = storage_for(f"s3://{bucket}")
    for key, data in files.items():
        s.put_bytes(f"s3://{bucket}/{key}", data)


def read_fifo(path: str, *, limit: int | None = None, timeout: float = 10.0) -> bytes:
    """Read a FIFO like a training container: wait for it to appear, read to EOF (or ``limit``)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)
    with open(path, "rb") as f:
        return f.read(limit) if limit is not None else f.read()


def read_in_thread(path: str, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["data"] = read_fifo(path, **kwargs)
        except BaseException as e:  # reported by the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ----------------------------------------------------------------------------------------- File


def test_file_mode_downloads_then_hits_the_cache(s3_bucket, tmp_path):
    files = {
        "train/a.csv": b"1,2\n",
        "train/sub/b.csv": b"3,4\n" * 100,
        "train/c.csv.gz": gzip.compress(b"5,6\n"),
    }
    put(s3_bucket, files)
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/train/", compression="Gzip")
    cache = tmp_path / "cache"

    first = download_channel(c, tmp_path / "run1", cache_dir=cache)
    assert (first.objects, first.cache_hits, first.bytes_from_cache) == (3, 0, 0)
    assert first.bytes_downloaded == sum(len(v) for v in files.values())
    assert sorted(first.files) == ["a.csv", "c.csv.gz", "sub/b.csv"]
    for key, data in files.items():
        # As stored: SageMaker only decompresses Gzip channels in Pipe mode.
        assert (tmp_path / "run1" / key.removeprefix("train/")).read_bytes() == data

    second = download_channel(c, tmp_path / "run2", cache_dir=cache)
    assert second.bytes_downloaded == 0 and second.cache_hits == 3
    assert second.bytes_from_cache == first.bytes_downloaded
    assert (tmp_path / "run2" / "sub" / "b.csv").read_bytes() == files["train/sub/b.csv"]

    put(s3_bucket, {"train/a.csv": b"changed\n"})  # new ETag: only this object is fetched again
    third = download_channel(c, tmp_path / "run3", cache_dir=cache)
    assert (third.bytes_downloaded, third.cache_hits) == (8, 2)
    assert (tmp_path / "run3" / "a.csv").read_bytes() == b"changed\n"


def test_file_mode_default_cache_is_under_raymaker_home(s3_bucket, tmp_path, raymaker_home):
    put(s3_bucket, {"d/x": b"x"})
    c = Channel(name="d", s3_uri=f"s3://{s3_bucket}/d/")
    download_channel(c, tmp_path / "one")
    assert download_channel(c, tmp_path / "two").cache_hits == 1
    assert os.listdir(os.path.join(raymaker_home, "cache", "objects"))


def test_file_mode_sharded_across_two_workers(s3_bucket, tmp_path):
    put(s3_bucket, {f"s/part-{i}": bytes([i]) * (i + 1) for i in range(5)})
    c = Channel(name="s", s3_uri=f"s3://{s3_bucket}/s/", distribution="ShardedByS3Key")
    objects = list_objects(c)
    reports = [
        download_channel(
            c, tmp_path / f"w{r}", num_workers=2, rank=r, cache_dir=tmp_path / "cache", objects=objects
        )
        for r in range(2)
    ]
    got = [set(os.listdir(tmp_path / f"w{r}")) for r in range(2)]
    assert not got[0] & got[1] and got[0] | got[1] == {f"part-{i}" for i in range(5)}
    assert [r.objects for r in reports] == [3, 2]
    idle = download_channel(c, tmp_path / "w9", num_workers=9, rank=8, objects=objects)
    assert idle.objects == 0 and os.listdir(tmp_path / "w9") == []


def test_file_mode_local_channel_and_unsafe_keys(s3_bucket, tmp_path):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "nested" / "f.txt").write_bytes(b"local")
    report = download_channel(
        Channel(name="l", s3_uri=str(src)), tmp_path / "dst", cache_dir=tmp_path / "cache"
    )
    assert (tmp_path / "dst" / "nested" / "f.txt").read_bytes() == b"local"
    assert report.bytes_downloaded == 5 and not (tmp_path / "cache").exists()  # local data is not cached

    put(s3_bucket, {"evil/../../escape.txt": b"x"})
    with pytest.raises(ValueError, match="would be written outside the channel directory"):
        download_channel(
            Channel(name="e", s3_uri=f"s3://{s3_bucket}/evil/"), tmp_path / "e", cache_dir=tmp_path / "c"
        )


# ------------------------------------------------------------------------------------- FastFile


def test_fastfile_reads_only_the_ranges_touched(s3_bucket):
    data = os.urandom(4 << 20)
    put(s3_bucket, {"ff/big.bin": data, "ff/small.txt": b"small"})
    ff = FastFileChannel(
        Channel(name="ff", s3_uri=f"s3://{s3_bucket}/ff/", input_mode="FastFile"), block_size=64 << 10
    )
    assert ff.files == ["big.bin", "small.txt"] and ff.size("big.bin") == len(data)
    with ff.open("big.bin") as f:
        f.seek(3 << 20)
        assert f.read(100) == data[3 << 20 : (3 << 20) + 100]
        fetched = f.cache.total_requested_bytes  # bytes actually requested from S3 by this file
        assert 0 < fetched <= (64 << 10) + 100, fetched
        f.seek(10)
        assert f.read(10) == data[10:20]
    with ff.open("small.txt") as f:
        assert f.read() == b"small"
    with pytest.raises(FileNotFoundError, match="has no file 'nope'"):
        ff.open("nope")


def test_fastfile_sharding_and_local(s3_bucket, tmp_path):
    put(s3_bucket, {f"ff/{i}": b"x" for i in range(4)})
    c = Channel(
        name="ff", s3_uri=f"s3://{s3_bucket}/ff/", distribution="ShardedByS3Key", input_mode="FastFile"
    )
    a, b = (FastFileChannel(c, num_workers=2, rank=r).files for r in range(2))
    assert not set(a) & set(b) and sorted(a + b) == ["0", "1", "2", "3"]
    (tmp_path / "l.txt").write_bytes(b"0123456789")
    local = FastFileChannel(Channel(name="l", s3_uri=str(tmp_path)))
    with local.open("l.txt") as f:
        f.seek(5)
        assert f.read(2) == b"56"
    with pytest.raises(ValueError, match="FastFile works with S3DataType S3Prefix only"):
        FastFileChannel(Channel(name="m", s3_uri=str(tmp_path), s3_data_type="ManifestFile"))


# ----------------------------------------------------------------------------------------- Pipe


def test_fifo_streams_gzip_objects_decompressed(s3_bucket, tmp_path):
    parts = [b"a,1\n" * 1000, b"b,2\n" * 50000, b"c,3\n"]
    put(s3_bucket, {f"gz/part-{i}.csv.gz": gzip.compress(p) for i, p in enumerate(parts)})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/gz/", compression="Gzip", input_mode="Pipe")
    with PipeFifoWriter(c, list_objects(c), tmp_path) as w:
        t, out = read_in_thread(str(tmp_path / "train_0"))
        t.join(20)
        assert w.join(10)
    assert out["data"] == b"".join(parts)
    assert w.epochs_done == 1 and not os.path.exists(tmp_path / "train_0")  # removed by close()


def test_fifo_wraps_each_object_in_one_recordio_record(s3_bucket, tmp_path):
    payloads = [b"abcde", b"", b"12345678", os.urandom(100_003)]
    put(s3_bucket, {f"rec/{i}": p for i, p in enumerate(payloads)})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/rec/", record_wrapper="RecordIO", input_mode="Pipe")
    with PipeFifoWriter(c, list_objects(c), tmp_path) as w:
        t, out = read_in_thread(str(tmp_path / "train_0"))
        t.join(20)
        w.join(10)
    data = out["data"]
    assert data.startswith(
        bytes.fromhex("0a23d7ce05000000616263646500 0000".replace(" ", ""))
    )  # contract §1.5
    try:  # the SageMaker training toolkit's own reader, when installed
        from sagemaker_training.recordio import _read_recordio
    except ImportError:  # pragma: no cover
        _read_recordio = None
    if _read_recordio is not None:
        assert list(_read_recordio(io.BytesIO(data))) == payloads
    assert data == b"".join(recordio_frame(p) for p in payloads)
    assert struct.unpack_from("<II", data, 16) == (0xCED7230A, 0)


def test_fifo_epochs_reshuffle_and_early_close(s3_bucket, tmp_path):
    names = [f"o{i:02d}" for i in range(12)]
    put(s3_bucket, {f"ep/{n}": n.encode() + b"\n" for n in names})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/ep/", input_mode="Pipe", shuffle_seed=3)
    with PipeFifoWriter(c, list_objects(c), tmp_path, epochs=3) as w:
        epoch0 = read_fifo(str(tmp_path / "train_0")).split()
        epoch1 = read_fifo(str(tmp_path / "train_1")).split()
        partial = read_fifo(str(tmp_path / "train_2"), limit=4)  # a reader may stop early
        assert w.join(10)
    assert sorted(epoch0) == sorted(epoch1) == [n.encode() for n in names]
    assert epoch0 != epoch1  # ShuffleConfig: a new order every epoch
    assert len(partial) == 4 and w.epochs_done == 3


def test_fifo_close_without_reader_and_errors_surface_on_join(s3_bucket, tmp_path):
    put(s3_bucket, {"plain/x": b"not gzip at all"})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/plain/", input_mode="Pipe")
    w = PipeFifoWriter(c, list_objects(c), tmp_path / "idle", epochs=None).start()
    assert not w.join(0.2)  # waiting for a reader
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 2 and os.listdir(tmp_path / "idle") == []

    gz = Channel(name="train", s3_uri=f"s3://{s3_bucket}/plain/", compression="Gzip", input_mode="Pipe")
    with PipeFifoWriter(gz, list_objects(gz), tmp_path / "bad") as w:
        read_fifo(str(tmp_path / "bad" / "train_0"))
        with pytest.raises(ValueError, match=r"plain/x is not valid gzip data"):
            w.join(10)
