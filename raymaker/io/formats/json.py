"""``application/json`` and ``application/jsonlines``: SageMaker's inference request shapes.

An instance is ``{"features": [...]}`` (dense), ``{"data": {"features": {"values": [...]}}}`` (dense) or
``{"data": {"features": {"keys": [...], "shape": [n], "values": [...]}}}`` (sparse), or a bare list of
numbers; any may carry ``"label"`` (a number, or ``{"values": [x]}`` under ``data``). A JSON document
is ``{"instances": [...]}``, a list of instances (e.g. a list of lists) or one instance; JSON lines
hold one instance (or such a document) per line. The result is dense float32 when every instance is
dense, else CSR.

Both content types share this module and the registry does not pass the content type, so the input
says which it is: a whole-document parse that stops at "Extra data" means JSON lines. A JSON-lines
input made only of ``{"features": [...], "label": x}`` rows is decoded by pyarrow's JSON reader and
flattened through the list offsets; anything else falls back to ``json.loads`` per line.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import scipy.sparse as sp

from raymaker.io.batch import Batch, DataFormatError, Source, read_all, source_name
from raymaker.io.formats.lines import iter_line_blocks, positive_int, rebatch

CONTENT_TYPES: tuple[str, ...] = ("application/jsonlines", "application/json")

_DEFAULT_BLOCK_SIZE = 1 << 24

_SHAPES = (
    '{"features": [...]}, {"data": {"features": {"values": [...]}}}, '
    '{"data": {"features": {"keys": [...], "shape": [n], "values": [...]}}} or a list of numbers'
)


def read(source: Source, **params: Any) -> Batch:
    """A JSON document or JSON lines input as one Batch (0 rows for an empty input)."""
    _options(params)
    data, name = read_all(source)
    return _parse_any(bytes(data), name)


def _parse_any(data: bytes, name: str) -> Batch:
    if not data.strip():
        return _empty()
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise _decode_error(exc, name, first_line=1) from None
        return parse_lines(data, name=name)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text: {exc.reason}", source=name) from None
    return _assemble(_collect(doc, _Rows(), name, line=None), name)


def iter_batches(
    source: Source, *, batch_rows: int | str | None = None, block_size: int | str | None = None, **params: Any
) -> Iterator[Batch]:
    """Stream JSON lines in blocks of about ``block_size`` bytes, or in Batches of ``batch_rows`` rows. A
    (multi-line) JSON document cannot be streamed: it comes back as one Batch."""
    _options(params)
    name = source_name(source)
    batch_rows = positive_int("batch_rows", batch_rows)
    blocks = iter_line_blocks(source, positive_int("block_size", block_size) or _DEFAULT_BLOCK_SIZE)
    return rebatch(_stream(blocks, name), batch_rows)


def parse_lines(data: bytes, *, name: str = "<bytes>", first_line: int = 1) -> Batch:
    """JSON lines (complete lines; ``first_line`` numbers the first in messages) as one Batch."""
    batch = _fast_lines(data)
    if batch is not None:
        return batch
    rows = _Rows()
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _decode_error(exc, name, first_line=number) from None
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                f"not UTF-8 text: {exc.reason}", source=name, where=f"line {number}"
            ) from None
        _collect(obj, rows, name, line=number)
    return _assemble(rows, name)


# --- streaming ------------------------------------------------------------------------------------


def _stream(blocks: Iterator[tuple[bytes, int]], name: str) -> Iterator[Batch]:
    for block, line in blocks:
        first = next((ln for ln in block.split(b"\n") if ln.strip()), None)
        if first is None:
            continue
        if line == 1 and not _is_json(first):
            # A pretty-printed document, not JSON lines: it has to be parsed whole.
            rest = b"".join(b for b, _ in blocks)
            yield _parse_any(block + rest, name)
            return
        yield parse_lines(block, name=name, first_line=line)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


# --- fast path: {"features": [...], "label": x} per line --------------------------------------------


_LEADING_NULL = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\n\r]*null")


def _fast_lines(data: bytes) -> Batch | None:
    """Decode ``{"features": [numbers], "label": number}`` lines with pyarrow; None when the input has
    any other shape (or any error), so the per-line parser can handle it and name the line."""
    if _LEADING_NULL.match(data):  # pyarrow's read_json crashes the process on a leading null
        return None
    try:
        table = pajson.read_json(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    names = set(table.column_names)
    if "features" not in names or not names <= {"features", "label"}:
        return None
    feats = table.column("features")
    if not (pa.types.is_list(feats.type) or pa.types.is_large_list(feats.type)):
        return None
    if not _is_number(feats.type.value_type) or feats.null_count:
        return None
    labels = None
    if "label" in names:
        col = table.column("label")
        if not _is_number(col.type) or col.null_count:
            return None
        labels = col.to_numpy().astype(np.float32, copy=False)
    lists = feats.combine_chunks() if feats.num_chunks != 1 else feats.chunk(0)
    offsets = lists.offsets.to_numpy()
    lengths = np.diff(offsets)
    values = lists.flatten()
    if len(lists) == 0 or values.null_count or (lengths != lengths[0]).any():
        return None  # ragged rows or null values: the slow path reports the line
    width = int(lengths[0])
    features = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(lists), width)
    return Batch(features, labels)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


# --- general path ---------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Instances collected so far, column-wise; ``where`` says where each came from, for messages."""

    values: list[list] = field(default_factory=list)
    keys: list[list | None] = field(default_factory=list)  # None: dense
    widths: list[int | None] = field(default_factory=list)
    labels: list[float | None] = field(default_factory=list)
    where: list[str] = field(default_factory=list)


