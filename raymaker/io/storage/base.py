"""The ``Storage`` interface every backend implements, and atomic local writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import BinaryIO, ClassVar

from raymaker.io.storage.s3_settings import S3Settings
from raymaker.io.storage.uri import _STORAGES, ObjectInfo, parse_uri

# ------------------------------------------------------------------------------------- interface


class Storage(ABC):
    """Read and write objects under one URI scheme."""

    scheme: ClassVar[str]
    # Remote objects are worth caching locally; local files are not.
    remote: ClassVar[bool]

    @abstractmethod
    def list(self, uri_prefix: str, *, allow_empty: bool = False) -> list[ObjectInfo]:
        """Objects under ``uri_prefix``, sorted by key; ValueError when none match (unless allow_empty)."""

    @abstractmethod
    def stat(self, uri: str) -> ObjectInfo:
        """One object's info; FileNotFoundError when it does not exist."""

    @abstractmethod
    def open(self, uri: str) -> BinaryIO:
        """A sequential binary stream over the object; nothing is downloaded up front."""

    @abstractmethod
    def open_seekable(self, uri: str, *, size: int | None = None, block_size: int = 1 << 20) -> BinaryIO:
        """A seekable file object that fetches only the byte ranges read (FastFile)."""

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as f:
            return f.read()

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer at its end)."""
        with self.open_seekable(uri) as f:
            f.seek(start)
            return f.read(max(end - start, 0))

    @abstractmethod
    def download(
        self, uri: str, local_path: str | os.PathLike, *, size: int | None = None, etag: str | None = None
    ) -> None:
        """Copy the object to ``local_path`` atomically (temp file + rename). Given the listed ``etag``,
        fail rather than copy a different version."""

    @abstractmethod
    def upload(self, local_path: str | os.PathLike, uri: str) -> None: ...

    @abstractmethod
    def put_bytes(self, uri: str, data: bytes) -> None: ...


def register_storage(scheme: str, factory: Callable[..., Storage]) -> None:
    """Register a Storage class for a URI scheme; ``factory(settings=...)`` builds it."""
    _STORAGES[scheme.lower()] = factory


def storage_for(uri: str | os.PathLike, settings: S3Settings | None = None) -> Storage:
    """The Storage for ``uri``'s scheme (``settings`` configure S3; ignored for local paths)."""
    return _STORAGES[parse_uri(uri).scheme](settings=settings)


def _temp_path_beside(path: str) -> str:
    """A unique temporary name in ``path``'s directory, so ``os.replace`` onto ``path`` is atomic."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path)[:40] + ".")
    os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    path = os.fspath(path)
    tmp = _temp_path_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
