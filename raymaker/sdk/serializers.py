"""Request serializers named and behaving as the SageMaker Python SDK v2's (``sagemaker.serializers``).

A serializer turns what a user passes to ``Predictor.predict`` into an InvokeEndpoint body and names
its ``Content-Type``. Behaviour follows SDK v2's ``base_serializers.py``: ``CSVSerializer`` writes a
1-D sequence as one line and a 2-D one as one line per row (no trailing newline), strings and
file-like objects pass through; ``JSONSerializer`` converts NumPy arrays with ``tolist``;
``RecordSerializer`` returns a ``BytesIO`` of dense RecordIO-protobuf records, as the SDK does.
One extension: JSON serializers also accept NumPy arrays and scalars nested inside lists and dicts.
"""

from __future__ import annotations

import abc
import csv
import io
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

from raymaker.io.recordio import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

__all__ = [
    "BaseSerializer",
    "CSVSerializer",
    "IdentitySerializer",
    "JSONLinesSerializer",
    "JSONSerializer",
    "LibSVMSerializer",
    "NumpySerializer",
    "RecordSerializer",
    "SimpleBaseSerializer",
]


class BaseSerializer(abc.ABC):
    """Turns data into a request body; ``CONTENT_TYPE`` is sent as the request's Content-Type."""

    @abc.abstractmethod
    def serialize(self, data: Any) -> Any:
        """The request body for ``data`` (str, bytes or a binary file-like object)."""

    @property
    @abc.abstractmethod
    def CONTENT_TYPE(self) -> str:  # noqa: N802 - the SDK's name
        """The MIME type of the serialized data."""


class SimpleBaseSerializer(BaseSerializer):
    """A serializer whose content type is set at construction (``content_type``) and may be changed."""

    def __init__(self, content_type: str = "application/json"):
        if not isinstance(content_type, str):
            raise ValueError(
                "content_type must be a string naming the MIME type of the request data, "
                f"e.g. 'application/json' or 'text/csv'; got {content_type!r}"
            )
        self.content_type = content_type

    @property
    def CONTENT_TYPE(self) -> str:  # noqa: N802 - the SDK's name
        return self.content_type


def _is_sequence_like(data: Any) -> bool:
    return hasattr(data, "__iter__") and hasattr(data, "__getitem__")


class CSVSerializer(SimpleBaseSerializer):
    """Lists, NumPy arrays and pandas DataFrames to header-less CSV text."""

    def __init__(self, content_type: str = "text/csv"):
        super().__init__(content_type)

    def serialize(self, data: Any) -> Any:
        """One line for a flat sequence, one line per row for a 2-D array or a list of rows; a string
        passes through, a file-like object is read. ValueError for empty rows or unknown types."""
        if hasattr(data, "read"):
            return data.read()
        if _is_dataframe(data):
            return data.to_csv(header=False, index=False)
        # Like the SDK: only mutable sequences (lists, arrays) of sequences are several rows.
        rows = _is_sequence_like(data) and hasattr(data, "__setitem__")
        if rows and len(data) > 0 and _is_sequence_like(data[0]):
            return "\n".join(self._serialize_row(row) for row in data)
        return self._serialize_row(data)

    @staticmethod
    def _serialize_row(data: Any) -> str:
        if isinstance(data, str):
            return data
        if isinstance(data, np.ndarray):
            data = data.ravel()
        if hasattr(data, "__len__"):
            if len(data) == 0:
                raise ValueError("Cannot serialize empty array")
            out = io.StringIO()
            csv.writer(out, delimiter=",").writerow(data)
            return out.getvalue().rstrip("\r\n")
        raise ValueError(f"Unable to handle input format: {type(data)}")


def _is_dataframe(data: Any) -> bool:
    # Duck-typed so pandas is not imported (or required) just to check.
    return type(data).__name__ == "DataFrame" and hasattr(data, "to_csv")