def _collect(obj: Any, rows: _Rows, name: str, line: int | None) -> _Rows:
    """Add the instances of one parsed document (or JSON line) to ``rows``."""
    prefix = f"line {line}: " if line is not None else ""
    if isinstance(obj, dict) and "instances" in obj:
        instances = obj["instances"]
        if not isinstance(instances, list):
            raise DataFormatError(
                "'instances' must be a list", source=name, where=prefix.rstrip(": ") or None
            )
        for i, inst in enumerate(instances):
            _add(inst, rows, name, f"{prefix}instances[{i}]")
    elif isinstance(obj, list) and obj and all(isinstance(x, (list, dict)) for x in obj):
        for i, inst in enumerate(obj):
            _add(inst, rows, name, f"{prefix}[{i}]")
    else:
        _add(obj, rows, name, prefix.rstrip(": ") if prefix else "instance")
    return rows


def _add(inst: Any, rows: _Rows, name: str, where: str) -> None:
    def fail(message: str) -> DataFormatError:
        return DataFormatError(message, source=name, where=where)

    label = None
    if isinstance(inst, list):
        values, keys, width = inst, None, None
    elif isinstance(inst, dict):
        label = inst.get("label")
        if "features" in inst:
            feats = inst["features"]
        elif isinstance(inst.get("data"), dict) and "features" in inst["data"]:
            feats = inst["data"]["features"]
            label = inst["data"].get("label", label)
        else:
            raise fail(f"missing 'features'; expected {_SHAPES}")
        if isinstance(feats, list):
            values, keys, width = feats, None, None
        elif isinstance(feats, dict) and isinstance(feats.get("values"), list):
            values, keys, width = feats["values"], feats.get("keys"), _width(feats.get("shape"), fail)
            if keys is not None and (not isinstance(keys, list) or len(keys) != len(values)):
                raise fail("'keys' must be a list as long as 'values'")
        else:
            raise fail("'features' must be a list or {'values': [...]} (with 'keys' and 'shape' when sparse)")
    else:
        raise fail(f"expected {_SHAPES}, got {type(inst).__name__}")
    rows.values.append(values)
    rows.keys.append(keys)
    rows.widths.append(width)
    rows.labels.append(_label(label, fail))
    rows.where.append(where)


def _width(shape: Any, fail: Any) -> int | None:
    if shape is None:
        return None
    if isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 0:
        return shape[0]
    raise fail(f"'shape' must be [number_of_features], got {shape!r}")


def _label(label: Any, fail: Any) -> float | None:
    if isinstance(label, dict):  # {"values": [x]}, as in RecordIO-protobuf's label map
        label = label.get("values")
    if isinstance(label, list):
        if len(label) != 1:
            raise fail(f"'label' must be one number, got {label!r}")
        label = label[0]
    if label is None or (isinstance(label, (int, float)) and not isinstance(label, bool)):
        return label
    raise fail(f"'label' must be a number, got {label!r}")


