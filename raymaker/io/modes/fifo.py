"""SageMaker's Pipe-mode contract for custom containers: one named pipe per channel per epoch.

``<directory>/<channel>_0`` appears first; a background thread streams the worker's objects into it
(gunzipped when CompressionType is Gzip, each object wrapped in one RecordIO record when
RecordWrapperType is RecordIO) and closes it, which the reader sees as EOF; then ``<channel>_1``
appears, and so on. A reader that closes early ends that epoch. With ShuffleConfig the order (and with
ShardedByS3Key the assignment) changes every epoch.

The pipe is written non-blocking with ``poll``, so ``close()`` can stop the writer even while no reader
has opened the pipe or a reader has stopped reading.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import os
import select
import struct
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from raymaker.io.channels import Channel, worker_objects
from raymaker.io.storage import ObjectInfo, S3Settings, storage_for

RECORDIO_MAGIC = 0xCED7230A
_MAX_RECORD = (1 << 29) - 1  # the length field has 29 bits
_PIPE_SIZE = 1 << 20  # the largest pipe buffer an unprivileged process may ask for on Linux


def recordio_frame(payload: bytes) -> bytes:
    """One RecordIO record (cflag 0): magic, uint32 length (little-endian), payload, zero pad to 4."""
    if len(payload) > _MAX_RECORD:
        raise ValueError(f"a RecordIO record holds at most {_MAX_RECORD} bytes, got {len(payload)}")
    return struct.pack("<II", RECORDIO_MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


class _Stopped(Exception):
    """close() was called."""


class _ReaderGone(Exception):
    """The reader closed the pipe before the end of the epoch."""


class PipeFifoWriter:
    """Feed ``objects`` into ``directory/<channel>_<epoch>`` FIFOs, one epoch after another.

    ``objects`` is the channel's listing; each epoch this worker streams
    ``shard_objects(objects, num_workers, rank, ..., epoch=e)`` (with the defaults, all of ``objects``,
    reshuffled per epoch when the channel has a ShuffleConfig). ``epochs=None`` keeps making epochs
    until ``close()``. ``prefetch`` objects are opened ahead so per-object latency overlaps streaming.
    """

    def __init__(
        self,
        channel: Channel,
        objects: Sequence[ObjectInfo],
        directory: str | os.PathLike,
        epochs: int | None = 1,
        *,
        num_workers: int = 1,
        rank: int = 0,
        settings: S3Settings | None = None,
        chunk_size: int = 1 << 20,
        prefetch: int = 4,
        poll_interval: float = 0.05,
    ):
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be at least 1 (or None for unbounded), got {epochs}")
        self.channel = channel
        self.objects = list(objects)
        self.directory = os.path.abspath(os.fspath(directory))
        self.epochs = epochs
        self.num_workers, self.rank = num_workers, rank
        self.chunk_size = chunk_size
        self.prefetch = max(1, prefetch)
        self.poll_interval = poll_interval
        self._storage = storage_for(self.objects[0].uri, settings) if self.objects else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._created: list[str] = []
        self.epochs_done = 0
        self.bytes_written = 0

    def fifo_path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"{self.channel.name}_{epoch}")

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self) -> PipeFifoWriter:
        if self._thread is not None:
            raise RuntimeError("PipeFifoWriter already started")
        os.makedirs(self.directory, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"pipe-{self.channel.name}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for all epochs to be written; True when done, False on timeout. Raises the writer's error."""
        if self._thread is None:
            raise RuntimeError("PipeFifoWriter not started")
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return not self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def close(self, timeout: float = 10.0) -> None:
        """Stop writing (readers see EOF) and remove the FIFOs. Errors are reported by ``join``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for path in self._created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._created.clear()

    def __enter__(self) -> PipeFifoWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- thread

    def _run(self) -> None:
        try:
            epoch = 0
            while self.epochs is None or epoch < self.epochs:
                path = self.fifo_path(epoch)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a stale pipe or file from an earlier run
                os.mkfifo(path, 0o600)
                self._created.append(path)
                fd = self._open_when_read(path)
                try:
                    self._stream_epoch(fd, epoch)
                except _ReaderGone:
                    pass
                finally:
                    os.close(fd)  # EOF for the reader
                self.epochs_done += 1
                epoch += 1
        except _Stopped:
            pass
        except BaseException as e:  # surfaced by join()
            self._error = e

    def _open_when_read(self, path: str) -> int:
        """Open the FIFO for writing once a reader has it open (polling, so close() can interrupt)."""
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                if self._stop.wait(self.poll_interval):
                    raise _Stopped from None
                continue
            with contextlib.suppress(OSError, AttributeError):  # a bigger buffer means fewer wakeups
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            return fd

    def _write(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while view:
            if self._stop.is_set():
                raise _Stopped
            events = poller.poll(int(self.poll_interval * 1000))
            if not events:
                continue
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                raise _ReaderGone
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise _ReaderGone from None
            view = view[n:]
            self.bytes_written += n

    def _stream_epoch(self, fd: int, epoch: int) -> None:
        mine = worker_objects(
            self.channel, num_workers=self.num_workers, rank=self.rank, epoch=epoch, objects=self.objects
        )
        if not mine:
            return
        assert self._storage is not None
        todo = iter(mine)
        pending: deque[tuple[ObjectInfo, Future]] = deque()
        with ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="pipe-open") as pool:
            try:
                for obj in todo:
                    pending.append((obj, pool.submit(self._storage.open, obj.uri)))
                    if len(pending) >= self.prefetch:
                        break
                while pending:
                    obj, opened = pending.popleft()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append((nxt, pool.submit(self._storage.open, nxt.uri)))
                    with opened.result() as raw:
                        self._stream_object(fd, obj, raw)
            finally:
                for _, opened in pending:  # close streams opened ahead that will not be read
                    with contextlib.suppress(BaseException):
                        opened.result().close()

    def _stream_object(self, fd: int, obj: ObjectInfo, raw: BinaryIO) -> None:
        stream: BinaryIO = raw
        if self.channel.compression == "Gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        try:
            if self.channel.record_wrapper == "RecordIO":
                # The record header carries the length, so the (decompressed) object is read whole.
                self._write(fd, recordio_frame(stream.read()))
                return
            while chunk := stream.read(self.chunk_size):
                self._write(fd, chunk)
        except (gzip.BadGzipFile, zlib.error, EOFError) as e:
            raise ValueError(
                f"channel {self.channel.name!r}: {obj.uri} is not valid gzip data ({e}); "
                "set CompressionType to None for uncompressed objects"
            ) from e
