"""Columnar protobuf walking: every Record's fields located for all records at once (one NumPy step
per protobuf field, not per record), and the uniform-layout shortcut that walks record 0 only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raymaker.io.batch import DataFormatError
from raymaker.io.recordio.framing import _Frames

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


@dataclass(frozen=True)
class _Layout:
    """Where the fields of a record sit, for records that all share one byte layout."""

    size: int  # header + payload bytes
    columns: tuple  # (map name, key, tensor type, ((start, nbytes) of values, keys, shape))
    content: tuple  # byte ranges that may differ between records (tensor contents)
    structural: np.ndarray  # positions of every other byte ...
    signature: np.ndarray  # ... and their values in the record this layout was walked from


_LAYOUTS: list[_Layout] = []  # recently seen layouts: files of one dataset share one, so skip the walk


def _record_layout(raw: np.ndarray, length: int) -> _Layout | None:
    """Record 0's layout, from the cache when a cached layout's structural bytes match record 0's."""
    size = 8 + length
    for layout in _LAYOUTS:
        if layout.size == size and (raw[layout.structural] == layout.signature).all():
            return layout
    padded = np.concatenate([raw[:size], np.zeros(_VARINT_SLACK, np.uint8)])
    try:
        maps = _walk(padded, np.array([8], np.int64), np.array([length], np.int64), lambda i: "byte 0")
    except _Fallback:
        return None
    columns, content = [], []
    for map_name, cols in maps.items():
        for key, col in cols.items():
            if col.tensor in (7, _BYTES_FIELD):
                return None  # varint / bytes contents: leave to the general walker
            spans = tuple(
                (int(sp_.start[0]), int(sp_.nbytes[0])) for sp_ in (col.values, col.keys, col.shape)
            )
            columns.append((map_name, key, col.tensor, spans))
            content.extend((lo, lo + nb) for lo, nb in spans if nb)
    mask = np.ones(size, bool)
    for lo, hi in content:
        mask[lo:hi] = False
    structural = np.flatnonzero(mask)
    layout = _Layout(size, tuple(columns), tuple(sorted(content)), structural, raw[structural].copy())
    _LAYOUTS.insert(0, layout)
    del _LAYOUTS[8:]
    return layout


def _uniform_columns(fr: _Frames, name: str) -> dict[str, dict[str, _Column]] | None:
    """Columns for evenly spaced records that share record 0's structure, or None."""
    n, stride, length = fr.starts.size, fr.stride, int(fr.lengths[0])
    layout = _record_layout(fr.buf, length)
    if layout is None:
        return None
    # Values are copied out block by block right after each block is checked, while it is in cache.
    extract = [
        (spans[0][0], spans[0][1], _TENSOR_TYPES[t][1]) for _, _, t, spans in layout.columns if spans[0][1]
    ]
    copies = _same_structure(fr.buf, n, stride, layout.size, list(layout.content), extract)
    if copies is None:
        return None
    copies = iter(copies)
    # Every record shares record 0's layout: spans are record 0's, shifted by the record stride.
    # Zero-stride broadcasts avoid materializing per-record arrays that would all hold one value.
    maps: dict[str, dict[str, _Column]] = {"features": {}, "label": {}}
    for map_name, key, tensor, spans in layout.columns:
        made = []
        for start, nbytes in spans:
            made.append(
                _Span(
                    fr.offsets + start if nbytes else np.broadcast_to(np.int64(0), (n,)),
                    np.broadcast_to(np.int64(nbytes), (n,)),
                    stride,
                )
            )
        if spans[0][1]:
            made[0].data = next(copies)
        maps[map_name][key] = _Column(tensor, np.broadcast_to(True, (n,)), *made)
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

    Compared one machine-word column at a time (1-D strided passes, partial words masked): far faster
    than comparing 2-D byte slices."""
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
    # Row blocks about the size of L2. Copying a block's values first streams its bytes into cache in
    # order (prefetch-friendly); the strided word-column checks then hit cache instead of memory.
    block = 8192
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        for out, view in zip(outs, views):
            out[lo:hi] = view[lo:hi]
        for j, bits in checks:
            column = flat[lo * per_row + j : (min(hi, rows) - 1) * per_row + j + 1 : per_row]
            first = flat[j]
            ok = (column == first).all() if bits is None else ((column ^ first) & bits == 0).all()
            if not ok:
                return None
    last = raw[(n - 1) * stride : (n - 1) * stride + size]
    if not (last[structural[:size]] == raw[:size][structural[:size]]).all():
        return None
    return outs
