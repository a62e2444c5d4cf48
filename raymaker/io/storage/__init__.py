"""Object storage behind one small interface: ``s3://`` URIs and ``file://`` URIs / plain local paths.

``storage_for(uri)`` picks the implementation from a registry keyed by URI scheme (Metaflow's datastore
pattern), so another backend is one ``Storage`` subclass and one ``register_storage`` call.

S3 goes through boto3 (listing, streaming, transfers), and ``S3Settings`` also builds the s3fs and
pyarrow filesystems that lazy reads and Ray Data use, all pointed at the same endpoint, so any
S3-compatible server works. botocore errors are translated into messages that say what to change.
"""

from raymaker.io.storage.base import Storage, atomic_write_path, register_storage, storage_for
from raymaker.io.storage.local import LocalStorage
from raymaker.io.storage.s3 import S3Storage
from raymaker.io.storage.s3_settings import ENDPOINT_ENV_VARS, S3Settings, s3_errors, translate_s3_error
from raymaker.io.storage.uri import ObjectInfo, StorageUri, parse_uri, relative_key

register_storage("s3", S3Storage)
register_storage("file", LocalStorage)

__all__ = [
    "ENDPOINT_ENV_VARS",
    "LocalStorage",
    "ObjectInfo",
    "S3Settings",
    "S3Storage",
    "Storage",
    "StorageUri",
    "atomic_write_path",
    "parse_uri",
    "register_storage",
    "relative_key",
    "s3_errors",
    "storage_for",
    "translate_s3_error",
]
