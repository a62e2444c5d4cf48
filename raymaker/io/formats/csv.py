"""``text/csv``: SageMaker's header-less numeric CSV, label in the first column for training.

Parameters (content-type parameters arrive as strings):
  ``label_size``  1 (default): the first column is the label; 0: every column is a feature (inference,
                  unsupervised training).
  ``header``      ``absent`` (default) or ``present`` (RFC 4180): skip the first non-blank line.
  ``charset``     accepted and ignored; the data must be ASCII/UTF-8.

Parsing is pyarrow's C++ CSV reader with every column typed float32 up front (the width comes from
the first non-blank line), so a non-numeric cell or a ragged row fails with pyarrow's "Row #N", which
counts records and skips blank lines; we map it back to a physical line number for the message.
Empty cells and ``nan``/``NA`` become NaN (XGBoost's "missing").
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from raymaker.io.batch import Batch, DataFormatError, Source, open_binary, read_all, source_name
from raymaker.io.formats.lines import positive_int

CONTENT_TYPES: tuple[str, ...] = ("text/csv",)

_PEEK_CHUNK = 1 << 16
_READ_BLOCK = 1 << 20  # pyarrow's default; blocks are parsed in parallel
_DEFAULT_BLOCK = 1 << 22  # bytes per pyarrow block when streaming
_MAX_BLOCK = (1 << 31) - 1  # pyarrow's block_size is an int32


def read(source: Source, **params: Any) -> Batch:
    """The whole CSV input as one Batch (an empty input gives a 0-row Batch)."""
    label_size, header = _options(params)
    data, name = read_all(source)
    data = bytes(data) if isinstance(data, memoryview) else data
    lines = _LineTracker()
    offset, ncols, line_len = _head(data, header, lines, name, complete=True)
    if ncols == 0:
        return _empty(label_size)
    body = data[offset:]
    # Line bookkeeping costs a pass over the data: only done when an error needs a line number.
    lines.pending = body
    # pyarrow needs every line to fit in a block; size blocks from the first line, and if a later line
    # is longer still, parse the input as one block.
    block_size = max(_READ_BLOCK, 4 * line_len)
    whole = len(body) + 1
    try:
        try:
            table = pacsv.read_csv(pa.py_buffer(body), **_csv_options(ncols, True, block_size))
        except pa.ArrowInvalid as exc:
            if not _is_block_error(exc):
                raise
            table = pacsv.read_csv(pa.py_buffer(body), **_csv_options(ncols, True, whole))
    except pa.ArrowInvalid as first_error:
        # The threaded reader does not report row numbers; parse again serially just to locate the error.
        try:
            pacsv.read_csv(pa.py_buffer(body), **_csv_options(ncols, False, whole))
        except pa.ArrowInvalid as exc:
            raise _csv_error(exc, name, lines) from None
        raise _csv_error(first_error, name, lines) from None
    return _to_batch(table, label_size, name, lines, rows_before=0)


def iter_batches(
    source: Source, *, batch_rows: int | str | None = None, block_size: int | str | None = None, **params: Any
) -> Iterator[Batch]:
    """Stream CSV input (a file, bytes or a pipe) in Batches of ``batch_rows`` rows (the last may be
    shorter); without ``batch_rows`` one Batch per pyarrow block of ``block_size`` bytes."""
    label_size, header = _options(params)
    batch_rows = positive_int("batch_rows", batch_rows)
    block_size = positive_int("block_size", block_size) or _DEFAULT_BLOCK
    name = source_name(source)
    stream, must_close = open_binary(source)
    try:
        lines = _LineTracker()
        prefix, ncols, line_len = _peek_head(stream, header, lines, name)
        if ncols == 0:
            return
        block_size = min(max(block_size, 4 * line_len), _MAX_BLOCK)
        tracked = _TrackedReader(prefix, stream, lines)
        # Serial parsing: the threaded streaming reader does not report row numbers in its errors.
        try:
            reader = pacsv.open_csv(tracked, **_csv_options(ncols, False, block_size))
        except pa.ArrowInvalid as exc:
            raise _csv_error(exc, name, lines, block_size) from None
        rows = 0
        pending: pa.Table | None = None
        while True:
            try:
                record_batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise _csv_error(exc, name, lines, block_size) from None
            if batch_rows is None:
                yield _to_batch(pa.Table.from_batches([record_batch]), label_size, name, lines, rows)
                rows += record_batch.num_rows
                continue
            # Re-slice pyarrow's byte-sized blocks into row-sized batches.
            table = pa.Table.from_batches([record_batch])
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= batch_rows:
                yield _to_batch(pending.slice(0, batch_rows), label_size, name, lines, rows)
                rows += batch_rows
                pending = pending.slice(batch_rows)
        if pending is not None and pending.num_rows:
            yield _to_batch(pending, label_size, name, lines, rows)
    finally:
        if must_close:
            stream.close()


# --- options -------------------------------------------------------------------------------------


def _options(params: dict[str, Any]) -> tuple[int, bool]:
    params = dict(params)
    params.pop("charset", None)
    raw_label_size = params.pop("label_size", 1)
    header = str(params.pop("header", "absent")).lower()
    if params:
        raise ValueError(
            f"unsupported text/csv parameter(s): {', '.join(sorted(params))}; supported: label_size, header"
        )
    try:
        label_size = int(raw_label_size)
    except (TypeError, ValueError):
        label_size = -1
    if label_size not in (0, 1):
        raise ValueError(f"text/csv: label_size must be 0 or 1, got {raw_label_size!r}")
    if header not in ("absent", "present"):
        raise ValueError(f"text/csv: header must be 'absent' or 'present', got {header!r}")
    return label_size, header == "present"


def _csv_options(ncols: int, use_threads: bool, block_size: int) -> dict[str, Any]:
    read_opts = pacsv.ReadOptions(
        autogenerate_column_names=True, use_threads=use_threads, block_size=min(block_size, _MAX_BLOCK)
    )
    return {
        "read_options": read_opts,
        # Quoted values never span lines in numeric data; keeping this off keeps records == lines.
        "parse_options": pacsv.ParseOptions(newlines_in_values=False),
        "convert_options": pacsv.ConvertOptions(column_types={f"f{i}": pa.float32() for i in range(ncols)}),
    }


def _empty(label_size: int) -> Batch:
    return Batch(np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.float32) if label_size else None)


# --- first line: width and optional header ----------------------------------------------------------


def _first_line(buf: bytes, start: int = 0) -> tuple[int, int] | None:
    """(start, end) of the first non-blank line in ``buf`` at or after ``start``, end excluding the
    newline; None when there is none yet (``end`` is len(buf) for an unterminated last line)."""
    pos = start
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl
        if buf[pos:end].rstrip(b"\r"):
            return pos, end
        if nl < 0:
            return None
        pos = nl + 1
    return None


def _head(
    buf: bytes, header: bool, lines: _LineTracker, name: str, complete: bool
) -> tuple[int, int, int] | None:
    """(body offset, column count, first data line's length) for a buffer holding the input's start;
    None: need more bytes. A column count of 0 means the input has no data rows."""
    first = _first_line(buf)
    if first is None or (first[1] == len(buf) and not complete):
        return (len(buf), 0, 0) if complete else None
    offset = 0
    if header:
        lines.offset = buf.count(b"\n", 0, first[1]) + 1
        offset = min(first[1] + 1, len(buf))
        first = _first_line(buf, offset)
        if first is None or (first[1] == len(buf) and not complete):
            return (len(buf), 0, 0) if complete else None
    line = buf[first[0] : first[1]]
    if b'"' not in line:
        return offset, line.count(b",") + 1, len(line)
    try:
        # Quoted fields: let pyarrow count, so quoting rules are the same as for the data itself.
        ncols = pacsv.read_csv(
            io.BytesIO(line + b"\n"),
            read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=len(line) + 2),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
        ).num_columns
    except pa.ArrowInvalid:
        line_number = buf.count(b"\n", 0, first[0]) + 1
        raise DataFormatError(
            "cannot split the line into columns (an unbalanced quote?)",
            source=name,
            where=f"line {line_number}",
        ) from None
    return offset, ncols, first[1] - first[0]


def _peek_head(stream: BinaryIO, header: bool, lines: _LineTracker, name: str) -> tuple[bytes, int, int]:
    """Read just enough of a stream to know its width: the bytes to replay, the width, the first line's
    length."""
    buf = b""
    while True:
        # Grow geometrically so a very long first line is not re-scanned quadratically.
        chunk = stream.read(max(_PEEK_CHUNK, len(buf)))
        buf += chunk
        head = _head(buf, header, lines, name, complete=not chunk)
        if head is not None:
            return buf[head[0] :], head[1], head[2]


# --- line numbers ---------------------------------------------------------------------------------


class _LineTracker:
    """Remembers which lines are blank (pyarrow skips them without counting), to turn pyarrow's record
    numbers into line numbers. Fed chunk by chunk, vectorised per chunk."""

    def __init__(self) -> None:
        self.offset = 0  # lines before the body (a header)
        self.pending: bytes | None = None  # body not fed yet (fed lazily, on the first lookup)
        self.blank: list[int] = []  # 1-based body line numbers of blank lines, ascending
        self._newlines = 0
        self._partial = 0  # length of the current unterminated line (capped)
        self._partial_cr = False  # ... and whether it is exactly "\r"

    def feed(self, chunk: bytes | memoryview) -> None:
        arr = np.frombuffer(chunk, dtype=np.uint8)
        if not len(arr):
            return
        nl = np.flatnonzero(arr == 10)
        if not len(nl):
            self._extend_partial(arr)
            return
        first_len = self._partial + int(nl[0])
        first_is_cr = (self._partial == 1 and self._partial_cr and nl[0] == 0) or (
            self._partial == 0 and nl[0] == 1 and arr[0] == 13
        )
        if first_len == 0 or first_is_cr:
            self.blank.append(self._newlines + 1)
        starts = nl[:-1] + 1
        lens = nl[1:] - starts
        blank = (lens == 0) | ((lens == 1) & (arr[np.minimum(starts, len(arr) - 1)] == 13))
        self.blank.extend((np.flatnonzero(blank) + self._newlines + 2).tolist())
        self._newlines += len(nl)
        self._partial = 0
        self._partial_cr = False
        self._extend_partial(arr[int(nl[-1]) + 1 :])

    def _extend_partial(self, arr: np.ndarray) -> None:
        if len(arr):
            self._partial_cr = self._partial == 0 and len(arr) == 1 and arr[0] == 13
            self._partial = min(self._partial + len(arr), 2)

    def line_of(self, record: int) -> int:
        """Physical line (1-based, counting any header) of the ``record``-th (1-based) non-blank line."""
        if self.pending is not None:
            self.feed(self.pending)
            self.pending = None
        line = record
        for b in self.blank:
            if b <= line:
                line += 1
            else:
                break
        return line + self.offset


class _TrackedReader(io.RawIOBase):
    """Replays the peeked bytes, then the stream, feeding everything pyarrow reads to the tracker."""

    def __init__(self, prefix: bytes, stream: BinaryIO, lines: _LineTracker):
        self._prefix = memoryview(prefix)
        self._stream = stream
        self._lines = lines

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        if len(self._prefix):
            n = min(len(out), len(self._prefix))
            out[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
        else:
            data = self._stream.read(len(out))
            n = len(data)
            out[:n] = data
        self._lines.feed(out[:n])
        return n


_ROW = re.compile(r"Row #(\d+): ")
_COLUMNS = re.compile(r"Expected (\d+) columns, got (\d+)")
_CONVERSION = re.compile(r"In CSV column #(\d+): .*invalid value '(.*)'", re.S)


def _is_block_error(exc: pa.ArrowInvalid) -> bool:
    return "straddl" in str(exc) or "Empty CSV file or block" in str(exc)


def _csv_error(
    exc: pa.ArrowInvalid, name: str, lines: _LineTracker, block_size: int | None = None
) -> DataFormatError:
    msg = str(exc)
    row = _ROW.search(msg)
    line = lines.line_of(int(row.group(1))) if row else None
    where = f"line {line}" if line else None
    if m := _COLUMNS.search(msg):
        text = f"expected {m.group(1)} columns (as in the first line), got {m.group(2)}"
    elif m := _CONVERSION.search(msg):
        text = f"column {int(m.group(1)) + 1}: {m.group(2)!r} is not a number"
        if line == 1:
            text += " (if the first line is a header, send header=present)"
    elif block_size and _is_block_error(exc):
        text = f"a line is longer than the block size ({block_size} bytes); pass a larger block_size"
    else:
        text = _ROW.sub("", msg.replace("CSV parse error: ", ""))
    return DataFormatError(text, source=name, where=where)


# --- arrow -> Batch -------------------------------------------------------------------------------


def _to_batch(table: pa.Table, label_size: int, name: str, lines: _LineTracker, rows_before: int) -> Batch:
    ncols = table.num_columns - label_size
    features = np.empty((table.num_rows, ncols), dtype=np.float32)
    # Column by column into a preallocated array: no per-row Python; nulls become NaN.
    for j in range(ncols):
        features[:, j] = table.column(j + label_size).to_numpy()
    labels = None
    if label_size:
        label_col = table.column(0)
        if label_col.null_count:
            first = int(np.flatnonzero(np.isnan(label_col.to_numpy()))[0])
            raise DataFormatError(
                "missing label in the first column (for unlabelled data use label_size=0)",
                source=name,
                where=f"line {lines.line_of(rows_before + first + 1)}",
            )
        labels = label_col.to_numpy().astype(np.float32, copy=False)
    return Batch(features, labels)
