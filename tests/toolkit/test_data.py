"""Channels delivered into a script's /opt/ml tree: File and FastFile directories, Pipe FIFOs read as a
script reads them (real FIFOs, a reader thread), against the real S3 test server."""

from __future__ import annotations

import gzip
import os
import stat
import threading
import time

import pytest

from raymaker.io.channels import Channel
from raymaker.io.storage import storage_for
from raymaker.toolkit.data import ChannelDataError, stage_channels
from raymaker.toolkit.paths import MLTree


def put(bucket: str, files: dict[str, bytes]) -> None:
    s = storage_for(f"s3://{bucket}")
    for key, data in files.items():
        s.put_bytes(f"s3://{bucket}/{key}", data)


def files_under(root: str) -> dict[str, bytes]:
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def read_fifo(path: str, timeout: float = 10.0) -> bytes:
    """As a script reads a Pipe channel: wait for the FIFO to appear, then read it to EOF."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def tree(tmp_path) -> MLTree:
    return MLTree(str(tmp_path / "algo-1" / "opt" / "ml")).make()


def test_file_channels_keep_relative_key_paths_and_model_is_a_file_channel(s3_bucket, tree, tmp_path):
    put(
        s3_bucket,
        {
            "data/train/a.csv": b"1,2\n",
            "data/train/sub/b.csv": b"3,4\n",
            "data/train-other/x.csv": b"not mine",  # a sibling prefix: not part of the channel
            "jobs/old/output/model.tar.gz": b"\x1f\x8b pretend archive",
        },
    )
    channels = [
        Channel(name="train", s3_uri=f"s3://{s3_bucket}/data/train/"),
        Channel(
            name="model",
            s3_uri=f"s3://{s3_bucket}/jobs/old/output/",
            content_type="application/x-sagemaker-model",
        ),
    ]
    with stage_channels(
        tree, channels, rank=0, num_hosts=1, settings=None, cache_dir=tmp_path / "cache"
    ) as staged:
        assert files_under(tree.channel_dir("train")) == {
            "a.csv": b"1,2\n",
            os.path.join("sub", "b.csv"): b"3,4\n",
        }
        # Incremental training: the earlier model arrives as the file it is, unopened.
        assert files_under(tree.channel_dir("model")) == {"model.tar.gz": b"\x1f\x8b pretend archive"}
        assert staged["train"].path == tree.channel_dir("train")
        assert staged["train"].report.objects == 2
    assert os.path.isfile(os.path.join(tree.channel_dir("train"), "a.csv"))  # files outlive the context


def test_sharded_by_s3_key_splits_objects_across_two_hosts(s3_bucket, tmp_path):
    put(s3_bucket, {f"s/part-{i}.csv": f"{i}\n".encode() for i in range(5)})
    put(s3_bucket, {"v/val.csv": b"v\n"})
    channels = [
        Channel(name="train", s3_uri=f"s3://{s3_bucket}/s/", distribution="ShardedByS3Key"),
        Channel(name="validation", s3_uri=f"s3://{s3_bucket}/v/"),  # FullyReplicated
    ]
    shares = []
    for rank in range(2):
        tree = MLTree(str(tmp_path / f"algo-{rank + 1}")).make()
        with stage_channels(
            tree, channels, rank=rank, num_hosts=2, settings=None, cache_dir=tmp_path / "cache"
        ):
            shares.append(set(files_under(tree.channel_dir("train"))))
            assert files_under(tree.channel_dir("validation")) == {"val.csv": b"v\n"}
    assert shares[0] | shares[1] == {f"part-{i}.csv" for i in range(5)}
    assert not shares[0] & shares[1]
    assert sorted(map(len, shares)) == [2, 3]


def test_fastfile_channel_is_at_the_same_path(s3_bucket, tree, tmp_path):
    put(s3_bucket, {"ff/a.bin": b"a" * 1000, "ff/d/b.bin": b"b"})
    c = Channel(name="ff", s3_uri=f"s3://{s3_bucket}/ff/", input_mode="FastFile")
    with stage_channels(tree, [c], rank=0, num_hosts=1, settings=None, cache_dir=tmp_path / "cache"):
        assert files_under(tree.channel_dir("ff")) == {"a.bin": b"a" * 1000, os.path.join("d", "b.bin"): b"b"}


def test_pipe_channel_fifos_one_epoch_after_another(s3_bucket, tree, tmp_path):
    put(s3_bucket, {"p/0.txt": b"alpha\n", "p/1.txt": b"beta\n"})
    put(s3_bucket, {"f/x.csv": b"x\n"})
    channels = [
        Channel(name="train", s3_uri=f"s3://{s3_bucket}/p/", input_mode="Pipe"),
        Channel(name="aux", s3_uri=f"s3://{s3_bucket}/f/"),  # a File channel beside it
    ]
    got: dict = {}

    def script() -> None:
        try:
            got["epoch0"] = read_fifo(tree.fifo("train", 0))
            got["epoch1"] = read_fifo(tree.fifo("train", 1))
        except BaseException as e:  # reported below
            got["error"] = e

    with stage_channels(
        tree, channels, rank=0, num_hosts=1, settings=None, cache_dir=tmp_path / "cache"
    ) as staged:
        assert files_under(tree.channel_dir("aux")) == {"x.csv": b"x\n"}
        reader = threading.Thread(target=script, daemon=True)
        reader.start()
        reader.join(20)
        assert not reader.is_alive() and "error" not in got, got.get("error")
        assert staged["train"].path + "_0" == tree.fifo("train", 0)
        assert staged.pipe_error() is None
    assert got["epoch0"] == got["epoch1"] == b"alpha\nbeta\n"
    # Leaving the context stops the writer and removes every FIFO it made (epoch 2 was waiting).
    assert not [n for n in os.listdir(tree.data_dir) if n.startswith("train_")]
    assert not staged["train"].writer._thread.is_alive()


def test_pipe_fifos_shard_over_two_hosts(s3_bucket, tmp_path):
    put(s3_bucket, {f"ps/{i}": f"{i}\n".encode() for i in range(4)})
    c = Channel(
        name="train", s3_uri=f"s3://{s3_bucket}/ps/", input_mode="Pipe", distribution="ShardedByS3Key"
    )
    seen = []
    for rank in range(2):
        tree = MLTree(str(tmp_path / f"algo-{rank + 1}")).make()
        with stage_channels(tree, [c], rank=rank, num_hosts=2, settings=None):
            seen.append(read_fifo(tree.fifo("train", 0)).split())
    assert sorted(seen[0] + seen[1]) == [b"0", b"1", b"2", b"3"] and len(seen[0]) == 2


def test_closing_without_a_reader_removes_the_fifo(s3_bucket, tree):
    put(s3_bucket, {"idle/x": b"x"})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/idle/", input_mode="Pipe")
    started = time.monotonic()
    with stage_channels(tree, [c], rank=0, num_hosts=1, settings=None):
        deadline = time.monotonic() + 5
        while not os.path.exists(tree.fifo("train", 0)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(tree.fifo("train", 0))
    assert time.monotonic() - started < 5
    assert not os.path.exists(tree.fifo("train", 0))


def test_errors_name_the_channel_and_uri(s3_bucket, tree, tmp_path):
    put(s3_bucket, {"ok/x": b"x", "plain/x": b"not gzip"})
    missing = f"s3://{s3_bucket}/nothing-here/"
    for mode in ("File", "FastFile", "Pipe"):
        c = Channel(name="train", s3_uri=missing, input_mode=mode)
        with pytest.raises(
            ChannelDataError, match=rf"channel 'train' \({mode} mode, {missing}\): no objects under"
        ):
            with stage_channels(tree, [c], rank=0, num_hosts=1, settings=None, cache_dir=tmp_path / "c"):
                pass

    # A failure after a Pipe writer started stops that writer: nothing is left behind.
    pipe = Channel(name="stream", s3_uri=f"s3://{s3_bucket}/ok/", input_mode="Pipe")
    bad = Channel(name="broken", s3_uri=f"s3://rm-no-such-bucket-{s3_bucket[-8:]}/x/", input_mode="Pipe")
    with pytest.raises(
        ChannelDataError, match=r"channel 'broken' \(Pipe mode, s3://rm-no-such-bucket-.*/x/\)"
    ):
        with stage_channels(tree, [pipe, bad], rank=0, num_hosts=1, settings=None):
            pass
    assert not [n for n in os.listdir(tree.data_dir) if n.startswith("stream_")]

    # A writer that fails mid-stream: the reader sees the epoch end, and leaving the context says why.
    gz = Channel(name="train", s3_uri=f"s3://{s3_bucket}/plain/", input_mode="Pipe", compression="Gzip")
    with pytest.raises(ChannelDataError, match=r"channel 'train' \(Pipe mode, .*/plain/\): .*not valid gzip"):
        with stage_channels(tree, [gz], rank=0, num_hosts=1, settings=None) as staged:
            assert read_fifo(tree.fifo("train", 0)) == b""
            deadline = time.monotonic() + 5
            while staged.pipe_error() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert "not valid gzip" in str(staged.pipe_error())


def test_channel_names_and_ranks_are_checked(s3_bucket, tree):
    a = Channel(name="train", s3_uri=f"s3://{s3_bucket}/a/", input_mode="Pipe")
    b = Channel(name="train_0", s3_uri=f"s3://{s3_bucket}/b/")
    with pytest.raises(ValueError, match="'train_0' has the name of Pipe channel 'train''s FIFO for epoch 0"):
        with stage_channels(tree, [a, b], rank=0, num_hosts=1, settings=None):
            pass
    with pytest.raises(ValueError, match="given more than once"):
        with stage_channels(tree, [b, b], rank=0, num_hosts=1, settings=None):
            pass
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1"):
        with stage_channels(tree, [b], rank=2, num_hosts=2, settings=None):
            pass


def test_gzip_file_channel_objects_arrive_as_stored(s3_bucket, tree, tmp_path):
    # File mode never decompresses (only Pipe honours CompressionType).
    body = gzip.compress(b"a,b\n")
    put(s3_bucket, {"gzf/part.csv.gz": body})
    c = Channel(name="train", s3_uri=f"s3://{s3_bucket}/gzf/", compression="Gzip")
    with stage_channels(tree, [c], rank=0, num_hosts=1, settings=None, cache_dir=tmp_path / "cache"):
        assert files_under(tree.channel_dir("train")) == {"part.csv.gz": body}
