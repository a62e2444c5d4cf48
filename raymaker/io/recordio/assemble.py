"""Turning located fields into arrays: dense matrices, CSR matrices and label vectors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from raymaker.io.batch import DataFormatError
from raymaker.io.recordio.columns import _BYTE, _BYTES_FIELD, _TENSOR_TYPES, _Column, _Span
from raymaker.io.recordio.framing import _Frames


def _gather(
    buf: np.ndarray, span: _Span, rows: np.ndarray | None = None, dtype: np.dtype = _BYTE
) -> np.ndarray:
    """Concatenate the bytes of every span (ragged gather, no per-record Python). The result is raw
    bytes, or already ``dtype`` when records are evenly spaced (one strided, typed copy)."""
    if span.data is not None and rows is None:
        return span.data.reshape(-1)
    start, nbytes = span.start, span.nbytes
    if rows is not None:
        start, nbytes = start[rows], nbytes[rows]
    width = int(nbytes[0]) if nbytes.size else 0
    if width and (span.step and rows is None or (nbytes == width).all()):
        step = span.step if rows is None else 0
        if not step:
            diffs = np.diff(start)
            if diffs.size and diffs[0] >= width and (diffs == diffs[0]).all():
                step = int(diffs[0])
        if step:  # evenly spaced: one strided, typed copy
            item = dtype.itemsize if width % dtype.itemsize == 0 else 1
            view = np.ndarray(
                (start.size, width // item),
                dtype if item > 1 else np.uint8,
                buffer=buf,
                offset=int(start[0]),
                strides=(step, item),
            )
            return view.copy().reshape(-1)
        return buf[start[:, None] + np.arange(width)].reshape(-1)
    total = int(nbytes.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    ends = np.cumsum(nbytes)
    idx = np.arange(total) + np.repeat(start - (ends - nbytes), nbytes)
    return buf[idx]


def _decode_varint_stream(stream: np.ndarray) -> np.ndarray:
    """Decode back-to-back varints (a packed repeated field) into uint64, vectorized."""
    if stream.size == 0:
        return np.zeros(0, np.uint64)
    last = stream < 0x80
    if not last[-1]:
        raise DataFormatError("corrupt payload: packed varint field ends mid-number")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > 10:
        raise DataFormatError("corrupt payload: varint longer than 10 bytes")
    # One pass per byte position (varints are short), each over the numbers that long.
    value = (stream[starts] & 0x7F).astype(np.uint64)
    live = np.flatnonzero(lengths > 1)
    for k in range(1, longest):
        value[live] |= (stream[starts[live] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        live = live[lengths[live] > k + 1]
    return value


def _varint_counts(stream: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
    ends = np.concatenate([[0], np.cumsum(stream < 0x80)])
    bounds = np.concatenate([[0], np.cumsum(nbytes)])
    return ends[bounds[1:]] - ends[bounds[:-1]]


def _values(buf: np.ndarray, col: _Column, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """(all values concatenated, count per record)."""
    _, dtype, width = _TENSOR_TYPES[col.tensor]
    raw = _gather(buf, col.values, rows, dtype if width else np.dtype(np.uint8))
    nbytes = col.values.nbytes if rows is None else col.values.nbytes[rows]
    if width:
        if (nbytes % width).any():
            raise DataFormatError(f"corrupt payload: {dtype.name} values not a multiple of {width} bytes")
        return raw.view(np.uint8).view(dtype) if raw.dtype != dtype else raw, nbytes // width
    return _decode_varint_stream(raw).view(np.int64).astype(np.int32), _varint_counts(raw, nbytes)


def _copied_dense(col: _Column) -> np.ndarray | None:
    """The (records, values) array already copied out for uniform dense records, if any."""
    if col.values.data is not None and not col.keys.nbytes[0] and not col.shape.nbytes[0]:
        return col.values.data
    return None


def _assemble_features(buf: np.ndarray, col: _Column, fr: _Frames, name: str):
    n = col.present.size
    if col.tensor == _BYTES_FIELD:
        raise DataFormatError(
            "features hold Bytes values, which decode() cannot put in a matrix: use read_records()",
            source=name,
        )
    if (dense := _copied_dense(col)) is not None:
        return dense
    missing = np.flatnonzero(~col.present)
    if missing.size:
        raise DataFormatError('record has no features["values"]', source=name, where=_where(fr, missing[0]))
    sparse = (col.keys.nbytes > 0) | (col.shape.nbytes > 0)
    values, counts = _values(buf, col)
    if not sparse.any():
        width = int(counts[0]) if n else 0
        odd = np.flatnonzero(counts != width)
        if odd.size:
            i = odd[0]
            raise DataFormatError(
                f"dense records differ in length: record 0 has {width} values, record {i} has {counts[i]}",
                source=name,
                where=_where(fr, i),
            )
        return values.reshape(n, width)
    if not sparse.all():
        i = np.flatnonzero(~sparse)[0]
        raise DataFormatError(
            "records mix dense and sparse features (keys/shape missing)", source=name, where=_where(fr, i)
        )
    keys_raw = _gather(buf, col.keys)
    keys = _decode_varint_stream(keys_raw)
    key_counts = _varint_counts(keys_raw, col.keys.nbytes)
    bad = np.flatnonzero(key_counts != counts)
    if bad.size:
        i = bad[0]
        raise DataFormatError(
            f"sparse record has {counts[i]} values but {key_counts[i]} keys", source=name, where=_where(fr, i)
        )
    shape_raw = _gather(buf, col.shape)
    dims = _decode_varint_stream(shape_raw)
    dim_counts = _varint_counts(shape_raw, col.shape.nbytes)
    if (dim_counts == 0).any():
        i = np.flatnonzero(dim_counts == 0)[0]
        raise DataFormatError("sparse record has no shape", source=name, where=_where(fr, i))
    if (dim_counts == 1).all():
        widths = dims
    else:  # multi-dimensional shapes: keys are flat (row-major) indices into the whole tensor
        bounds = np.concatenate([[0], np.cumsum(dim_counts)[:-1]])
        widths = np.multiply.reduceat(dims, bounds)
    n_cols = int(widths.max()) if widths.size else 0
    if keys.size and int(keys.max()) >= n_cols:
        i = int(np.searchsorted(np.cumsum(counts), int(np.argmax(keys >= n_cols)), side="right"))
        raise DataFormatError(
            f"sparse key {int(keys.max())} is outside shape {n_cols}", source=name, where=_where(fr, i)
        )
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix((values, keys.astype(np.int64), indptr), shape=(n, n_cols))


def _assemble_labels(buf: np.ndarray, col: _Column | None, fr: _Frames, name: str) -> np.ndarray | None:
    if col is None:
        return None
    if col.tensor == _BYTES_FIELD:
        raise DataFormatError('label["values"] holds Bytes, not numbers', source=name)
    if (dense := _copied_dense(col)) is not None:
        return dense[:, 0] if dense.shape[1] == 1 else dense
    missing = np.flatnonzero(~col.present)
    if missing.size:
        raise DataFormatError(
            "some records have a label and others do not", source=name, where=_where(fr, missing[0])
        )
    values, counts = _values(buf, col)
    k = int(counts[0])
    if (counts != k).any():
        i = int(np.flatnonzero(counts != k)[0])
        raise DataFormatError(
            f"labels differ in length: {k} values in record 0, {counts[i]} in record {i}", source=name
        )
    return values if k == 1 else values.reshape(-1, k)


def _where(fr: _Frames, i: int) -> str:
    return f"record {int(i)} (byte {int(fr.offsets[i])})"
