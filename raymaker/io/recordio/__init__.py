"""RecordIO-protobuf (``application/x-recordio-protobuf``): SageMaker's binary training format.

Framing (MXNet/dmlc RecordIO): ``magic 0xCED7230A | uint32 cflag<<29 | length | payload | pad to 4``;
each payload is one ``aialgs.data.Record``. See ``record.proto`` and the contract reference §1.

Decoding is columnar: instead of parsing one protobuf message at a time, the wire format is walked for
all records at once with NumPy (one step per protobuf field, not per record). When every record has the
same byte layout (dense rows of one width, the common case), only the first record is walked; the other
records are checked to share its structural bytes and their values are copied out as one strided view.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from raymaker.io.batch import Batch, DataFormatError, Source, open_binary, read_all, source_name
from raymaker.io.record_pb import Record
from raymaker.io.recordio.assemble import _assemble_features, _assemble_labels, _where
from raymaker.io.recordio.columns import _VARINT_SLACK, _Fallback, _uniform_columns, _walk
from raymaker.io.recordio.framing import MAGIC, _frame, _Frames, _iter_payloads, _write_recordio
from raymaker.io.recordio.writer import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

CONTENT_TYPES = ("application/x-recordio-protobuf",)

__all__ = [
    "CONTENT_TYPES",
    "MAGIC",
    "decode",
    "iter_batches",
    "read",
    "read_records",
    "write_batch",
    "write_numpy_to_dense_tensor",
    "write_records",
    "write_spmatrix_to_sparse_tensor",
]


def _decode_frames(fr: _Frames, name: str) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None]:
    if fr.starts.size == 0:
        return np.zeros((0, 0), np.float32), None
    maps = _uniform_columns(fr, name) if fr.stride else None
    if maps is None and not fr.headers_checked:
        fr = _frame(fr.buf, name)
    buf = fr.buf
    if maps is None:
        buf = np.concatenate([fr.buf, np.zeros(_VARINT_SLACK, np.uint8)])
        try:
            maps = _walk(buf, fr.starts, fr.lengths, lambda i: _where(fr, i))
        except _Fallback:
            return _decode_with_protobuf(fr, name)
        except DataFormatError as e:
            raise DataFormatError(str(e), source=name) from None
    features = maps["features"].get("values")
    if features is None:
        raise DataFormatError('records have no features["values"] tensor', source=name, where=_where(fr, 0))
    return _assemble_features(buf, features, fr, name), _assemble_labels(
        buf, maps["label"].get("values"), fr, name
    )


def _decode_with_protobuf(fr: _Frames, name: str):
    """Slow path for encodings the walker does not vectorize (unpacked repeated fields and the like)."""
    raw = fr.buf.data
    record = Record()
    rows, labels = [], []
    sparse = False
    for i, (s, n) in enumerate(zip(fr.starts.tolist(), fr.lengths.tolist())):
        try:
            record.ParseFromString(bytes(raw[s : s + n]))
        except Exception as e:  # protobuf's DecodeError
            raise DataFormatError(f"corrupt payload: {e}", source=name, where=_where(fr, i)) from None
        value = record.features["values"]
        t = getattr(value, value.WhichOneof("value") or "float32_tensor")
        sparse |= len(t.keys) > 0
        rows.append((np.asarray(t.values), np.asarray(t.keys, np.int64), list(t.shape)))
        if record.label:
            lv = record.label["values"]
            labels.append(list(getattr(lv, lv.WhichOneof("value")).values))
    if sparse:
        counts = [len(v) for v, _, _ in rows]
        indptr = np.concatenate([[0], np.cumsum(counts)])
        n_cols = max((int(np.prod(sh)) for _, _, sh in rows if sh), default=0)
        feats = sp.csr_matrix(
            (np.concatenate([v for v, _, _ in rows]), np.concatenate([k for _, k, _ in rows]), indptr),
            shape=(len(rows), n_cols),
        )
    else:
        feats = np.stack([v for v, _, _ in rows])
    lab = None
    if labels:
        arr = np.asarray(labels)
        lab = arr[:, 0] if arr.shape[1] == 1 else arr
    return feats, lab


def decode(
    data: bytes | bytearray | memoryview, *, name: str = "<bytes>"
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None]:
    """Decode RecordIO-protobuf bytes into (features, labels).

    features: a 2-D NumPy array for dense records, a ``scipy.sparse.csr_matrix`` for sparse ones;
    labels: a 1-D array (2-D when each label holds several values), or None when records carry no label.
    Raises ``DataFormatError`` (a ValueError) naming the byte offset for truncated or corrupt data.
    """
    buf = np.frombuffer(data, np.uint8)
    return _decode_frames(_frame(buf, name, check_all_headers=False), name)


def read(source: Source, **params: Any) -> Batch:
    data, name = read_all(source)
    return Batch(*decode(data, name=name))


def iter_batches(source: Source, *, chunk_bytes: int = 8 << 20, **params: Any) -> Iterator[Batch]:
    """Stream batches from a file or stream, about ``chunk_bytes`` of records at a time."""
    stream, owned = open_binary(source)
    name = source_name(source)
    chunk_bytes = int(chunk_bytes)
    try:
        pending = b""
        base = 0  # byte offset of ``pending`` in the whole stream, for error messages
        while True:
            chunk = stream.read(chunk_bytes)
            data = pending + chunk if pending else chunk
            where = f"{name} (from byte {base})"
            if not chunk:
                if data:  # the tail: complete records, or a truncation error
                    yield Batch(*_decode_frames(_frame(np.frombuffer(data, np.uint8), where), where))
                return
            fr = _frame(np.frombuffer(data, np.uint8), where, partial_ok=True)
            if fr.starts.size:
                yield Batch(*_decode_frames(fr, where))
            pending = bytes(data[fr.consumed :])
            base += fr.consumed
    finally:
        if owned:
            stream.close()


def read_records(file: Source) -> list[Any]:
    """Every record as an ``aialgs.data.Record`` protobuf message (multi-part records joined)."""
    data, name = read_all(file)
    out = []
    for i, payload in enumerate(_iter_payloads(data, name)):
        record = Record()
        try:
            record.ParseFromString(payload)
        except Exception as e:
            raise DataFormatError(f"corrupt payload: {e}", source=name, where=f"record {i}") from None
        out.append(record)
    return out


def write_records(file: BinaryIO, records: list[Any]) -> None:
    """Frame already-built Record messages (or raw payload bytes), one RecordIO record each."""
    for r in records:
        _write_recordio(file, r if isinstance(r, bytes) else r.SerializeToString())


def write_batch(file: BinaryIO, batch: Batch) -> None:
    """Write a Batch with the SDK's dense or sparse writer."""
    if batch.is_sparse:
        write_spmatrix_to_sparse_tensor(file, batch.features, batch.labels)
    else:
        write_numpy_to_dense_tensor(file, batch.features, batch.labels)
