"""``application/x-parquet``: numeric Parquet to a dense float32 Batch.

Two layouts:
  * scalar columns: the label is the first column (SageMaker XGBoost's convention), or the column named
    by ``label_column``; ``label_size=0`` means no label. Every other column is a feature.
  * a list / fixed-size-list / tensor column ``features`` (e.g. written from ``Batch.to_arrow``), with
    an optional ``label`` column (or ``label_column``).
Nulls in features become NaN (XGBoost's "missing"); a null label is an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raymaker.io.batch import Batch, DataFormatError, Source, read_all, source_name

CONTENT_TYPES: tuple[str, ...] = ("application/x-parquet",)

DEFAULT_BATCH_ROWS = 65536


def read(source: Source, **params: Any) -> Batch:
    """The whole Parquet input as one Batch."""
    label_size, label_column = _options(params)
    name = source_name(source)
    try:
        table = pq.read_table(_input(source))
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(exc, name) from None
    return to_batch(table, label_size=label_size, label_column=label_column, name=name)


def iter_batches(source: Source, *, batch_rows: int | str | None = None, **params: Any) -> Iterator[Batch]:
    """Stream a Parquet input in Batches of ``batch_rows`` rows (65536 by default). Parquet keeps its
    footer at the end, so a non-seekable stream is read into memory first."""
    label_size, label_column = _options(params)
    rows = int(batch_rows) if batch_rows is not None else DEFAULT_BATCH_ROWS
    if rows <= 0:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    name = source_name(source)
    try:
        file = pq.ParquetFile(_input(source))
        batches = file.iter_batches(batch_size=rows)
        done = 0
        while True:
            try:
                record_batch = next(batches)
            except StopIteration:
                return
            table = pa.Table.from_batches([record_batch])
            yield to_batch(table, label_size=label_size, label_column=label_column, name=name, first_row=done)
            done += table.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(exc, name) from None


def to_batch(
    table: pa.Table,
    *,
    label_size: int = 1,
    label_column: str | None = None,
    name: str = "<table>",
    first_row: int = 0,
) -> Batch:
    """An Arrow table in either layout (see the module docstring) as a dense float32 Batch; messages
    number rows from 0, offset by ``first_row``."""
    columns = table.column_names
    if label_column is not None and label_column not in columns:
        raise DataFormatError(
            f"no label column {label_column!r}; columns are {', '.join(columns)}", source=name
        )
    if "features" in columns and _is_list(table.schema.field("features").type):
        label = label_column or ("label" if label_size and "label" in columns else None)
        features = _tensor(table.column("features"), name, first_row)
    else:
        label = label_column or (columns[0] if label_size and columns else None)
        names = [c for c in columns if c != label]
        features = np.empty((table.num_rows, len(names)), dtype=np.float32)
        # Column by column into a preallocated array: no per-row Python.
        for j, col in enumerate(names):
            features[:, j] = _numeric(table.column(col), col, name)
    labels = None
    if label is not None:
        labels = _numeric(table.column(label), label, name)
        if np.isnan(labels).any() and table.column(label).null_count:
            row = int(np.flatnonzero(table.column(label).is_null().to_numpy(zero_copy_only=False))[0])
            raise DataFormatError(
                f"label column {label!r} is null (for unlabelled data use label_size=0)",
                source=name,
                where=f"row {first_row + row}",
            )
    return Batch(features, labels)


# --- internals ------------------------------------------------------------------------------------


def _options(params: dict[str, Any]) -> tuple[int, str | None]:
    params = dict(params)
    raw = params.pop("label_size", 1)
    label_column = params.pop("label_column", None)
    if params:
        raise ValueError(
            f"unsupported application/x-parquet parameter(s): {', '.join(sorted(params))}; "
            "supported: label_size, label_column"
        )
    try:
        label_size = int(raw)
    except (TypeError, ValueError):
        label_size = -1
    if label_size not in (0, 1):
        raise ValueError(f"application/x-parquet: label_size must be 0 or 1, got {raw!r}")
    return label_size, label_column


def _input(source: Source) -> Any:
    """Something pyarrow.parquet can open: a path as is (memory-mapped reads), a seekable stream as
    is, anything else (bytes, a pipe) as an in-memory buffer."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "read") and getattr(source, "seekable", lambda: False)():
        return source
    data, _ = read_all(source)
    return pa.BufferReader(data)


def _corrupt(exc: Exception, name: str) -> DataFormatError:
    return DataFormatError(f"not a readable Parquet file ({exc})", source=name)


def _is_list(t: pa.DataType) -> bool:
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _numeric(col: pa.ChunkedArray, col_name: str, name: str) -> np.ndarray:
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise DataFormatError(
            f"column {col_name!r} has type {t}, not a number; drop it or cast it before writing", source=name
        )
    return col.to_numpy().astype(np.float32, copy=False)  # nulls become NaN


def _tensor(col: pa.ChunkedArray, name: str, first_row: int) -> np.ndarray:
    """A list-typed column (fixed-size, variable with equal lengths, nested, or a tensor extension
    type) as an (n, width) float32 array, through the list offsets rather than per-row Python."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(arr)
    depth = 0
    while _is_list(arr.type):
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        # Rows are only meaningful at the outer level; a nested level gets the message alone.
        where = None
        if arr.null_count:
            if depth == 0:
                where = (
                    f"row {first_row + int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])}"
                )
            raise DataFormatError("'features' has a null list", source=name, where=where)
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = np.diff(arr.offsets.to_numpy())
            if len(lengths) and (lengths != lengths[0]).any():
                row = int(np.flatnonzero(lengths != lengths[0])[0])
                where = f"row {first_row + row}" if depth == 0 else None
                raise DataFormatError(
                    f"'features' lists differ in length ({lengths[row]} vs {lengths[0]}); all rows need the same",
                    source=name,
                    where=where,
                )
        arr = arr.flatten()
        depth += 1
    values = _numeric(pa.chunked_array([arr], type=arr.type), "features", name)
    return values.reshape(n, -1) if n else values.reshape(0, 0)
