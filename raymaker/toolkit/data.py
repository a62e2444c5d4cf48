"""A script's input channels, delivered into its ``/opt/ml`` tree as SageMaker delivers them
(sagemaker-contract.md section 2.6), by the data plane's own input modes:

- **File**: the host's share of the channel's objects is copied to ``input/data/<channel>/`` before the
  script starts, each object at its key relative to the channel's prefix (``s3://b/train/a/x.csv`` of
  ``s3://b/train/`` is ``input/data/train/a/x.csv``); ShardedByS3Key gives each host its share, as
  ``io.modes.file.download_channel`` computes it (and through its ETag cache, so an unchanged rerun on
  the same machine copies nothing). A ``model`` channel (incremental training) is an ordinary File
  channel: the earlier job's ``model.tar.gz`` arrives as that file, unopened.
- **FastFile**: SageMaker mounts the prefix read-only and streams on demand. raymaker has no lazy POSIX
  mount (no FUSE here), so a FastFile channel is downloaded exactly like a File channel, to the same
  path: the script sees the same files, they are just all fetched before it starts.
- **Pipe**: ``input/data/<channel>_<epoch>`` FIFOs fed by ``io.modes.fifo.PipeFifoWriter``: ``_0`` first,
  ``_1`` once the reader has read ``_0`` to EOF (or closed it), and so on for as long as the context
  is open. Gzip and RecordIO wrapping, ShuffleConfig and ShardedByS3Key are the writer's.

Leaving the context stops the writers (a reader blocked on a FIFO sees EOF) and removes the FIFOs;
downloaded files stay, with the rest of the tree. Every error names the channel and its URI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from raymaker.io.channels import Channel, list_objects
from raymaker.io.modes.fifo import PipeFifoWriter
from raymaker.io.modes.file import DownloadReport, download_channel
from raymaker.io.storage import S3Settings
from raymaker.toolkit.paths import MLTree


class ChannelDataError(RuntimeError):
    """A channel's data could not be delivered; the message names the channel, its mode and its URI."""

    def __init__(self, channel: Channel, problem: object):
        self.channel = channel.name
        self.uri = channel.s3_uri
        detail = str(problem)
        prefix = f"channel {channel.name!r}: "
        if detail.startswith(prefix):  # the data plane's own messages already name the channel
            detail = detail[len(prefix) :]
        super().__init__(f"channel {channel.name!r} ({channel.input_mode} mode, {channel.s3_uri}): {detail}")


@dataclass
class StagedChannel:
    channel: Channel
    # File / FastFile: the channel's directory. Pipe: the FIFOs' common stem (``<path>_<epoch>``).
    path: str
    report: DownloadReport | None = None  # File / FastFile
    writer: PipeFifoWriter | None = None  # Pipe


@dataclass
class StagedChannels:
    """What ``stage_channels`` delivered, by channel name."""

    channels: dict[str, StagedChannel] = field(default_factory=dict)

    def __getitem__(self, name: str) -> StagedChannel:
        return self.channels[name]

    def pipe_error(self) -> ChannelDataError | None:
        """The first error a Pipe writer has hit so far (its reader then sees the epoch end early), for
        a runner that wants to stop the script at once rather than when the context closes."""
        for staged in self.channels.values():
            if staged.writer is not None and staged.writer.error is not None:
                return ChannelDataError(staged.channel, staged.writer.error)
        return None


@contextlib.contextmanager
def stage_channels(
    tree: MLTree,
    channels: Sequence[Channel],
    *,
    rank: int,
    num_hosts: int,
    settings: S3Settings | None,
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[StagedChannels]:
    """Deliver ``channels`` into ``tree`` for host ``rank`` of ``num_hosts``; yields ``StagedChannels``.

    On entry every File / FastFile channel is in place and every Pipe channel is listed (an empty or
    missing prefix fails here, before the script starts) and its writer started. On exit the writers
    stop and the FIFOs go; if the block ended normally but a writer had failed (its reader saw its data
    cut short), that error is raised then. ``cache_dir``: download_channel's object cache (default
    under RAYMAKER_HOME)."""
    if num_hosts < 1 or not 0 <= rank < num_hosts:
        raise ValueError(f"rank must be in 0..{num_hosts - 1} for {num_hosts} hosts, got {rank}")
    _check_names(channels)
    staged = StagedChannels()
    with contextlib.ExitStack() as stack:
        os.makedirs(tree.data_dir, exist_ok=True)
        for channel in channels:  # everything copied first: a failed copy leaves no writer running
            if channel.input_mode in ("File", "FastFile"):
                staged.channels[channel.name] = _download(tree, channel, rank, num_hosts, settings, cache_dir)
        for channel in channels:
            if channel.input_mode == "Pipe":
                writer = _pipe_writer(tree, channel, rank, num_hosts, settings)
                stack.callback(writer.close)
                writer.start()
                stem = os.path.join(tree.data_dir, channel.name)  # tree.fifo(name, epoch) is stem_<epoch>
                staged.channels[channel.name] = StagedChannel(channel, stem, writer=writer)
        yield staged
        stack.close()  # the writers stop here; a normal exit then reports what they hit
        error = staged.pipe_error()
        if error is not None:
            raise error


def _check_names(channels: Sequence[Channel]) -> None:
    for c in channels:
        if c.input_mode not in ("File", "FastFile", "Pipe"):
            raise ChannelDataError(c, f"InputMode {c.input_mode!r}: use File, FastFile or Pipe")
    names = [c.name for c in channels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"channel names must be unique; {', '.join(map(repr, dupes))} given more than once")
    # A Pipe channel's FIFOs (<name>_0, <name>_1, ...) must not land on another channel's directory.
    pipes = [c.name for c in channels if c.input_mode == "Pipe"]
    for c in channels:
        for p in pipes:
            suffix = c.name[len(p) + 1 :] if c.name.startswith(p + "_") else ""
            if suffix.isdigit():
                raise ValueError(
                    f"channel {c.name!r} has the name of Pipe channel {p!r}'s FIFO for epoch {suffix}; "
                    "rename one of them"
                )


def _download(
    tree: MLTree,
    channel: Channel,
    rank: int,
    num_hosts: int,
    settings: S3Settings | None,
    cache_dir: str | os.PathLike | None,
) -> StagedChannel:
    if channel.input_mode == "FastFile" and channel.s3_data_type != "S3Prefix":
        raise ChannelDataError(channel, "FastFile works with S3DataType S3Prefix only; use File or Pipe mode")
    dest = tree.channel_dir(channel.name)
    shutil.rmtree(dest, ignore_errors=True)  # exactly this host's objects, nothing left from a run before
    try:
        report = download_channel(
            channel, dest, num_workers=num_hosts, rank=rank, cache_dir=cache_dir, settings=settings
        )
    except Exception as e:
        raise ChannelDataError(channel, e) from e
    return StagedChannel(channel, dest, report=report)


def _pipe_writer(
    tree: MLTree, channel: Channel, rank: int, num_hosts: int, settings: S3Settings | None
) -> PipeFifoWriter:
    try:
        objects = list_objects(channel, settings)
        # epochs=None: a new epoch each time the reader finishes one, for as long as the script runs.
        return PipeFifoWriter(
            channel, objects, tree.data_dir, epochs=None, num_workers=num_hosts, rank=rank, settings=settings
        )
    except Exception as e:
        raise ChannelDataError(channel, e) from e
