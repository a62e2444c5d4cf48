"""``text/libsvm`` / ``text/x-libsvm``: ``label index:value index:value ...`` per line, to float32 CSR.

Indices are used as given (0-based columns, as SageMaker XGBoost does); the width is ``num_features``
when given, else the largest index + 1. Blank lines are skipped. Parameters: ``num_features``.

The parser is vectorised over the whole buffer: NumPy finds the whitespace-separated tokens and the
':'-separated fields, pyarrow parses all fields at once; there is no Python loop per line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from raymaker.io.batch import Batch, DataFormatError, Source, read_all, source_name
from raymaker.io.formats.lines import iter_line_blocks, positive_int, rebatch

CONTENT_TYPES: tuple[str, ...] = ("text/libsvm", "text/x-libsvm")

DEFAULT_BLOCK_SIZE = 1 << 24  # bytes per streamed block (cut at a line end)

# Byte -> is-whitespace lookup table (faster than np.isin over the whole buffer).
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[[ord(c) for c in " \t\r\n\v\f"]] = True


def read(source: Source, **params: Any) -> Batch:
    """The whole libsvm input as one Batch with a float32 CSR matrix (0 rows for an empty input)."""
    num_features = _options(params)
    data, name = read_all(source)
    return parse(data, name=name, num_features=num_features)


def iter_batches(
    source: Source, *, batch_rows: int | str | None = None, block_size: int | str | None = None, **params: Any
) -> Iterator[Batch]:
    """Stream libsvm input in blocks of about ``block_size`` bytes (cut at line ends), or in Batches of
    ``batch_rows`` rows. Without ``num_features`` each Batch is as wide as its own largest index + 1."""
    num_features = _options(params)
    name = source_name(source)
    blocks = iter_line_blocks(source, positive_int("block_size", block_size) or DEFAULT_BLOCK_SIZE)
    batches = (parse(block, name=name, num_features=num_features, first_line=line) for block, line in blocks)
    return rebatch(batches, positive_int("batch_rows", batch_rows))


def parse(
    data: bytes | memoryview, *, name: str = "<bytes>", num_features: int | None = None, first_line: int = 1
) -> Batch:
    """Parse a buffer of complete libsvm lines; ``first_line`` numbers its first line in messages."""
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)

    def line_at(pos: int | np.integer) -> int:
        return int(np.searchsorted(newlines, pos)) + first_line

    def fail(pos: int | np.integer, message: str) -> DataFormatError:
        return DataFormatError(message, source=name, where=f"line {line_at(pos)}")

    # Tokens: runs of non-whitespace. Fields: runs of neither whitespace nor ':'.
    is_ws = _IS_WS[arr]
    is_colon = arr == 58
    tok_start, tok_end = _runs(~is_ws)
    in_field = ~(is_ws | is_colon)
    fld_start, fld_end = _runs(in_field)
    if not len(tok_start):
        width = num_features or 0
        return Batch(sp.csr_matrix((0, width), dtype=np.float32), np.empty(0, dtype=np.float32))

    tok_line = np.searchsorted(newlines, tok_start)
    is_first = np.empty(len(tok_start), dtype=bool)
    is_first[0] = True
    is_first[1:] = tok_line[1:] != tok_line[:-1]

    # Every colon lies inside a token; count them per token and remember the (last) one's position.
    colons = np.flatnonzero(is_colon)
    colon_tok = np.searchsorted(tok_start, colons, side="right") - 1
    n_colons = np.bincount(colon_tok, minlength=len(tok_start))
    colon_pos = np.full(len(tok_start), -1, dtype=np.int64)
    colon_pos[colon_tok] = colons

    def token(i: int | np.integer) -> str:
        return bytes(arr[tok_start[i] : tok_end[i]]).decode("utf-8", "replace")

    bad = np.flatnonzero(is_first & (n_colons != 0))
    if len(bad):
        i = bad[0]
        raise fail(tok_start[i], f"expected a label first, got {token(i)!r}; write 'label index:value ...'")
    well_formed = (n_colons == 1) & (colon_pos > tok_start) & (colon_pos < tok_end - 1)
    bad = np.flatnonzero(~is_first & ~well_formed)
    if len(bad):
        i = bad[0]
        raise fail(tok_start[i], f"bad token {token(i)!r}; expected index:value")

    # Now the fields line up with the tokens: a label is one field, index:value two.
    fld_of_tok = np.cumsum(np.where(is_first, 1, 2)) - np.where(is_first, 1, 2)
    fields = _strings(arr, in_field, fld_start, fld_end)
    feat_fld = fld_of_tok[~is_first]
    labels = _cast(fields, fld_of_tok[is_first], pa.float32(), "label", fld_start, fail)
    indices = _cast(fields, feat_fld, pa.int64(), "index", fld_start, fail)
    values = _cast(fields, feat_fld + 1, pa.float32(), "value", fld_start, fail)

    row_of_feat = (np.cumsum(is_first) - 1)[~is_first]
    indptr = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of_feat, minlength=len(labels)), out=indptr[1:])
    width = int(indices.max()) + 1 if len(indices) else 0
    if len(indices) and indices.min() < 0:
        raise fail(fld_start[feat_fld[np.argmin(indices)]], f"negative index {int(indices.min())}")
    if num_features is not None:
        if width > num_features:
            at = fld_start[feat_fld[np.flatnonzero(indices >= num_features)[0]]]
            raise fail(at, f"index {width - 1} is out of range for num_features={num_features}")
        width = num_features
    index_dtype = np.int32 if max(width, len(indices)) < 2**31 else np.int64
    matrix = sp.csr_matrix(
        (values, indices.astype(index_dtype), indptr.astype(index_dtype)), shape=(len(labels), width)
    )
    return Batch(matrix, labels)


# --- internals ------------------------------------------------------------------------------------


def _options(params: dict[str, Any]) -> int | None:
    params = dict(params)
    params.pop("charset", None)
    num_features = params.pop("num_features", None)
    if params:
        raise ValueError(
            f"unsupported text/libsvm parameter(s): {', '.join(sorted(params))}; supported: num_features"
        )
    return positive_int("num_features", num_features)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) offsets of the runs of True in ``mask``."""
    edges = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _strings(arr: np.ndarray, keep: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.LargeStringArray:
    """The runs of ``keep`` (``starts``/``ends``) as one Arrow string array, without a Python loop:
    pack the kept bytes and derive the offsets from the run lengths."""
    count = len(starts)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    packed = np.ascontiguousarray(arr[keep])
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(packed))


def _cast(
    fields: pa.LargeStringArray,
    which: np.ndarray,
    to: pa.DataType,
    what: str,
    fld_start: np.ndarray,
    fail: Callable[[int, str], DataFormatError],
) -> np.ndarray:
    strings = fields.take(pa.array(which))
    try:
        return pc.cast(strings, to).to_numpy()
    except pa.ArrowInvalid:
        bad = _first_unparsable(strings, to)
    kind = "an integer" if pa.types.is_integer(to) else "a number"
    raise fail(fld_start[which[bad]], f"{what} {strings[bad].as_py()!r} is not {kind}")


def _first_unparsable(strings: pa.Array, to: pa.DataType) -> int:
    """Index of the first string that does not cast (bisection: vectorised, and only on the error path)."""
    lo, hi = 0, len(strings)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(strings.slice(lo, mid - lo), to)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo
