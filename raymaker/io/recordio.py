"""RecordIO-protobuf (``application/x-recordio-protobuf``): SageMaker's binary training format.

Framing (MXNet/dmlc RecordIO): ``magic 0xCED7230A | uint32 cflag<<29 | length | payload | pad to 4``;
each payload is one ``aialgs.data.Record``. See ``record.proto`` and the contract reference §1.

Decoding is columnar: instead of parsing one protobuf message at a time, the wire format is walked for
all records at once with NumPy (one step per protobuf field, not per record). When every record has the
same byte layout (dense rows of one width, the common case), only the first record is walked; the other
records are checked to share its structural bytes and their values are copied out as one strided view.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from raymaker.io.batch import Batch, DataFormatError, Source, open_binary, read_all, source_name
from raymaker.io.record_pb import Record

CONTENT_TYPES = ("application/x-recordio-protobuf",)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_MAX_RECORD = 1 << 29
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")

# Value oneof field number -> (type name, dtype, bytes per value; 0 = varint-encoded)
_TENSOR_TYPES = {
    2: ("Float32", np.dtype("<f4"), 4),
    3: ("Float64", np.dtype("<f8"), 8),
    7: ("Int32", np.dtype("<i4"), 0),
}
_BYTES_FIELD = 9
_BYTE = np.dtype(np.uint8)


class _Fallback(Exception):
    """The columnar walker met an encoding it does not vectorize (e.g. unpacked repeated fields)."""


# ----------------------------------------------------------------------------------------------------
# Writing: the same bytes the SageMaker SDK and training toolkit write.


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


def _write_recordio(file: BinaryIO, payload: bytes) -> None:
    n = len(payload)
    if n >= _MAX_RECORD:
        raise ValueError(f"a RecordIO record must be under 2^29 bytes; this one is {n} bytes")
    file.write(struct.pack("<II", MAGIC, n))
    file.write(payload)
    file.write(_PAD[-n % 4])


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
    layout = _first_record_layout(template)
    out = np.empty((n, template.size), np.uint8)
    out[:] = template
    feat = layout["features"]
    out[:, feat.value_offset : feat.value_offset + feat.value_nbytes] = (
        np.ascontiguousarray(array, dtype=feat.dtype).view(np.uint8).reshape(n, -1)
    )
    if labels is not None:
        lab = layout["label"]
        out[:, lab.value_offset : lab.value_offset + lab.value_nbytes] = (
            np.ascontiguousarray(labels[:n], dtype=lab.dtype).view(np.uint8).reshape(n, -1)
        )
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


def _frame_bytes(payload: bytes) -> bytes:
    return struct.pack("<II", MAGIC, len(payload)) + payload + _PAD[-len(payload) % 4]


# ----------------------------------------------------------------------------------------------------
# Framing: find every record's payload.


@dataclass
class _Frames:
    buf: np.ndarray  # uint8; payloads are slices of it (a new buffer when multi-part records were joined)
    starts: np.ndarray  # int64 payload offsets
    lengths: np.ndarray  # int64 payload lengths
    offsets: np.ndarray  # int64 byte offset of each record's header in the original data, for errors
    consumed: int  # bytes of the input that hold complete records
    stride: int = 0  # > 0 when records are evenly spaced single parts (uniform layout candidates)
    headers_checked: bool = True


def _frame(
    buf: np.ndarray, name: str, *, partial_ok: bool = False, check_all_headers: bool = True
) -> _Frames:
    """Locate every record. With ``check_all_headers=False`` evenly spaced records are only checked at
    the first and last header: the caller then checks the rest (``_same_structure`` covers headers)."""
    size = buf.size
    empty = np.zeros(0, np.int64)
    if size == 0:
        return _Frames(buf, empty, empty, empty, 0)
    if size < 8 and not partial_ok:
        raise DataFormatError(
            f"truncated record header: {size} bytes, a header needs 8", source=name, where="byte 0"
        )
    fast = _frame_uniform(buf, size, partial_ok, check_all_headers)
    if fast is None:
        fast = _frame_chain(buf, size, partial_ok)
    if fast is not None:
        return fast
    return _frame_sequential(buf, name, partial_ok)


def _frame_chain(buf: np.ndarray, size: int, partial_ok: bool) -> _Frames | None:
    """Variable-length records without a Python loop: every aligned magic word is a candidate header;
    when each candidate's record ends exactly at the next candidate, the candidates are the records.
    Returns None (use the sequential walk) for multi-part records, magic words inside payloads, or
    any damage, so that errors get exact offsets."""
    words = buf[: (size // 4) * 4].view("<u4")
    cand = np.flatnonzero(words == MAGIC)
    if cand.size == 0 or cand[0] != 0:
        return None
    cand = cand[cand + 1 < words.size]
    lrec = words[cand + 1]
    if (lrec >> 29).any():
        return None
    length = (lrec & _LEN_MASK).astype(np.int64)
    nxt = cand + 2 + (length + 3) // 4  # word index where the next record should start
    if not (nxt[:-1] == cand[1:]).all():
        return None
    end = 4 * (cand[-1] + 2) + length[-1]
    consumed = 4 * int(nxt[-1])
    if end > size or consumed < size and not partial_ok:
        if not partial_ok:
            return None
        cand, length = cand[:-1], length[:-1]  # the last record is incomplete
        consumed = 4 * int(cand[-1] + 2) + int(length[-1] + (-length[-1] % 4)) if cand.size else 0
    offsets = cand.astype(np.int64) * 4
    return _Frames(buf, offsets + 8, length, offsets, min(consumed, size))


def _frame_uniform(buf: np.ndarray, size: int, partial_ok: bool, check_all: bool) -> _Frames | None:
    # Evenly spaced records of one length: check every header with one strided comparison.
    if size < 8:
        return None
    magic, lrec = struct.unpack_from("<II", buf, 0)
    if magic != MAGIC or lrec >> 29:
        return None
    length = lrec
    stride = 8 + length + (-length % 4)
    n = size // stride
    consumed = n * stride
    if size != consumed:
        if size == consumed + 8 + length:  # final record written without its padding
            n, consumed = n + 1, size
        elif not partial_ok:
            return None
    if n == 0:
        return None
    words = buf[: (size // 4) * 4].view("<u4")
    step = stride // 4
    if check_all:
        heads = words[0 : step * (n - 1) + 1 : step]
        lens = words[1 : step * (n - 1) + 2 : step]
    else:
        heads, lens = words[[0, step * (n - 1)]], words[[1, step * (n - 1) + 1]]
    if not (heads == MAGIC).all() or not (lens == lrec).all():
        return None
    offsets = np.arange(n, dtype=np.int64) * stride
    return _Frames(buf, offsets + 8, np.full(n, length, np.int64), offsets, consumed, stride, check_all)


def _frame_sequential(buf: np.ndarray, name: str, partial_ok: bool) -> _Frames:
    """Walk headers one by one (variable-length records), joining multi-part records (cflag 1/2/3)."""
    data = buf.data
    size = buf.size
    starts: list[int] = []
    lengths: list[int] = []
    offsets: list[int] = []
    parts: dict[int, list[tuple[int, int]]] = {}  # record index -> its parts, for multi-part records
    pos = 0
    consumed = 0
    group_start = -1
    while pos < size:
        if size - pos < 8:
            if partial_ok:
                break
            raise DataFormatError(
                f"truncated record header: {size - pos} bytes left, a header needs 8",
                source=name,
                where=f"byte {pos}",
            )
        magic, lrec = struct.unpack_from("<II", data, pos)
        if magic != MAGIC:
            raise DataFormatError(
                f"bad magic number 0x{magic:08X} (expected 0x{MAGIC:08X}): not RecordIO data, or corrupt",
                source=name,
                where=f"byte {pos}",
            )
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        end = pos + 8 + length
        if end > size:
            if partial_ok:
                break
            raise DataFormatError(
                f"truncated record: header declares {length} payload bytes but only {size - pos - 8} remain",
                source=name,
                where=f"byte {pos}",
            )
        if cflag == 0 or cflag == 1:
            if group_start >= 0:
                raise DataFormatError(
                    f"multi-part record starting at byte {group_start} has no last part (cflag 3)",
                    source=name,
                    where=f"byte {pos}",
                )
            if cflag == 1:
                group_start = pos
                parts[len(starts)] = [(pos + 8, length)]
            starts.append(pos + 8)
            lengths.append(length)
            offsets.append(pos)
        elif cflag in (2, 3):
            if group_start < 0:
                raise DataFormatError(
                    f"record part with cflag {cflag} has no first part (cflag 1) before it",
                    source=name,
                    where=f"byte {pos}",
                )
            parts[len(starts) - 1].append((pos + 8, length))
            if cflag == 3:
                group_start = -1
        else:
            raise DataFormatError(f"invalid cflag {cflag} in record header", source=name, where=f"byte {pos}")
        pos = end + (-length % 4)
        if group_start < 0:
            consumed = min(pos, size)
    if group_start >= 0:
        if not partial_ok:
            raise DataFormatError(
                "multi-part record has no last part (cflag 3): data truncated",
                source=name,
                where=f"byte {group_start}",
            )
        del parts[len(starts) - 1]
        starts.pop(), lengths.pop(), offsets.pop()
    starts_a = np.asarray(starts, np.int64)
    lengths_a = np.asarray(lengths, np.int64)
    if parts:
        # Rebuild the payloads with the 4 magic bytes the writer removed between consecutive parts.
        pieces = []
        new_starts = np.empty(len(starts), np.int64)
        new_lengths = np.empty(len(starts), np.int64)
        cursor = 0
        for i in range(len(starts)):
            segs = parts.get(i, [(starts[i], lengths[i])])
            joined = _MAGIC_BYTES.join(bytes(data[s : s + n]) for s, n in segs)
            pieces.append(joined)
            new_starts[i], new_lengths[i] = cursor, len(joined)
            cursor += len(joined)
        buf = np.frombuffer(b"".join(pieces), np.uint8)
        starts_a, lengths_a = new_starts, new_lengths
    return _Frames(buf, starts_a, lengths_a, np.asarray(offsets, np.int64), consumed)


def _iter_payloads(data: bytes | memoryview, name: str) -> Iterator[bytes]:
    fr = _frame(np.frombuffer(data, np.uint8), name)
    raw = fr.buf.data
    for s, n in zip(fr.starts.tolist(), fr.lengths.tolist()):
        yield bytes(raw[s : s + n])


# ----------------------------------------------------------------------------------------------------
# Columnar protobuf walking.

_VARINT_SLACK = 16  # zero bytes appended so vectorized varint reads never index past the end


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read one varint at each position. Returns (values uint64, positions after)."""
    b = buf[pos]
    value = (b & 0x7F).astype(np.uint64)
    cur = pos + 1
    live = np.flatnonzero(b >= 0x80)  # only the longer varints go round the loop again
    for i in range(1, 10):
        if not live.size:
            return value, cur
        b = buf[cur[live]]
        value[live] |= (b & 0x7F).astype(np.uint64) << np.uint64(7 * i)
        cur[live] += 1
        live = live[b >= 0x80]
    if live.size:
        raise _Fallback("varint longer than 10 bytes")
    return value, cur