def _json_default(obj: Any) -> Any:
    """NumPy values nested in lists/dicts, which ``json`` cannot encode by itself."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class JSONSerializer(SimpleBaseSerializer):
    """Python objects and NumPy arrays to a JSON document."""

    def serialize(self, data: Any) -> Any:
        """``json.dumps`` of ``data`` (arrays via ``tolist``); a file-like object is read."""
        if isinstance(data, dict):
            return json.dumps(
                {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()},
                default=_json_default,
            )
        if hasattr(data, "read"):
            return data.read()
        if isinstance(data, np.ndarray):
            return json.dumps(data.tolist())
        return json.dumps(data, default=_json_default)


class JSONLinesSerializer(SimpleBaseSerializer):
    """An iterable of JSON values to JSON lines (one value per line, no trailing newline)."""

    def __init__(self, content_type: str = "application/jsonlines"):
        super().__init__(content_type)

    def serialize(self, data: Any) -> Any:
        """A string passes through, a file-like object is read, an iterable gives one line per item."""
        if isinstance(data, str):
            return data
        if hasattr(data, "read"):
            return data.read()
        if isinstance(data, Iterable):
            return "\n".join(json.dumps(item, default=_json_default) for item in data)
        raise ValueError(f"Object of type {type(data)} is not JSON Lines serializable.")


class NumpySerializer(SimpleBaseSerializer):
    """Arrays (or lists, converted with ``dtype``) to the ``.npy`` format."""

    def __init__(self, dtype: Any = None, content_type: str = "application/x-npy"):
        super().__init__(content_type)
        self.dtype = dtype

    def serialize(self, data: Any) -> Any:
        """``.npy`` bytes; a file-like object is assumed to hold ``.npy`` data already and is read."""
        if isinstance(data, np.ndarray):
            if data.size == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(data)
        if isinstance(data, list):
            if len(data) == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(np.array(data, self.dtype))
        if hasattr(data, "read"):
            return data.read()
        return self._serialize_array(np.array(data))

    @staticmethod
    def _serialize_array(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()


class IdentitySerializer(SimpleBaseSerializer):
    """Sends data unchanged (e.g. image bytes) with the given content type."""

    def __init__(self, content_type: str = "application/octet-stream"):
        super().__init__(content_type)

    def serialize(self, data: Any) -> Any:
        return data


class LibSVMSerializer(SimpleBaseSerializer):
    """Text already in LIBSVM format (``label index:value ...``): a string or a file-like object."""

    def __init__(self, content_type: str = "text/libsvm"):
        super().__init__(content_type)

    def serialize(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if hasattr(data, "read"):
            return data.read()
        raise ValueError(f"Unable to handle input format: {type(data)}")


class RecordSerializer(SimpleBaseSerializer):
    """A NumPy array to RecordIO-protobuf: one dense ``Record`` per row (values under
    ``features["values"]``), written as the SageMaker SDK writes it. Also takes a SciPy sparse matrix
    (one sparse Record per row), which the SDK does not."""

    def __init__(self, content_type: str = "application/x-recordio-protobuf"):
        super().__init__(content_type)

    def serialize(self, data: Any) -> io.BytesIO:
        """A ``BytesIO`` positioned at 0, as the SDK returns (boto3 accepts it as a Body). A 1-D array
        is one row; more than 2 dimensions is a ValueError. float32 arrays give the Float32 tensors
        most built-ins require; float64 gives Float64, int64 Int32 (the SDK's type mapping)."""
        buffer = io.BytesIO()
        if sp.issparse(data):
            write_spmatrix_to_sparse_tensor(buffer, data)
        else:
            data = np.asarray(data)
            if data.ndim == 1:
                data = data.reshape(1, data.shape[0])
            if data.ndim != 2:
                raise ValueError(f"Expected a 1D or 2D array, but got a {data.ndim}D array instead.")
            write_numpy_to_dense_tensor(buffer, data)
        buffer.seek(0)
        return buffer
