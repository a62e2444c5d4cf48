"""File mode: copy this worker's share of a channel to local disk before training starts.

Objects are copied as stored. SageMaker only decompresses ``CompressionType: Gzip`` in Pipe mode (BOTO
``Channel.CompressionType``), so a File-mode channel of ``.gz`` objects arrives as ``.gz`` files and the
decoders handle the compression.

Remote objects go through a local cache keyed by (URI, ETag, size): a rerun over unchanged data links
the cached copies into place and downloads nothing. Cache entries are written to a temporary file and
renamed into place, so concurrent jobs sharing the cache never see a partial file; they are made
read-only because destinations are hard links to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from raymaker.io.channels import Channel, worker_objects
from raymaker.io.storage import ObjectInfo, S3Settings, Storage, atomic_write_path, storage_for


@dataclass
class DownloadReport:
    dest_dir: str
    objects: int = 0
    bytes_downloaded: int = 0  # fetched from storage
    bytes_from_cache: int = 0  # linked or copied from the local cache
    cache_hits: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)  # relative paths written under dest_dir


def default_cache_dir() -> str:
    home = os.environ.get("RAYMAKER_HOME") or os.path.join(os.path.expanduser("~"), ".raymaker")
    return os.path.join(home, "cache", "objects")


def download_channel(
    channel: Channel,
    dest_dir: str | os.PathLike,
    *,
    num_workers: int = 1,
    rank: int = 0,
    cache_dir: str | os.PathLike | None = None,
    max_concurrency: int = 16,
    settings: S3Settings | None = None,
    objects: list[ObjectInfo] | None = None,
) -> DownloadReport:
    """Copy worker ``rank``'s objects of ``channel`` to ``dest_dir/<relative key>`` in parallel.

    ``objects`` is the channel's full listing when the caller already has it (else it is listed here);
    the shard follows S3DataDistributionType and, with ShuffleConfig, epoch 0's assignment. The files
    stay put for the whole job: later epochs reorder them (``channels.pass_order``), never move them."""
    started = time.monotonic()
    dest_dir = os.path.abspath(os.fspath(dest_dir))
    mine = worker_objects(channel, num_workers=num_workers, rank=rank, settings=settings, objects=objects)
    targets = _targets(channel, mine, dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    report = DownloadReport(dest_dir=dest_dir)
    if not targets:  # ShardedByS3Key with more workers than objects: this worker has none
        report.seconds = time.monotonic() - started
        return report

    storage = storage_for(targets[0][0].uri, settings)
    cache = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()

    def fetch(obj: ObjectInfo, dest: str) -> bool:
        """True on a cache hit."""
        if storage.remote:
            return _fetch_cached(storage, obj, dest, cache)
        storage.download(obj.uri, dest)  # local source: a cache would only be a second copy
        return False

    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(targets)))) as pool:
        futures = [pool.submit(fetch, obj, dest) for obj, dest in targets]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
    for (obj, _), f in zip(targets, futures, strict=True):
        if f.result():
            report.cache_hits += 1
            report.bytes_from_cache += obj.size
        else:
            report.bytes_downloaded += obj.size
        report.files.append(obj.relative)
    report.objects = len(targets)
    report.seconds = time.monotonic() - started
    return report


def _targets(channel: Channel, objects: list[ObjectInfo], dest_dir: str) -> list[tuple[ObjectInfo, str]]:
    """(object, destination path) pairs; refuses paths escaping dest_dir and two objects on one path."""
    out: list[tuple[ObjectInfo, str]] = []
    by_path: dict[str, str] = {}
    for obj in objects:
        rel = obj.relative
        dest = os.path.normpath(os.path.join(dest_dir, rel))
        if os.path.isabs(rel) or not dest.startswith(dest_dir + os.sep):
            raise ValueError(
                f"channel {channel.name!r}: object {obj.uri} would be written outside the channel "
                f"directory (relative path {rel!r}); rename the object"
            )
        if dest in by_path:
            if by_path[dest] == obj.uri:
                continue  # listed twice (manifests may repeat a key): copy once
            raise ValueError(
                f"channel {channel.name!r}: {by_path[dest]} and {obj.uri} both map to {rel!r}; "
                "give the channel a prefix ending in '/'"
            )
        by_path[dest] = obj.uri
        out.append((obj, dest))
    return out


def cache_path(cache_dir: str, obj: ObjectInfo) -> str:
    """Where ``obj`` lives in the cache; a new ETag or size is a new entry."""
    digest = hashlib.sha256(f"{obj.uri}\n{obj.etag}\n{obj.size}".encode()).hexdigest()
    return os.path.join(cache_dir, digest[:2], digest)


def _fetch_cached(storage: Storage, obj: ObjectInfo, dest: str, cache_dir: str) -> bool:
    """Put ``obj`` at ``dest`` through the cache; True on a cache hit."""
    cached = cache_path(cache_dir, obj)
    hit = _is_cached(cached, obj.size) and obj.etag is not None  # no ETag: the cache cannot vouch for it
    if not hit:
        storage.download(obj.uri, cached, size=obj.size, etag=obj.etag)
        actual = os.path.getsize(cached)
        if actual != obj.size:
            os.unlink(cached)
            raise RuntimeError(
                f"{obj.uri}: got {actual} bytes, listed as {obj.size}: rerun once it is no longer being written"
            )
        os.chmod(cached, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    with atomic_write_path(dest) as tmp:
        os.unlink(tmp)
        try:
            os.link(cached, tmp)  # free and instant; the cache entry is read-only so it stays intact
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(cached, tmp)
    return hit


def _is_cached(path: str, size: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return os.path.getsize(path) == size
    return False
