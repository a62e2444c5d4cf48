"""``s3://`` storage through boto3 (listing, streaming reads, ETag-pinned transfers) and s3fs (range reads)."""

from __future__ import annotations

import io
import os
import shutil
from typing import Any, BinaryIO

from raymaker.io.storage.base import Storage, atomic_write_path
from raymaker.io.storage.s3_settings import S3Settings, s3_errors
from raymaker.io.storage.uri import ObjectInfo, StorageUri, parse_uri, relative_key

# Objects smaller than this are fetched with one GetObject pinned to the listed ETag; larger ones go
# through s3transfer's parallel ranged download (which pins every range to the ETag itself).
_MULTIPART_THRESHOLD = 8 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


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

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        # One ranged GetObject: s3fs's readahead file costs several requests for the same bytes.
        if end <= start:
            return b""
        u = self._parse(uri)
        with s3_errors(str(u)):
            try:
                body = self.client.get_object(Bucket=u.bucket, Key=u.key, Range=f"bytes={start}-{end - 1}")
            except self.client.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # start at or past the end
                raise
            return body["Body"].read()

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
