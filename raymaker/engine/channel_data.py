"""A training worker's view of its channels (``TrainingData``), whatever the input mode.

File: this worker's objects are copied to local disk first (cached by ETag), then decoded from there.
FastFile: objects are opened lazily and read as they are decoded. Pipe: the worker's Ray Data shard
(``ChannelDataConfig``) is streamed; nothing touches local disk. Every channel is a callable that
starts a fresh pass, so algorithms can make several epochs over streamed data.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator

from raymaker.algorithms.base import TrainingData
from raymaker.io.batch import Batch
from raymaker.io.channels import Channel
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


def file_channel(
    channel: Channel,
    content_type: str,
    root: str,
    *,
    num_workers: int,
    rank: int,
    settings: S3Settings | None,
) -> Callable[[], Iterator[Batch]]:
    dest = os.path.join(root, channel.name)
    report = download_channel(channel, dest, num_workers=num_workers, rank=rank, settings=settings)
    paths = [os.path.join(dest, rel) for rel in sorted(report.files)]
    return lambda: _decode_files(paths, content_type, channel.compression == "Gzip")


def fastfile_channel(
    channel: Channel, content_type: str, *, num_workers: int, rank: int, settings: S3Settings | None
) -> Callable[[], Iterator[Batch]]:
    view = FastFileChannel(channel, num_workers=num_workers, rank=rank, settings=settings)
    fmt, params = get_format(content_type)

    def passes() -> Iterator[Batch]:
        for name in view.files:
            with view.open(name) as f:
                stream = (
                    gzip.GzipFile(fileobj=f) if channel.compression == "Gzip" or name.endswith(".gz") else f
                )
                yield from fmt.iter_batches(stream, **params)

    return passes


def pipe_channel(shard, batch_size: int = 4096) -> Callable[[], Iterator[Batch]]:
    """``shard`` is the worker's ``ray.train.get_dataset_shard(name)``; each call streams one pass."""
    from raymaker.io.modes.pipe import batch_from_numpy

    return lambda: (
        batch_from_numpy(b) for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy")
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
            out[ch.name] = pipe_channel(shard_for(ch.name))
        elif ch.input_mode == "FastFile":
            out[ch.name] = fastfile_channel(ch, ct, num_workers=num_workers, rank=rank, settings=settings)
        else:
            out[ch.name] = file_channel(ch, ct, root, num_workers=num_workers, rank=rank, settings=settings)
    return TrainingData(out)
