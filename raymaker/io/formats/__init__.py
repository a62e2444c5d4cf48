"""Format registry: one module per content type family, each exposing ``read`` and ``iter_batches``.

``get_format("text/csv;label_size=0")`` returns the format and the content-type parameters; callers
then do ``fmt.read(source, **params)`` (whole input to one Batch) or ``fmt.iter_batches(stream, ...)``
(streaming, for Pipe mode). Every malformed input raises ``DataFormatError`` (a ``ValueError``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from raymaker.io.batch import Batch, Source


class Format(Protocol):
    CONTENT_TYPES: tuple[str, ...]

    def read(self, source: Source, **params: Any) -> Batch: ...

    def iter_batches(self, source: Source, **params: Any) -> Iterator[Batch]: ...


# content type (lower case, no parameters) -> module under raymaker.io.formats / raymaker.io
_REGISTRY: dict[str, str] = {
    "application/x-recordio-protobuf": "raymaker.io.recordio",
    "text/csv": "raymaker.io.formats.csv",
    "text/libsvm": "raymaker.io.formats.libsvm",
    "text/x-libsvm": "raymaker.io.formats.libsvm",
    "application/jsonlines": "raymaker.io.formats.json",
    "application/json": "raymaker.io.formats.json",
    "application/x-parquet": "raymaker.io.formats.parquet",
    "image/jpeg": "raymaker.io.formats.image",
    "image/png": "raymaker.io.formats.image",
    "application/x-image": "raymaker.io.formats.image",
}


@dataclass(frozen=True)
class ContentType:
    mime: str
    params: dict[str, str]


def parse_content_type(content_type: str) -> ContentType:
    """``"text/csv; label_size=0"`` -> ContentType("text/csv", {"label_size": "0"})."""
    mime, *rest = [p.strip() for p in content_type.split(";")]
    params = {}
    for p in rest:
        if not p:
            continue
        k, sep, v = p.partition("=")
        if not sep:
            raise ValueError(f"content type {content_type!r}: parameter {p!r} is not key=value")
        params[k.strip().lower()] = v.strip().strip('"')
    return ContentType(mime.lower(), params)


def supported_content_types() -> list[str]:
    return sorted(_REGISTRY)


def get_format(content_type: str) -> tuple[Format, dict[str, str]]:
    ct = parse_content_type(content_type)
    module = _REGISTRY.get(ct.mime)
    if module is None:
        raise ValueError(
            f"unsupported content type {ct.mime!r}; supported: {', '.join(supported_content_types())}"
        )
    return importlib.import_module(module), ct.params
