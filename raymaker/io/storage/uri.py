"""Storage URIs (``s3://bucket/key``, ``file://`` URIs, plain paths) and object listings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# 3-63 chars of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# URI scheme -> Storage factory; filled by register_storage (parse_uri needs to know the schemes).
_STORAGES: dict[str, Callable[..., Any]] = {}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)


# --------------------------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class StorageUri:
    """A parsed storage URI. For ``s3``: bucket and key (key may be empty). For ``file``: ``key`` is the
    absolute local path and ``bucket`` is empty."""

    scheme: str
    bucket: str
    key: str

    @property
    def path(self) -> str:
        """The local path (``file`` scheme)."""
        return self.key

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return Path(self.key).as_uri()


def parse_uri(uri: str | os.PathLike) -> StorageUri:
    """Parse ``s3://bucket/key``, ``file:///abs/path`` or a plain local path; ValueError says what is wrong."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"empty storage URI {uri!r}: expected s3://bucket/key, file:///path or a local path")
    m = _SCHEME_RE.match(uri)
    # A one-letter "scheme" is a Windows drive; "name:thing" without '//' is a local file name, unless
    # the name is a scheme we know (then "s3:/bucket" is a typo worth reporting).
    if m and len(m.group(1)) > 1 and (m.group(1).lower() in _STORAGES or m.group(2).startswith("//")):
        scheme = m.group(1).lower()
        if scheme == "s3":
            return _parse_s3(uri)
        if scheme == "file":
            return _parse_file(uri)
        supported = ", ".join(f"{s}://" for s in sorted(_STORAGES))
        raise ValueError(
            f"unsupported storage scheme {scheme!r} in {uri!r}: supported are {supported} and local paths"
        )
    return StorageUri("file", "", os.path.abspath(os.path.expanduser(uri)))


def _parse_s3(uri: str) -> StorageUri:
    if not uri.startswith("s3://"):
        raise ValueError(f"malformed S3 URI {uri!r}: expected s3://bucket/key")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket name: expected s3://bucket/key")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid bucket name {bucket!r} in {uri!r}: bucket names are 3-63 characters of lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit"
        )
    return StorageUri("s3", bucket, key)


def _parse_file(uri: str) -> StorageUri:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URI {uri!r} names host {parsed.netloc!r}: use file:///absolute/path (three slashes)"
        )
    path = unquote(parsed.path)
    if not path.startswith("/"):
        raise ValueError(f"file URI {uri!r} has no absolute path: use file:///absolute/path")
    return StorageUri("file", "", os.path.normpath(path))


# ------------------------------------------------------------------------------------- object info


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object.

    uri: full URI. key: the S3 key, or the absolute local path. relative: the path a File-mode copy gets
    under the channel directory. etag: S3 ETag without quotes; for local files a cheap fingerprint of
    mtime and size (not a content hash)."""

    uri: str
    key: str
    relative: str
    size: int
    etag: str | None


def relative_key(prefix: str, key: str) -> str:
    """Where an object listed under an S3Prefix lands below the channel directory.

    A prefix naming a folder (``train/`` or ``train`` with keys ``train/...``) is stripped; a partial name
    (``train`` matching ``train-01/a``) or an exact key keeps the part after the prefix's last '/'."""
    if not prefix or prefix.endswith("/"):
        base = prefix
    elif key.startswith(prefix + "/"):
        base = prefix + "/"
    else:
        base = prefix.rpartition("/")[0] + "/" if "/" in prefix else ""
    return key[len(base) :]
