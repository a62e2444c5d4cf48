"""Writing RecordIO-protobuf: the same bytes the SageMaker SDK and training toolkit write."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from raymaker.io.record_pb import Record
from raymaker.io.recordio.columns import _TENSOR_TYPES, _record_layout
from raymaker.io.recordio.framing import _frame_bytes, _write_recordio


def _resolve_type(dtype: np.dtype) -> str:
    # Mirrors the SDK: int64 -> Int32 (narrowed), float64 -> Float64, float32 -> Float32, else error.
    if dtype == np.dtype(int):
        return "Int32"
    if dtype == np.dtype(float):
        return "Float64"
    if dtype == np.dtype("float32"):
        return "Float32"
    raise ValueError(f"Unsupported dtype {dtype} on array")


def _tensor(value: Any, resolved: str) -> Any:
    return getattr(value, resolved.lower() + "_tensor")


def _check_labels(array: Any, labels: np.ndarray | None) -> str | None:
    if len(array.shape) != 2:
        raise ValueError("Array must be a Matrix")
    if labels is None:
        return None
    if len(labels.shape) != 1:
        raise ValueError("Labels must be a Vector")
    if labels.shape[0] not in array.shape:
        raise ValueError(f"Label shape {labels.shape} not compatible with array shape {array.shape}")
    return _resolve_type(labels.dtype)


def write_numpy_to_dense_tensor(file: BinaryIO, array: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Write each row of a 2-D array (and its label) as one dense Record, as the SageMaker SDK does."""
    label_type = _check_labels(array, labels)
    resolved = _resolve_type(array.dtype)
    n = array.shape[0]
    if n == 0:
        return
    fixed = resolved != "Int32" and label_type in (None, "Float32", "Float64")
    if not fixed:
        record = Record()
        for i, row in enumerate(array):
            record.Clear()
            _tensor(record.features["values"], resolved).values.extend(row)
            if labels is not None:
                _tensor(record.label["values"], label_type).values.extend([labels[i]])
            _write_recordio(file, record.SerializeToString())
        return
    # Fixed-width values: every record has the same bytes around its values. Serialize row 0 with
    # protobuf for the template, then paste all rows' value bytes into it at once.
    record = Record()
    _tensor(record.features["values"], resolved).values.extend(array[0])
    if labels is not None:
        _tensor(record.label["values"], label_type).values.extend([labels[0]])
    template = np.frombuffer(_frame_bytes(record.SerializeToString()), np.uint8)
    out = np.empty((n, template.size), np.uint8)
    out[:] = template
    values = {"features": array, "label": labels}
    layout = _record_layout(template, struct.unpack_from("<I", template, 4)[0])
    for map_name, _key, tensor, ((start, nbytes), _, _) in layout.columns:
        column = np.ascontiguousarray(values[map_name][:n], dtype=_TENSOR_TYPES[tensor][1])
        out[:, start : start + nbytes] = column.view(np.uint8).reshape(n, -1)
    file.write(out.tobytes())


def write_spmatrix_to_sparse_tensor(file: BinaryIO, matrix: Any, labels: np.ndarray | None = None) -> None:
    """Write each row of a sparse matrix as one sparse Record (values, keys, shape), as the SDK does."""
    if not sp.issparse(matrix):
        raise TypeError("Array must be sparse")
    label_type = _check_labels(matrix, labels)
    resolved = _resolve_type(matrix.dtype)
    csr = matrix.tocsr()
    n_rows, n_cols = csr.shape
    record = Record()
    for i in range(n_rows):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        record.Clear()
        tensor = _tensor(record.features["values"], resolved)
        tensor.values.extend(csr.data[lo:hi])
        tensor.keys.extend(csr.indices[lo:hi].astype(np.uint64))
        if labels is not None:
            _tensor(record.label["values"], label_type).values.extend([labels[i]])
        tensor.shape.extend([n_cols])
        _write_recordio(file, record.SerializeToString())
