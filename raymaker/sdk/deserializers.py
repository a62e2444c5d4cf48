"""Response deserializers named and behaving as the SageMaker Python SDK v2's (``sagemaker.deserializers``).

A deserializer names the ``Accept`` a predictor sends (``ACCEPT``, a tuple) and turns the response
body into Python objects. ``deserialize(stream, content_type)`` takes a file-like object with
``read()`` (botocore's ``StreamingBody`` or ``io.BytesIO``) and closes it after reading, as the SDK
does. Behaviour follows SDK v2's ``base_deserializers.py``, with two deliberate differences:
content types are compared without their parameters (``text/csv; charset=utf-8`` is CSV), and
``NumpyDeserializer`` does not unpickle object arrays unless ``allow_pickle=True`` is passed (loading
pickles from a network response can run arbitrary code).
"""

from __future__ import annotations

import abc
import codecs
import csv
import io
import json
from typing import Any

import numpy as np

from raymaker.io.recordio import read_records

__all__ = [
    "BaseDeserializer",
    "BytesDeserializer",
    "CSVDeserializer",
    "JSONDeserializer",
    "JSONLinesDeserializer",
    "NumpyDeserializer",
    "RecordDeserializer",
    "SimpleBaseDeserializer",
    "StreamDeserializer",
    "StringDeserializer",
]


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class BaseDeserializer(abc.ABC):
    """Turns a response body into Python objects; ``ACCEPT`` lists the content types it reads."""

    @abc.abstractmethod
    def deserialize(self, stream: Any, content_type: str) -> Any:
        """The object in ``stream`` (a readable binary file-like object) of type ``content_type``."""

    @property
    @abc.abstractmethod
    def ACCEPT(self) -> tuple[str, ...]:  # noqa: N802 - the SDK's name
        """The MIME types expected from the endpoint (sent as the Accept header)."""


class SimpleBaseDeserializer(BaseDeserializer):
    """A deserializer whose accepted type(s) are set at construction (``accept``: str or tuple)."""

    def __init__(self, accept: str | tuple[str, ...] = "*/*"):
        self.accept = accept

    @property
    def ACCEPT(self) -> tuple[str, ...]:  # noqa: N802 - the SDK's name
        return (self.accept,) if isinstance(self.accept, str) else tuple(self.accept)


class BytesDeserializer(SimpleBaseDeserializer):
    """The body as ``bytes``."""

    def deserialize(self, stream: Any, content_type: str) -> bytes:
        try:
            return stream.read()
        finally:
            stream.close()


class StringDeserializer(SimpleBaseDeserializer):
    """The body decoded to ``str``."""

    def __init__(self, encoding: str = "UTF-8", accept: str | tuple[str, ...] = "application/json"):
        super().__init__(accept)
        self.encoding = encoding

    def deserialize(self, stream: Any, content_type: str) -> str:
        try:
            return stream.read().decode(self.encoding)
        finally:
            stream.close()


class StreamDeserializer(SimpleBaseDeserializer):
    """(stream, content type) unread: the caller reads and closes the stream."""

    def deserialize(self, stream: Any, content_type: str) -> tuple[Any, str]:
        return stream, content_type


class CSVDeserializer(SimpleBaseDeserializer):
    """CSV text to a list of rows, each a list of strings (convert them as needed)."""

    def __init__(self, encoding: str = "utf-8", accept: str | tuple[str, ...] = "text/csv"):
        super().__init__(accept)
        self.encoding = encoding

    def deserialize(self, stream: Any, content_type: str) -> list[list[str]]:
        try:
            return list(csv.reader(stream.read().decode(self.encoding).splitlines()))
        finally:
            stream.close()


class JSONDeserializer(SimpleBaseDeserializer):
    """A JSON document to Python objects (e.g. ``{"predictions": [{"score": 0.87}, ...]}``)."""

    def __init__(self, accept: str | tuple[str, ...] = "application/json"):
        super().__init__(accept)

    def deserialize(self, stream: Any, content_type: str) -> Any:
        try:
            return json.load(codecs.getreader("utf-8")(stream))
        finally:
            stream.close()


class JSONLinesDeserializer(SimpleBaseDeserializer):
    """JSON lines to a list of Python objects, one per line."""

    def __init__(self, accept: str | tuple[str, ...] = "application/jsonlines"):
        super().__init__(accept)

    def deserialize(self, stream: Any, content_type: str) -> list[Any]:
        try:
            body = stream.read().decode("utf-8")
            # Blank lines (e.g. the trailing newline every line ends with) hold no value.
            return [json.loads(line) for line in body.splitlines() if line.strip()]
        finally:
            stream.close()


class NumpyDeserializer(SimpleBaseDeserializer):
    """``text/csv``, ``application/json`` or ``application/x-npy`` to a NumPy array (``dtype`` applies
    to CSV and JSON; ``.npy`` keeps its own)."""

    def __init__(
        self,
        dtype: Any = None,
        accept: str | tuple[str, ...] = "application/x-npy",
        allow_pickle: bool = False,
    ):
        super().__init__(accept)
        self.dtype = dtype
        self.allow_pickle = allow_pickle

    def deserialize(self, stream: Any, content_type: str) -> np.ndarray:
        mime = _mime(content_type)
        try:
            if mime == "text/csv":
                return np.genfromtxt(codecs.getreader("utf-8")(stream), delimiter=",", dtype=self.dtype)
            if mime == "application/json":
                return np.array(json.load(codecs.getreader("utf-8")(stream)), dtype=self.dtype)
            if mime == "application/x-npy":
                return np.load(io.BytesIO(stream.read()), allow_pickle=self.allow_pickle)
        finally:
            stream.close()
        raise ValueError(f"{type(self).__name__} cannot read content type {content_type}.")


class RecordDeserializer(SimpleBaseDeserializer):
    """RecordIO-protobuf to a list of ``aialgs.data.Record`` messages; built-in algorithms put their
    outputs in each record's ``label`` map, e.g. ``records[0].label["score"].float32_tensor.values``."""

    def __init__(self, accept: str | tuple[str, ...] = "application/x-recordio-protobuf"):
        super().__init__(accept)

    def deserialize(self, stream: Any, content_type: str) -> list[Any]:
        try:
            return read_records(stream)
        finally:
            stream.close()