@dataclass
class _Span:
    """Byte spans of one field for a set of records (index into the record list)."""

    start: np.ndarray
    nbytes: np.ndarray
    step: int = 0  # > 0: spans are evenly spaced this many bytes apart and all nbytes are equal
    data: np.ndarray | None = None  # the spans' contents, when already copied out (uniform records)


@dataclass
class _Column:
    """One map entry (e.g. features["values"]) across records."""

    tensor: int  # Value field number: 2 Float32, 3 Float64, 7 Int32, 9 Bytes
    present: np.ndarray  # bool per record
    values: _Span
    keys: _Span
    shape: _Span


def _fields(buf: np.ndarray, start: np.ndarray, end: np.ndarray, on_field, where) -> None:
    """Iterate the fields of one message per record, all records at once: one loop step per field.

    ``on_field(idx, field_number, wire_type, body_start, body_end)`` is called with the subset of records
    whose next field has that number (wire types other than LEN fall back)."""
    cur = start.copy()
    idx = np.flatnonzero(cur < end)
    while idx.size:
        tags, after = _varints(buf, cur[idx])
        wire = (tags & np.uint64(7)).astype(np.int64)
        if (wire != 2).any():
            raise _Fallback("non length-delimited field")
        ln, body = _varints(buf, after)
        body_end = body + ln.astype(np.int64)
        bad = body_end > end[idx]
        if bad.any():
            raise DataFormatError(
                "corrupt payload: a protobuf field runs past the end of its record", where=where(idx[bad][0])
            )
        numbers = (tags >> np.uint64(3)).astype(np.int64)
        if (numbers == numbers[0]).all():  # the usual case: every record has the same next field
            on_field(idx, int(numbers[0]), body, body_end)
        else:
            for number in np.unique(numbers):
                sel = numbers == number
                on_field(idx[sel], int(number), body[sel], body_end[sel])
        cur[idx] = body_end
        idx = idx[cur[idx] < end[idx]]


