"""S3 endpoint, region and credentials, resolved once into a picklable value that travels into every
Ray process; the boto3, s3fs and pyarrow clients built from it; botocore errors translated into
messages that say what to change."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from raymaker.io.storage.uri import parse_uri

# Endpoint settings, most specific first; AWS_ENDPOINT_URL(_S3) are the AWS SDKs' own names, read here
# too because s3fs and pyarrow do not all honour them.
ENDPOINT_ENV_VARS = ("RAYMAKER_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


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
