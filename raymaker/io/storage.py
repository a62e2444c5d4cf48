"""Object storage behind one small interface: ``s3://`` URIs and ``file://`` URIs / plain local paths.

``storage_for(uri)`` picks the implementation from a registry keyed by URI scheme (Metaflow's datastore
pattern), so another backend is one ``Storage`` subclass and one ``register_storage`` call.

S3 goes through boto3 (listing, streaming, transfers), and ``S3Settings`` also builds the s3fs and
pyarrow filesystems that lazy reads and Ray Data use, all pointed at the same endpoint, so any
S3-compatible server works. botocore errors are translated into messages that say what to change.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import unquote, urlparse

import boto3
import botocore.config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

# Endpoint settings, most specific first; AWS_ENDPOINT_URL(_S3) are the AWS SDKs' own names, read here
# too because s3fs and pyarrow do not all honour them.
ENDPOINT_ENV_VARS = ("RAYMAKER_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# 3-63 chars of lowercase letters, digits, '.' and '-', starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(.*)$", re.DOTALL)

# Objects smaller than this are fetched with one GetObject pinned to the listed ETag; larger ones go
# through s3transfer's parallel ranged download (which pins every range to the ETag itself).
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


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


# ------------------------------------------------------------------------------------- S3 settings


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and who we are. ``resolve()`` fills the blanks and returns a plain picklable value
    that travels into every process Ray starts, so all of them talk to the same endpoint.

    Precedence: explicit fields > RAYMAKER_S3_ENDPOINT_URL > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL >
    boto3 defaults; region and credentials come from boto3's usual chain (env vars, config files,
    instance roles). Resolved credentials are frozen: temporary ones are not refreshed in workers."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    resolved: bool = field(default=False, compare=False)

    def resolve(self) -> S3Settings:
        if self.resolved:
            return self
        if bool(self.access_key) != bool(self.secret_key):
            raise ValueError("S3Settings: give both access_key and secret_key, or neither")
        endpoint = self.endpoint_url or next(
            (os.environ[v] for v in ENDPOINT_ENV_VARS if os.environ.get(v)), None
        )
        session = boto3.session.Session()
        access_key, secret_key, token = self.access_key, self.secret_key, self.session_token
        if not access_key:
            creds = session.get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                access_key, secret_key, token = frozen.access_key, frozen.secret_key, frozen.token
        # S3-compatible servers ignore the region but SigV4 needs one to sign.
        region = self.region or session.region_name or ("us-east-1" if endpoint else None)
        return S3Settings(endpoint, region, access_key, secret_key, token, resolved=True)

    def boto3_client(self) -> Any:
        """A boto3 S3 client (thread-safe; cached per settings within a process)."""
        return _boto3_client(self.resolve())

    def s3fs(self) -> Any:
        """An ``s3fs.S3FileSystem`` on the same endpoint and credentials."""
        import s3fs

        s = self.resolve()
        return s3fs.S3FileSystem(
            key=s.access_key,
            secret=s.secret_key,
            token=s.session_token,
            endpoint_url=s.endpoint_url,
            client_kwargs={"region_name": s.region} if s.region else {},
        )

    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs.S3FileSystem`` on the same endpoint and credentials (for Ray Data reads)."""
        from pyarrow import fs

        s = self.resolve()
        kwargs: dict[str, Any] = {}
        if s.endpoint_url:
            p = urlparse(s.endpoint_url)
            kwargs["endpoint_override"] = p.netloc + p.path.rstrip("/")
            kwargs["scheme"] = p.scheme or "https"
        if s.region:
            kwargs["region"] = s.region
        if s.access_key:
            kwargs.update(access_key=s.access_key, secret_key=s.secret_key, session_token=s.session_token)
        return fs.S3FileSystem(**kwargs)


_CLIENT_LOCK = threading.Lock()


def _boto3_client(s: S3Settings) -> Any:
    # Transfer threads ask for the client at the same moment; build it once, under a lock.
    with _CLIENT_LOCK:
        return _new_boto3_client(s)


@functools.lru_cache(maxsize=16)
def _new_boto3_client(s: S3Settings) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        aws_session_token=s.session_token,
        region_name=s.region,
    )
    # File mode runs many transfers at once; the default pool of 10 would serialise them.
    config = botocore.config.Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})
    return session.client("s3", endpoint_url=s.endpoint_url, config=config)


# ----------------------------------------------------------------------------------- S3 errors

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}


def translate_s3_error(exc: Exception, uri: str) -> Exception:
    """A user-facing exception for a botocore error about ``uri`` (the caller raises it ``from exc``)."""
    if isinstance(exc, NoCredentialsError):
        return PermissionError(
            f"no AWS credentials found for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or pass S3Settings(access_key=..., secret_key=...)"
        )
    if isinstance(exc, EndpointConnectionError):
        return ConnectionError(
            f"cannot reach the S3 endpoint for {uri} ({exc}): check RAYMAKER_S3_ENDPOINT_URL / AWS_ENDPOINT_URL"
        )
    if not isinstance(exc, ClientError):
        return exc
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = err.get("Message") or ""
    detail = f"{code}: {message}" if message else code
    if code == "NoSuchBucket":
        bucket = err.get("BucketName") or _bucket_of(uri)
        return ValueError(f"bucket {bucket!r} does not exist ({uri})")
    if code in ("NoSuchKey", "404", "NotFound"):
        return FileNotFoundError(f"no such S3 object: {uri}")
    if code in _CREDENTIAL_CODES:
        return PermissionError(
            f"S3 refused the credentials used for {uri} ({detail}): check the AWS credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or S3Settings)"
        )
    if code in _DENIED_CODES:
        return PermissionError(
            f"access denied to {uri} ({detail}): check the AWS credentials and that they may read "
            "(s3:ListBucket, s3:GetObject) or write (s3:PutObject) this location"
        )
    if code in ("PreconditionFailed", "412"):
        return RuntimeError(
            f"{uri} changed while it was being read: rerun once it is no longer being written"
        )
    return OSError(f"S3 request for {uri} failed ({detail})")