def _walk(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, where) -> dict[str, dict[str, _Column]]:
    """Walk every Record; return {"features": {key: column}, "label": {key: column}}."""
    n = starts.size
    maps: dict[str, dict[str, _Column]] = {"features": {}, "label": {}}

    def new_column(tensor: int) -> _Column:
        z = np.zeros(n, np.int64)
        return _Column(
            tensor,
            np.zeros(n, bool),
            _Span(z.copy(), z.copy()),
            _Span(z.copy(), z.copy()),
            _Span(z.copy(), z.copy()),
        )

    def on_record_field(idx, number, body, body_end):
        if number not in (1, 2):
            return  # uid, metadata, configuration: ignored by algorithms
        target = maps["features" if number == 1 else "label"]
        key_start = np.full(idx.size, -1, np.int64)
        key_len = np.zeros(idx.size, np.int64)
        val_start = np.full(idx.size, -1, np.int64)
        val_end = np.zeros(idx.size, np.int64)
        pos_of = {r: i for i, r in enumerate(idx.tolist())} if idx.size < 64 else None
        order = np.argsort(idx)

        def local(sub):
            if sub.size == idx.size:  # every record (idx and sub are both sorted)
                return np.arange(sub.size)
            if pos_of is not None:
                return np.array([pos_of[r] for r in sub.tolist()], np.int64)
            return order[np.searchsorted(idx, sub, sorter=order)]

        def on_entry_field(sub, num, b, e):
            loc = local(sub)
            if num == 1:
                key_start[loc], key_len[loc] = b, e - b
            elif num == 2:
                val_start[loc], val_end[loc] = b, e

        entry_start = np.zeros(n, np.int64)
        entry_end = np.zeros(n, np.int64)
        entry_start[idx], entry_end[idx] = body, body_end
        _fields(buf, entry_start, entry_end, on_entry_field, where)
        if (val_start < 0).any():
            raise DataFormatError(
                "corrupt payload: map entry without a value", where=where(idx[val_start < 0][0])
            )
        for key, rows in _group_keys(buf, key_start, key_len):
            sub_idx = idx[rows]
            _walk_value(buf, sub_idx, val_start[rows], val_end[rows], target, key, new_column, where)

    _fields(buf, starts, starts + lengths, on_record_field, where)
    return maps


