"""FastFile mode: the channel's files opened lazily; only the byte ranges read are fetched.

SageMaker exposes FastFile channels as a read-only POSIX mount. Here a worker gets the file names up
front (one listing, no data) and ``open(name)`` returns a seekable file object: for S3 an s3fs file
that issues range requests block by block, for local paths the file itself.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from raymaker.io.channels import Channel, worker_objects
from raymaker.io.storage import ObjectInfo, S3Settings, storage_for


class FastFileChannel:
    def __init__(
        self,
        channel: Channel,
        num_workers: int = 1,
        rank: int = 0,
        *,
        settings: S3Settings | None = None,
        objects: list[ObjectInfo] | None = None,
        block_size: int = 1 << 20,
    ):
        if channel.s3_data_type != "S3Prefix":
            raise ValueError(
                f"channel {channel.name!r}: FastFile works with S3DataType S3Prefix only; use File or Pipe mode"
            )
        self.channel = channel
        self.block_size = block_size
        mine = worker_objects(channel, num_workers=num_workers, rank=rank, settings=settings, objects=objects)
        self._objects = {o.relative: o for o in mine}
        self._storage = storage_for(channel.s3_uri, settings)

    @property
    def files(self) -> list[str]:
        """This worker's file names, relative to the channel (what File mode would write)."""
        return list(self._objects)

    @property
    def objects(self) -> list[ObjectInfo]:
        return list(self._objects.values())

    def info(self, name: str) -> ObjectInfo:
        try:
            return self._objects[name]
        except KeyError:
            raise FileNotFoundError(f"channel {self.channel.name!r} has no file {name!r}") from None

    def size(self, name: str) -> int:
        return self.info(name).size

    def open(self, name: str | os.PathLike) -> BinaryIO:
        """A seekable binary file object; reads fetch only what they touch (plus read-ahead)."""
        obj = self.info(os.fspath(name))
        return self._storage.open_seekable(obj.uri, size=obj.size, block_size=self.block_size)
