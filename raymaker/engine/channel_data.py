"""A training worker's view of its channels (``TrainingData``), whatever the input mode.

File: this worker's objects are copied to local disk first (cached by ETag), then decoded from there.
FastFile: objects are opened lazily and read as they are decoded. Pipe: the worker's Ray Data shard
(``pipe_dataset`` per rank) is streamed; nothing touches local disk. Every channel is a callable that
starts a fresh pass, so algorithms can make several epochs over streamed data.

ShuffleConfig: every call of a channel's callable is the next epoch (0, 1, 2...), and a channel with a
seed reads each epoch in a new order, reproducible for the seed, as SageMaker reshuffles every epoch.
File and FastFile reorder only the files this worker holds (``pass_order``): which files those are is
fixed when the channel is opened (downloaded, for File), in the epoch-0 assignment. Pipe replans its
stream per epoch (``PipeEpochIterator``): the new order and, for ShardedByS3Key, the new assignment.
Without a seed every pass reads in the same order. The epoch count starts at 0 in each process, so a
worker group restarted from a checkpoint starts again from epoch 0's order.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from raymaker.algorithms.base import TrainingData
from raymaker.io.batch import Batch
from raymaker.io.channels import Channel, pass_order
from raymaker.io.formats import get_format
from raymaker.io.modes.fastfile import FastFileChannel
from raymaker.io.modes.file import download_channel
from raymaker.io.storage import S3Settings


def _decode_files(paths: list[str], content_type: str, compressed: bool) -> Iterator[Batch]:
    fmt, params = get_format(content_type)
    for path in paths:
        # SageMaker leaves objects as stored in File mode; decoding a gzipped object still needs gunzip.
        opener = gzip.open if compressed or path.endswith(".gz") else open
        with opener(path, "rb") as f:
            yield from fmt.iter_batches(f, **params)


def _per_epoch(one_pass: Callable[[int], Iterator[Batch]]) -> Callable[[], Iterator[Batch]]:
    """A channel callable whose n-th call reads epoch n."""
    epochs = itertools.count()
    return lambda: one_pass(next(epochs))


def file_channel(
    channel: Channel,
    content_type: str,
    root: str,
    *,
    num_workers: int,
    rank: int,
    settings: S3Settings | None,
) -> Callable[[], Iterator[Batch]]:
    """Download this worker's files now; each call of the result decodes them all, in the next
    epoch's order (sorted without a ShuffleConfig seed)."""
    dest = os.path.join(root, channel.name)
    report = download_channel(channel, dest, num_workers=num_workers, rank=rank, settings=settings)
    compressed = channel.compression == "Gzip"

    def one_pass(epoch: int) -> Iterator[Batch]:
        # ShardedByS3Key: the download fixed which files this worker has; only their order changes.
        names = pass_order(report.files, channel.shuffle_seed, epoch)
        return _decode_files([os.path.join(dest, rel) for rel in names], content_type, compressed)

    return _per_epoch(one_pass)


def fastfile_channel(
    channel: Channel, content_type: str, *, num_workers: int, rank: int, settings: S3Settings | None
) -> Callable[[], Iterator[Batch]]:
    """Open this worker's share lazily; each call of the result reads it all, in the next epoch's
    order (listing order without a ShuffleConfig seed)."""
    view = FastFileChannel(channel, num_workers=num_workers, rank=rank, settings=settings)
    fmt, params = get_format(content_type)

    def one_pass(epoch: int) -> Iterator[Batch]:
        # The worker's share is fixed when the view lists it (as for File); only the order changes.
        # FastFile is S3Prefix only, so sorted names are the listing order.
        for name in pass_order(view.files, channel.shuffle_seed, epoch):
            with view.open(name) as f:
                stream = (
                    gzip.GzipFile(fileobj=f) if channel.compression == "Gzip" or name.endswith(".gz") else f
                )
                yield from fmt.iter_batches(stream, **params)

    return _per_epoch(one_pass)


def pipe_channel(shard: Any, batch_size: int = 4096) -> Callable[[], Iterator[Batch]]:
    """``shard`` is the worker's ``ray.train.get_dataset_shard(name)``; each call streams one pass.
    A ``PipeEpochIterator`` shard plans every pass as the next epoch; a plain DataIterator replays the
    same plan."""
    from raymaker.io.modes.pipe import batch_from_numpy

    return lambda: (
        batch_from_numpy(b) for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy")
    )


def _pipe_shard(
    channel: Channel,
    shard_for: Callable[[str], Any],
    *,
    num_workers: int,
    rank: int,
    settings: S3Settings | None,
) -> Any:
    """The channel's shard; with ShuffleConfig one that moves to the next epoch on every pass."""
    from raymaker.io.modes.pipe import PipeEpochIterator

    shard = shard_for(channel.name)
    if channel.shuffle_seed is None or isinstance(shard, PipeEpochIterator):
        return shard
    # A shard planned once (a one-instance job's pipe_dataset(...).iterator()) would replay epoch 0's
    # order every pass: plan per epoch here instead, with the shard's Ray Data options.
    return PipeEpochIterator(
        channel,
        settings=settings,
        num_workers=num_workers,
        rank=rank,
        execution_options=shard.get_context().execution_options if hasattr(shard, "get_context") else None,
    )


def worker_training_data(
    channels: list[Channel],
    content_types: dict[str, str],
    root: str,
    *,
    num_workers: int,
    rank: int,
    settings: S3Settings | None,
    shard_for: Callable[[str], object] | None = None,
) -> TrainingData:
    """TrainingData for worker ``rank``. ``shard_for(name)`` returns the Ray Data shard of a Pipe channel."""
    out: dict[str, Callable[[], Iterator[Batch]]] = {}
    for ch in channels:
        ct = content_types[ch.name]
        if ch.input_mode == "Pipe":
            if shard_for is None:
                raise ValueError(f"channel {ch.name!r} is in Pipe mode but no Ray Data shard is available")
            out[ch.name] = pipe_channel(
                _pipe_shard(ch, shard_for, num_workers=num_workers, rank=rank, settings=settings)
            )
        elif ch.input_mode == "FastFile":
            out[ch.name] = fastfile_channel(ch, ct, num_workers=num_workers, rank=rank, settings=settings)
        else:
            out[ch.name] = file_channel(ch, ct, root, num_workers=num_workers, rank=rank, settings=settings)
    return TrainingData(out)