def _group_keys(buf: np.ndarray, key_start: np.ndarray, key_len: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Group entries by their map key; the common single key ("values") is checked with one comparison."""
    first = bytes(buf[key_start[0] : key_start[0] + key_len[0]]) if key_start[0] >= 0 else b""
    k = len(first)
    if (key_len == k).all() and (
        k == 0 or (buf[key_start[:, None] + np.arange(k)] == np.frombuffer(first, np.uint8)).all()
    ):
        return [(first.decode("utf-8", "replace"), np.arange(key_start.size))]
    names = [
        bytes(buf[s : s + n]).decode("utf-8", "replace") if s >= 0 else "" for s, n in zip(key_start, key_len)
    ]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return [(name, np.asarray(rows)) for name, rows in groups.items()]


def _walk_value(buf, idx, start, end, target, key, new_column, where) -> None:
    def on_value_field(sub, num, b, e):
        if num not in _TENSOR_TYPES and num != _BYTES_FIELD:
            raise DataFormatError(f"corrupt payload: unknown Value field {num}", where=where(sub[0]))
        col = target.get(key)
        if col is None:
            col = target[key] = new_column(num)
        elif col.tensor != num:
            raise DataFormatError(
                f"records mix tensor types under key {key!r}: {_type_name(col.tensor)} and {_type_name(num)}",
                where=where(sub[0]),
            )
        if (col.present[sub]).any():
            raise _Fallback("repeated map key")
        col.present[sub] = True
        if num == _BYTES_FIELD:
            col.values.start[sub], col.values.nbytes[sub] = b, e - b
            return

        def on_tensor_field(rows, tnum, tb, te):
            span = {1: col.values, 2: col.keys, 3: col.shape}.get(tnum)
            if span is None:
                raise DataFormatError(f"corrupt payload: unknown tensor field {tnum}", where=where(rows[0]))
            if (span.nbytes[rows] > 0).any():
                raise _Fallback("packed field split in several chunks")
            span.start[rows], span.nbytes[rows] = tb, te - tb

        n = col.present.size
        ts = np.zeros(n, np.int64)
        te_ = np.zeros(n, np.int64)
        ts[sub], te_[sub] = b, e
        _fields(buf, ts, te_, on_tensor_field, where)

    n_all = max(int(idx.max()) + 1, 1)
    vs = np.zeros(n_all, np.int64)
    ve = np.zeros(n_all, np.int64)
    vs[idx], ve[idx] = start, end
    _fields(buf, vs, ve, on_value_field, where)


def _type_name(num: int) -> str:
    return "Bytes" if num == _BYTES_FIELD else _TENSOR_TYPES[num][0]


# ----------------------------------------------------------------------------------------------------
# Uniform layout: walk record 0 only.


@dataclass
class _FixedLayout:
    dtype: np.dtype
    value_offset: int  # relative to the start of the framed record (header included)
    value_nbytes: int


def _first_record_layout(framed: np.ndarray) -> dict[str, _FixedLayout]:
    """For one framed record: where the fixed-width "values" of features and label sit."""
    buf = np.concatenate([framed, np.zeros(_VARINT_SLACK, np.uint8)])
    length = framed.size - 8
    maps = _walk(buf, np.array([8], np.int64), np.array([length], np.int64), lambda i: "byte 0")
    out = {}
    for name, cols in maps.items():
        col = cols.get("values")
        if col is None:
            continue
        out[name] = _FixedLayout(
            _TENSOR_TYPES[col.tensor][1], int(col.values.start[0]), int(col.values.nbytes[0])
        )
    return out


def _uniform_columns(fr: _Frames, name: str) -> dict[str, dict[str, _Column]] | None:
    """Columns for evenly spaced records that share record 0's structure, or None."""
    n, stride, length = fr.starts.size, fr.stride, int(fr.lengths[0])
    raw = fr.buf
    padded = np.concatenate([raw[:stride], np.zeros(_VARINT_SLACK, np.uint8)])
    try:
        maps = _walk(padded, np.array([8], np.int64), np.array([length], np.int64), lambda i: "byte 0")
    except _Fallback:
        return None
    content = []  # byte ranges (within a record) that may differ between records
    for cols in maps.values():
        for col in cols.values():
            if col.tensor in (7, _BYTES_FIELD):
                return None  # varint / bytes contents: leave to the general walker
            for span in (col.values, col.keys, col.shape):
                if span.nbytes[0]:
                    content.append((int(span.start[0]), int(span.start[0] + span.nbytes[0])))
    content.sort()
    # Values are copied out block by block right after each block is checked, while it is in cache.
    values = [col.values for cols in maps.values() for col in cols.values() if col.values.nbytes[0]]
    extract = [
        (int(v.start[0]), int(v.nbytes[0]), _TENSOR_TYPES[c.tensor][1])
        for v, c in (
            (col.values, col) for cols in maps.values() for col in cols.values() if col.values.nbytes[0]
        )
    ]
    copies = _same_structure(raw, n, stride, 8 + length, content, extract)
    if copies is None:
        return None
    for span, data in zip(values, copies):
        span.data = data
    # Every record shares record 0's layout: spans are record 0's, shifted by the record stride.
    # Zero-stride broadcasts avoid materializing per-record arrays that would all hold one value.
    for cols in maps.values():
        for col in cols.values():
            col.present = np.broadcast_to(True, (n,))
            for span in (col.values, col.keys, col.shape):
                start, nbytes = int(span.start[0]), int(span.nbytes[0])
                span.start = fr.offsets + start if nbytes else np.broadcast_to(np.int64(0), (n,))
                span.nbytes = np.broadcast_to(np.int64(nbytes), (n,))
                span.step = stride
    return maps


def _same_structure(
    raw: np.ndarray,
    n: int,
    stride: int,
    size: int,
    content: list[tuple[int, int]],
    extract: list[tuple[int, int, np.dtype]],
) -> list[np.ndarray] | None:
    """Check every record's bytes outside ``content`` equal record 0's; if so, return a copy of each
    ``extract`` field (offset, nbytes, dtype) for all records as an (n, k) array, else None.

    Compared one machine-word column at a time (1-D strided passes, partial words masked), block by
    block so the columns of a block come from cache: far faster than comparing 2-D byte slices."""
    word = 8 if stride % 8 == 0 and raw.ctypes.data % 8 == 0 else 4
    structural = np.ones(size + (-size % word), bool)
    structural[size:] = False
    for lo, hi in content:
        structural[lo:hi] = False
    dtype = np.dtype(f"<u{word}")
    flat = np.ndarray((raw.size // word,), dtype, buffer=raw)
    per_row = stride // word
    byte_masks = structural.reshape(-1, word)
    full = (1 << (8 * word)) - 1
    checks = []  # (word column, mask or None for a whole structural word)
    for j in np.flatnonzero(byte_masks.any(axis=1)):
        bits = sum(0xFF << (8 * b) for b in range(word) if byte_masks[j][b])
        checks.append((int(j), None if bits == full else dtype.type(bits)))
    outs = [np.empty((n, nbytes // dt.itemsize), dt) for _, nbytes, dt in extract]
    views = [
        np.ndarray((n, nbytes // dt.itemsize), dt, buffer=raw, offset=off, strides=(stride, dt.itemsize))
        for off, nbytes, dt in extract
    ]
    rows = n - 1  # the last record may lack its padding: it is compared byte by byte below
    # Row blocks that fit in cache: every word column of a block is read from cache, not memory.
    block = 8192
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        for j, bits in checks:
            column = flat[lo * per_row + j : (min(hi, rows) - 1) * per_row + j + 1 : per_row]
            first = flat[j]
            ok = (column == first).all() if bits is None else ((column ^ first) & bits == 0).all()
            if not ok:
                return None
        for out, view in zip(outs, views):
            out[lo:hi] = view[lo:hi]
    last = raw[(n - 1) * stride : (n - 1) * stride + size]
    if not (last[structural[:size]] == raw[:size][structural[:size]]).all():
        return None
    return outs


# ----------------------------------------------------------------------------------------------------
# Assembling columns into arrays.


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


def _assemble_features(buf: np.ndarray, col: _Column, fr: _Frames, name: str):
    n = col.present.size
    if col.tensor == _BYTES_FIELD:
        raise DataFormatError(
            "features hold Bytes values, which decode() cannot put in a matrix: use read_records()",
            source=name,
        )
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


# ----------------------------------------------------------------------------------------------------
# Public API


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
