"""Local files: ``file://`` URIs and plain paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from raymaker.io.storage.base import Storage, atomic_write_path
from raymaker.io.storage.s3_settings import S3Settings
from raymaker.io.storage.uri import ObjectInfo, parse_uri

# ----------------------------------------------------------------------------------------- local


class LocalStorage(Storage):
    """``file://`` URIs and plain paths. A "prefix" is a directory (every file below it) or one file."""

    scheme = "file"
    remote = False

    def __init__(self, settings: S3Settings | None = None):
        del settings  # accepted so every storage has the same constructor

    @staticmethod
    def _path(uri: str) -> str:
        u = parse_uri(uri)
        if u.scheme != "file":
            raise ValueError(f"{uri!r} is not a local path or file:// URI")
        return u.path

    @staticmethod
    def _info(path: str, relative: str) -> ObjectInfo:
        st = os.stat(path)
        return ObjectInfo(
            uri=Path(path).as_uri(),
            key=path,
            relative=relative,
            size=st.st_size,
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        )

    def list(self, uri_prefix: str, *, allow_empty: bool = False) -> list[ObjectInfo]:
        root = self._path(uri_prefix)
        if os.path.isfile(root):
            return [self._info(root, os.path.basename(root))]
        if not os.path.isdir(root):
            if allow_empty:
                return []
            raise ValueError(f"no such file or directory: {root} ({uri_prefix}): check the path")
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path):
                    out.append(self._info(path, os.path.relpath(path, root).replace(os.sep, "/")))
        out.sort(key=lambda o: o.relative)
        if not out and not allow_empty:
            raise ValueError(f"no files under {root} ({uri_prefix}): check the path")
        return out

    def stat(self, uri: str) -> ObjectInfo:
        path = self._path(uri)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        return self._info(path, os.path.basename(path))

    def open(self, uri: str) -> BinaryIO:
        return open(self._path(uri), "rb")

    def open_seekable(self, uri: str, *, size: int | None = None, block_size: int = 1 << 20) -> BinaryIO:
        return open(self._path(uri), "rb")

    def download(
        self, uri: str, local_path: str | os.PathLike, *, size: int | None = None, etag: str | None = None
    ) -> None:
        with atomic_write_path(local_path) as tmp:
            shutil.copyfile(self._path(uri), tmp)

    def upload(self, local_path: str | os.PathLike, uri: str) -> None:
        with atomic_write_path(self._path(uri)) as tmp:
            shutil.copyfile(os.fspath(local_path), tmp)

    def put_bytes(self, uri: str, data: bytes) -> None:
        with atomic_write_path(self._path(uri)) as tmp, open(tmp, "wb") as f:
            f.write(data)