def _bucket_of(uri: str) -> str:
    with contextlib.suppress(ValueError):
        return parse_uri(uri).bucket
    return uri


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Translate botocore errors raised inside the block (see ``translate_s3_error``)."""
    try:
        yield
    except (ClientError, NoCredentialsError, EndpointConnectionError) as exc:
        raise translate_s3_error(exc, uri) from exc


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


_STORAGES: dict[str, Callable[..., Storage]] = {}


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


# -------------------------------------------------------------------------------------------- S3


class S3Storage(Storage):
    scheme = "s3"
    remote = True

    def __init__(self, settings: S3Settings | None = None):
        self.settings = (settings or S3Settings()).resolve()

    @property
    def client(self) -> Any:
        return self.settings.boto3_client()

    def _parse(self, uri: str) -> StorageUri:
        u = parse_uri(uri)
        if u.scheme != "s3":
            raise ValueError(f"{uri!r} is not an s3:// URI")
        return u

    def list(self, uri_prefix: str, *, allow_empty: bool = False) -> list[ObjectInfo]:
        u = self._parse(uri_prefix)
        out: list[ObjectInfo] = []
        with s3_errors(str(u)):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=u.bucket, Prefix=u.key):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):  # zero-byte "folder" markers made by consoles are not data
                        continue
                    out.append(
                        ObjectInfo(
                            uri=f"s3://{u.bucket}/{key}",
                            key=key,
                            relative=relative_key(u.key, key),
                            size=int(obj["Size"]),
                            etag=obj.get("ETag", "").strip('"') or None,
                        )
                    )
        if not out and not allow_empty:
            raise ValueError(f"no objects under {u}: check the S3Uri")
        return out

    def stat(self, uri: str) -> ObjectInfo:
        u = self._parse(uri)
        with s3_errors(str(u)):
            head = self.client.head_object(Bucket=u.bucket, Key=u.key)
        return ObjectInfo(
            uri=str(u),
            key=u.key,
            relative=u.key.rpartition("/")[2],
            size=int(head["ContentLength"]),
            etag=head.get("ETag", "").strip('"') or None,
        )

    def open(self, uri: str) -> BinaryIO:
        u = self._parse(uri)
        with s3_errors(str(u)):
            body = self.client.get_object(Bucket=u.bucket, Key=u.key)["Body"]
        return io.BufferedReader(_BodyReader(body, str(u)), buffer_size=_COPY_CHUNK)

    def open_seekable(self, uri: str, *, size: int | None = None, block_size: int = 1 << 20) -> BinaryIO:
        u = self._parse(uri)
        # readahead keeps sequential reads fast while a seek + small read fetches only about one block.
        with s3_errors(str(u)):
            return self.settings.s3fs().open(
                f"{u.bucket}/{u.key}", "rb", block_size=block_size, cache_type="readahead", size=size
            )

    def read_bytes(self, uri: str) -> bytes:
        u = self._parse(uri)
        with s3_errors(str(u)):
            return self.client.get_object(Bucket=u.bucket, Key=u.key)["Body"].read()

    def download(
        self, uri: str, local_path: str | os.PathLike, *, size: int | None = None, etag: str | None = None
    ) -> None:
        u = self._parse(uri)
        local_path = os.fspath(local_path)
        with s3_errors(str(u)):
            if size is not None and size < _MULTIPART_THRESHOLD:
                kwargs = {"IfMatch": f'"{etag}"'} if etag else {}
                body = self.client.get_object(Bucket=u.bucket, Key=u.key, **kwargs)["Body"]
                with atomic_write_path(local_path) as tmp, open(tmp, "wb") as f, body:
                    shutil.copyfileobj(body, f, _COPY_CHUNK)
                return
            from boto3.s3.transfer import TransferConfig, create_transfer_manager

            os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
            subscribers = [_KnownObject(size, etag)] if size is not None and etag else None
            with create_transfer_manager(self.client, TransferConfig(max_concurrency=8)) as manager:
                # s3transfer writes a temp file and renames it into place.
                manager.download(u.bucket, u.key, local_path, subscribers=subscribers).result()

    def upload(self, local_path: str | os.PathLike, uri: str) -> None:
        u = self._parse(uri)
        with s3_errors(str(u)):
            self.client.upload_file(os.fspath(local_path), u.bucket, u.key)

    def put_bytes(self, uri: str, data: bytes) -> None:
        u = self._parse(uri)
        with s3_errors(str(u)):
            self.client.put_object(Bucket=u.bucket, Key=u.key, Body=data)


class _BodyReader(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so ``open`` returns an ordinary buffered binary file
    (readline, peek, ``with`` yielding the same object) while still streaming."""

    def __init__(self, body: Any, name: str):
        self._body = body
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _KnownObject:
    """s3transfer subscriber that supplies size and ETag from the listing: no HeadObject per object, and
    every ranged GET carries IfMatch, so a copy is never a mix of two versions."""

    def __init__(self, size: int, etag: str):
        self.size, self.etag = size, etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        future.meta.provide_object_etag(f'"{self.etag}"')

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        pass

    def on_done(self, future: Any, **kwargs: Any) -> None:
        pass


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


register_storage("s3", S3Storage)
register_storage("file", LocalStorage)