def _assemble(rows: _Rows, name: str) -> Batch:
    n = len(rows.values)
    if n == 0:
        return _empty()
    has_label = [x is not None for x in rows.labels]
    if any(has_label) and not all(has_label):
        i = has_label.index(not has_label[0])
        this, first = ("has", "has none") if has_label[i] else ("has no", "has")
        raise DataFormatError(
            f"{this} 'label' but {rows.where[0]} {first}; label all instances or none",
            source=name,
            where=rows.where[i],
        )
    labels = np.asarray(rows.labels, dtype=np.float32) if has_label[0] else None
    if all(k is None for k in rows.keys):
        return Batch(_dense(rows, name), labels)
    return Batch(_sparse(rows, name), labels)


def _dense(rows: _Rows, name: str) -> np.ndarray:
    try:
        out = np.array(rows.values, dtype=np.float32)
        if out.ndim == 2:
            return out
    except (ValueError, TypeError):
        pass
    # Only on error: find the instance to blame.
    width = len(rows.values[0])
    for values, where in zip(rows.values, rows.where, strict=True):
        if len(values) != width:
            raise DataFormatError(
                f"expected {width} features (as in {rows.where[0]}), got {len(values)}",
                source=name,
                where=where,
            )
        _numbers(values, name, where)
    raise DataFormatError("features must be flat lists of numbers", source=name)  # pragma: no cover


def _sparse(rows: _Rows, name: str) -> sp.csr_matrix:
    lengths = np.fromiter((len(v) for v in rows.values), dtype=np.int64, count=len(rows.values))
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    try:
        values = np.array(list(itertools.chain.from_iterable(rows.values)), dtype=np.float32)
        keys = np.array(
            list(
                itertools.chain.from_iterable(
                    range(len(v)) if k is None else k for v, k in zip(rows.values, rows.keys)
                )
            ),
            dtype=np.int64,
        )
    except (ValueError, TypeError, OverflowError):
        for v, k, where in zip(rows.values, rows.keys, rows.where, strict=True):
            _numbers(v, name, where)
            if k is not None and not all(isinstance(x, int) and not isinstance(x, bool) for x in k):
                raise DataFormatError("'keys' must be integers", source=name, where=where) from None
        raise
    row_widths = np.fromiter(
        (_row_width(v, k, w) for v, k, w in zip(rows.values, rows.keys, rows.widths, strict=True)),
        dtype=np.int64,
        count=len(lengths),
    )
    width = int(row_widths.max())
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    bad = np.flatnonzero((keys < 0) | (keys >= row_widths[row_of]))
    if len(bad):
        row = int(row_of[bad[0]])
        raise DataFormatError(
            f"key {int(keys[bad[0]])} is outside the shape [{int(row_widths[row])}]",
            source=name,
            where=rows.where[row],
        )
    index_dtype = np.int32 if max(width, len(keys)) < 2**31 else np.int64
    return sp.csr_matrix(
        (values, keys.astype(index_dtype), indptr.astype(index_dtype)), shape=(len(lengths), width)
    )


def _row_width(values: list, keys: list | None, width: int | None) -> int:
    """A row's width: its 'shape', else (dense rows, sparse rows without one) the columns it spans."""
    if width is not None:
        return width
    return len(values) if keys is None else max(keys, default=-1) + 1


def _numbers(values: list, name: str, where: str) -> None:
    for j, x in enumerate(values):
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            raise DataFormatError(f"feature {j} is {x!r}, not a number", source=name, where=where)


# --- small things ---------------------------------------------------------------------------------


def _options(params: dict[str, Any]) -> None:
    unknown = set(params) - {"charset"}
    if unknown:
        raise ValueError(f"unsupported JSON parameter(s): {', '.join(sorted(unknown))}")


def _empty() -> Batch:
    return Batch(np.empty((0, 0), dtype=np.float32), None)


def _decode_error(exc: json.JSONDecodeError, name: str, first_line: int) -> DataFormatError:
    line = first_line + exc.lineno - 1
    return DataFormatError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=name, where=f"line {line}")
