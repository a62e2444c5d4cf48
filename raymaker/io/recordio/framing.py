"""RecordIO framing (MXNet/dmlc): ``magic | cflag<<29 | length | payload | pad to 4``, found without
a Python loop where the records allow it."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from raymaker.io.batch import DataFormatError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_MAX_RECORD = 1 << 29
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")


def _write_recordio(file: BinaryIO, payload: bytes) -> None:
    n = len(payload)
    if n >= _MAX_RECORD:
        raise ValueError(f"a RecordIO record must be under 2^29 bytes; this one is {n} bytes")
    file.write(struct.pack("<II", MAGIC, n))
    file.write(payload)
    file.write(_PAD[-n % 4])


def _frame_bytes(payload: bytes) -> bytes:
    return struct.pack("<II", MAGIC, len(payload)) + payload + _PAD[-len(payload) % 4]


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
