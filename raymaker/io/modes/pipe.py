"""Pipe mode into Ray Data: a channel's objects streamed from storage straight into a ``Dataset``.

SageMaker's Pipe mode streams each object into the container with no local copy; here the stream
ends in Ray Data instead of a FIFO (``fifo.PipeFifoWriter`` keeps the FIFO contract for custom
containers). Each read task opens one object as a pyarrow input stream (gunzipped on the fly when
``CompressionType`` is Gzip), hands it to the channel's format decoder and yields one Arrow block per
decoded batch: dense rows as a ``features`` tensor column plus ``label``, sparse rows as
``indices``/``values`` list columns plus ``num_features`` (``Batch.to_arrow``).

Prefetching is Ray Data's streaming executor running read tasks ahead of the consumer. Read tasks ask
for a fraction of a CPU (``READ_TASK_CPUS``): training instances hold their CPUs for the whole run, and
whole-CPU read tasks would wait forever for one (ray-2.60-notes §2, "Root cause 2").

``pipe_dataset(channel, num_workers=n, rank=r)`` is one instance's SageMaker-style stream:
``ShardedByS3Key`` -> that rank's objects (disjoint, together all of them), ``FullyReplicated`` -> all.
For your own Ray Train loops, ``train_data.ChannelDataConfig`` hands each Train worker its stream (kept
apart so that a Pipe channel never imports Ray Train).

``RecordWrapperType`` only frames objects for the FIFO contract; decoded rows do not depend on it.

ShuffleConfig: a channel with a seed is read through ``PipeEpochIterator``, which plans each pass
(each ``iter_batches``) as the next epoch: the objects in that epoch's ``shuffled`` order and, for
ShardedByS3Key, that epoch's assignment, so an object may go to another worker in the next epoch, as in
SageMaker. Each object is one read task and rows come out in object order (``preserve_order``); within
an object rows keep their stored order. Without a seed the stream is planned once (``ds.iterator()``)
and read tasks deliver in completion order, as Ray Data does by default.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from ray.data import DataIterator
from ray.data.datasource import DefaultFileMetadataProvider, FileBasedDatasource

from raymaker.io.batch import Batch
from raymaker.io.channels import Channel, list_objects, worker_objects
from raymaker.io.formats import get_format
from raymaker.io.storage import ObjectInfo, S3Settings, parse_uri

if TYPE_CHECKING:
    import ray.data
    from ray.data import DataContext, ExecutionOptions

# CPUs each read task asks for. Fractional so reads fit beside Train workers holding whole CPUs.
READ_TASK_CPUS = 0.25

# SageMaker's built-in algorithms read RecordIO-protobuf in Pipe mode unless told otherwise.
DEFAULT_CONTENT_TYPE = "application/x-recordio-protobuf"


class _KnownSizes(DefaultFileMetadataProvider):
    """Sizes from our own listing: FileBasedDatasource would otherwise stat every object again, for 16+
    objects not under one prefix in default Ray tasks that each want a whole CPU (a deadlock in Train)."""

    def __init__(self, sizes: list[int]):
        self._sizes = sizes

    def expand_paths(self, paths, filesystem, partitioning=None, ignore_missing_paths=False):
        if len(paths) != len(self._sizes):
            raise ValueError(f"{len(paths)} paths but {len(self._sizes)} sizes")
        yield from zip(paths, self._sizes)


class _NamedStream:
    """The pyarrow stream with the object's URI as ``name``, so decoder errors say which object broke."""

    def __init__(self, f: pa.NativeFile, name: str):
        self._f = f
        self.name = name

    def read(self, n: int = -1) -> bytes:
        return self._f.read() if n is None or n < 0 else self._f.read(n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # the datasource owns the stream
        pass


class ChannelDatasource(FileBasedDatasource):
    """Decodes whole objects (no byte-range splitting) with the channel's content-type decoder."""

    def __init__(
        self,
        paths: list[str],
        *,
        sizes: list[int],
        content_type: str,
        gzip: bool,
        filesystem: Any = None,
        uri_prefix: str = "",
    ):
        get_format(content_type)  # fail here, on the driver, for an unsupported content type
        super().__init__(paths, filesystem=filesystem, meta_provider=_KnownSizes(sizes))
        self._content_type = content_type
        self._gzip = gzip
        # Ray Data strips "s3://" from paths; put it back in error messages.
        self._uri_prefix = uri_prefix

    def resolve_compression(self, path: str, open_args: dict[str, Any]) -> str | None:
        # CompressionType alone decides, never the file name: a ".gz" object in a channel without
        # CompressionType Gzip is passed through as stored, as SageMaker does.
        return "gzip" if self._gzip else None

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        fmt, params = get_format(self._content_type)
        name = self._uri_prefix + path
        try:
            for batch in fmt.iter_batches(_NamedStream(f, name), **params):
                if len(batch):
                    yield batch.to_arrow()
        except OSError as e:
            if self._gzip and ("zlib" in str(e) or "gzip" in str(e).lower()):
                raise ValueError(
                    f"{name} is not valid gzip data ({e}): the channel says CompressionType Gzip; "
                    "set CompressionType None for uncompressed objects"
                ) from None
            raise


def _empty_dataset() -> ray.data.Dataset:
    import ray.data

    # ShardedByS3Key with more workers than objects: this worker reads nothing, like SageMaker.
    return ray.data.from_items([])


def pipe_dataset(
    channel: Channel,
    *,
    settings: S3Settings | None = None,
    num_workers: int = 1,
    rank: int = 0,
    epoch: int = 0,
    objects: list[ObjectInfo] | None = None,
    num_cpus: float = READ_TASK_CPUS,
) -> ray.data.Dataset:
    """A lazy Dataset streaming worker ``rank``'s objects of ``channel`` (all of them for
    FullyReplicated) in ``epoch``'s ShuffleConfig order; nothing is read until it is consumed.

    ``objects`` is the channel's full listing if the caller has it. S3 objects are read through
    ``settings.arrow_filesystem()``, which is pickled into every read task, so the endpoint and
    credentials reach every Ray process; local paths (``file://``) are read on the node that runs the
    read task, so use them on one node only."""
    import ray.data
    from pyarrow import fs as pafs

    settings = (settings or S3Settings()).resolve()
    mine = worker_objects(
        channel, num_workers=num_workers, rank=rank, epoch=epoch, settings=settings, objects=objects
    )
    if not mine:
        return _empty_dataset()
    if parse_uri(mine[0].uri).scheme == "s3":
        filesystem, paths = settings.arrow_filesystem(), [o.uri for o in mine]
    else:
        filesystem, paths = pafs.LocalFileSystem(), [o.key for o in mine]
    source = ChannelDatasource(
        paths,
        sizes=[o.size for o in mine],
        content_type=channel.content_type or DEFAULT_CONTENT_TYPE,
        gzip=channel.compression == "Gzip",
        filesystem=filesystem,
        uri_prefix="s3://" if isinstance(filesystem, pafs.S3FileSystem) else "",
    )
    # One object per read task: objects stream in parallel and blocks flow as soon as they decode.
    ds = ray.data.read_datasource(source, num_cpus=num_cpus, override_num_blocks=len(paths))
    ds.set_name(channel.name)
    return ds


class PipeEpochIterator(DataIterator):
    """A worker's Pipe stream of one channel that starts the next epoch on every pass.

    Every ``iter_batches`` (or ``materialize``, ``iter_rows``...) plans ``pipe_dataset`` for epoch
    ``first_epoch``, then ``first_epoch + 1``, and so on: with ShuffleConfig each pass reads the objects
    in a new order (and, for ShardedByS3Key, takes that epoch's share), as SageMaker reshuffles Pipe
    channels at the start of every epoch. Rows come out in object order (``preserve_order``), so the
    order is the ShuffleConfig order and the same seed gives the same rows in the same order.

    The epoch count lives in this object: each process that unpickles it (each Train worker's
    ``get_dataset_shard``) counts its own passes from ``first_epoch``. Planning a pass costs no listing:
    the listing is taken once (``objects``, or listed at the first pass)."""

    def __init__(
        self,
        channel: Channel,
        *,
        settings: S3Settings | None = None,
        num_workers: int = 1,
        rank: int = 0,
        first_epoch: int = 0,
        objects: list[ObjectInfo] | None = None,
        execution_options: ExecutionOptions | None = None,
    ):
        from ray.data import DataContext

        self.channel = channel
        self.num_workers = num_workers
        self.rank = rank
        self.next_epoch = first_epoch
        self._settings = (settings or S3Settings()).resolve()
        self._objects = objects
        options = copy.deepcopy(execution_options or DataContext.get_current().execution_options)
        # Without it read tasks deliver in completion order and the ShuffleConfig order is lost.
        options.preserve_order = True
        self._options = options
        self._current: DataIterator | None = None  # the latest pass's plan, for stats() and tags

    def __repr__(self) -> str:
        return f"PipeEpochIterator({self.channel.name!r}, rank={self.rank}, next_epoch={self.next_epoch})"

    def dataset(self, epoch: int) -> ray.data.Dataset:
        """This worker's stream of ``epoch``, planned but not read."""
        if self._objects is None:
            self._objects = list_objects(self.channel, self._settings)
        ds = pipe_dataset(
            self.channel,
            settings=self._settings,
            num_workers=self.num_workers,
            rank=self.rank,
            epoch=epoch,
            objects=self._objects,
        )
        ds.context.execution_options = copy.deepcopy(self._options)
        return ds

    def _to_ref_bundle_iterator(self) -> tuple[Any, Any, Any]:
        # DataIterator calls this once at the start of every pass: the pass takes the next epoch.
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        self._current = self.dataset(epoch).iterator()
        return self._current._to_ref_bundle_iterator()

    def stats(self) -> str:
        return self._current.stats() if self._current is not None else ""

    def schema(self) -> Any:
        # Planning a dataset to ask for its schema reads nothing and does not use up an epoch.
        return (self._current or self.dataset(self.next_epoch).iterator()).schema()

    def get_context(self) -> DataContext:
        if self._current is not None:
            return self._current.get_context()
        from ray.data import DataContext

        ctx = copy.deepcopy(DataContext.get_current())
        ctx.execution_options = copy.deepcopy(self._options)
        return ctx

    def _get_dataset_tag(self) -> dict[str, str | None]:
        if self._current is None:
            return {"dataset": f"{self.channel.name}_rank{self.rank}", "split_index": None}
        return self._current._get_dataset_tag()


def batch_from_numpy(batch: Mapping[str, np.ndarray]) -> Batch:
    """A ``Batch`` from one ``iter_batches(batch_format="numpy")`` batch of a pipe dataset: dense
    ``features`` as is, sparse ``indices``/``values``/``num_features`` back into a CSR matrix."""
    labels = np.asarray(batch["label"]) if "label" in batch else None
    if "features" in batch:
        return Batch(np.asarray(batch["features"]), labels)
    if "indices" not in batch:
        raise ValueError(f"not a pipe-dataset batch: columns {sorted(batch)}; expected features or indices")
    rows_idx, rows_val = batch["indices"], batch["values"]
    n = len(rows_idx)
    # List columns arrive as 2-D arrays when every row has the same length, else as object arrays.
    lengths = np.fromiter((len(r) for r in rows_idx), dtype=np.int64, count=n)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([np.asarray(r) for r in rows_idx]) if n else np.zeros(0, np.int64)
    values = np.concatenate([np.asarray(r) for r in rows_val]) if n else np.zeros(0, np.float32)
    width = int(np.max(batch["num_features"])) if n else 0
    return Batch(sp.csr_matrix((values, indices, indptr), shape=(n, width)), labels)


def batches_to_numpy(batches: Iterable[Mapping[str, np.ndarray]]) -> Batch:
    """Concatenate numpy batches of a pipe dataset (e.g. a Train worker's whole shard) into one
    ``Batch``: ``.features`` (ndarray or CSR) and ``.labels``."""
    parts = [batch_from_numpy(b) for b in batches]
    if not parts:
        return Batch(np.zeros((0, 0), np.float32), None)
    return Batch.concat(parts)
