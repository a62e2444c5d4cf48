"""A training worker's channels over several passes: ShuffleConfig reorders every pass (File, FastFile)."""

from __future__ import annotations

import pytest

from raymaker.engine.channel_data import fastfile_channel, file_channel
from raymaker.io.channels import Channel, pass_order, shuffled

OBJECTS = 8


@pytest.fixture
def channel_dir(tmp_path):
    """OBJECTS one-row CSV files; a row's label is its file's number, so a pass's labels are its order."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(OBJECTS):
        (src / f"part-{i:02d}.csv").write_text(f"{i},0.5\n")
    return src


def _channel(src, mode: str, seed: int | None = None, distribution: str = "FullyReplicated") -> Channel:
    return Channel(
        name="train",
        s3_uri=str(src),
        content_type="text/csv",
        input_mode=mode,
        distribution=distribution,
        shuffle_seed=seed,
    )


def _open(channel: Channel, root, num_workers: int = 1, rank: int = 0):
    if channel.input_mode == "FastFile":
        return fastfile_channel(channel, "text/csv", num_workers=num_workers, rank=rank, settings=None)
    return file_channel(
        channel, "text/csv", str(root / f"w{rank}"), num_workers=num_workers, rank=rank, settings=None
    )


def _passes(read, n: int) -> list[list[int]]:
    return [[int(v) for batch in read() for v in batch.labels] for _ in range(n)]


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_a_seed_reshuffles_every_pass_reproducibly(channel_dir, tmp_path, mode):
    passes = _passes(_open(_channel(channel_dir, mode, seed=7), tmp_path / "a"), 4)
    everything = list(range(OBJECTS))
    assert all(sorted(p) == everything for p in passes)  # each pass reads every object once
    assert len({tuple(p) for p in passes}) == 4  # and each in a new order
    assert everything not in passes
    # The same seed gives the same orders, pass by pass, in a fresh channel (another process, a rerun).
    assert _passes(_open(_channel(channel_dir, mode, seed=7), tmp_path / "b"), 4) == passes
    assert _passes(_open(_channel(channel_dir, mode, seed=8), tmp_path / "c"), 4) != passes
    # Pass n is epoch n of ShuffleConfig: for FullyReplicated, the listing in shuffled(.., epoch) order.
    assert passes == [shuffled(everything, 7, epoch) for epoch in range(4)]


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_without_a_seed_every_pass_is_the_same_sorted_order(channel_dir, tmp_path, mode):
    passes = _passes(_open(_channel(channel_dir, mode), tmp_path), 3)
    assert passes == [list(range(OBJECTS))] * 3


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_sharded_workers_reorder_only_what_they_hold(channel_dir, tmp_path, mode):
    held = []
    for rank in range(2):
        c = _channel(channel_dir, mode, seed=3, distribution="ShardedByS3Key")
        passes = _passes(_open(c, tmp_path, num_workers=2, rank=rank), 4)
        # The share is fixed when the channel is opened (File: downloaded); only its order changes.
        assert all(sorted(p) == sorted(passes[0]) for p in passes)
        assert len({tuple(p) for p in passes}) > 1
        held.append(set(passes[0]))
    assert not held[0] & held[1] and held[0] | held[1] == set(range(OBJECTS))


def test_pass_order():
    names = ["b", "a", "d", "c"]
    assert pass_order(names, None, 0) == pass_order(names, None, 5) == ["a", "b", "c", "d"]
    assert pass_order(names, 1, 0) == shuffled(["a", "b", "c", "d"], 1, 0)
    assert pass_order(names, 1, 0) == pass_order(list(reversed(names)), 1, 0)  # input order is irrelevant
    orders = {tuple(pass_order(names, 1, e)) for e in range(6)}
    assert len(orders) > 1 and all(sorted(o) == ["a", "b", "c", "d"] for o in orders)
