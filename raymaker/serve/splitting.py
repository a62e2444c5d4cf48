"""Batch transform: how one input object becomes requests, and how responses become one ``.out`` object.

SageMaker's ``TransformInput.SplitType`` cuts an object into records, ``BatchStrategy`` and
``MaxPayloadInMB`` group consecutive records into mini-batches (one HTTP request each), and
``TransformOutput.AssembleWith`` glues the responses back together in input order. Sources: API
``TransformInput``/``CreateTransformJob``/``TransformOutput`` and DG ``batch-transform``; contract
reference §3.4 (and §1.1 for RecordIO framing).

Pure Python (NumPy only); the batch-transform runner calls these per input object::

    records = split_records(data, split_type, source=uri)
    for idx in mini_batches(records, strategy, max_payload_mb << 20, source=uri,
                            separator_bytes=1 if split_type == "Line" else 0):
        body = join_payload([records[i] for i in idx], split_type)
        ...
    out = assemble(responses, assemble_with)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import numpy as np

from raymaker.io.batch import DataFormatError
from raymaker.io.recordio.framing import _LEN_MASK, _MAGIC_BYTES, MAGIC, _frame

__all__ = [
    "ASSEMBLE_WITH",
    "BATCH_STRATEGIES",
    "SPLIT_TYPES",
    "assemble",
    "join_payload",
    "mini_batches",
    "recordio_payload",
    "split_records",
]

SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")
ASSEMBLE_WITH = ("None", "Line")

_MB = 1 << 20


def _canonical(value: str | None, allowed: Sequence[str], what: str) -> str:
    """Map a user spelling to SageMaker's enum value: case and underscores are ignored, so the
    container-side spellings (``SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD``) and Python's None work too."""
    key = "none" if value is None else str(value).replace("_", "").lower()
    for name in allowed:
        if name.lower() == key:
            return name
    raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def split_records(data: bytes, split_type: str, *, source: str = "") -> list[bytes]:
    """Cut one input object into records.

    - ``None``: the whole object is one record.
    - ``Line``: one record per line; ``\\n`` and ``\\r\\n`` terminators are removed, a last line
      without a terminator is kept, and empty lines are skipped (SageMaker sends no request for them).
    - ``RecordIO``: one record per RecordIO record (MXNet/dmlc framing, contract §1.1). Each record is
      the complete framed bytes (header + payload + padding), so it can be sent on its own as
      ``application/x-recordio-protobuf``; the parts of a multi-part record (cflag 1..3) stay together.
      A last record written without its alignment padding gets the padding added. Truncated or
      corrupt framing raises ``DataFormatError`` naming ``source`` and the byte offset.
    - ``TFRecord``: not supported (ValueError).

    Where the docs are silent: an empty object has no records (``[]``) whatever the split type, so
    the runner sends nothing and writes an empty ``.out`` rather than posting an empty body.
    """
    kind = _canonical(split_type, SPLIT_TYPES, "SplitType")
    data = bytes(data)
    if not data:
        return []
    if kind == "None":
        return [data]
    if kind == "Line":
        lines = data.split(b"\n")
        if b"\r" in data:
            lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
        return [ln for ln in lines if ln]
    if kind == "RecordIO":
        return _split_recordio(data, source)
    raise ValueError(
        f"SplitType TFRecord is not supported by raymaker batch transform{_for(source)}; "
        "use SplitType None (whole object per request), Line, or RecordIO"
    )


def _for(source: str) -> str:
    return f" (input {source})" if source else ""


def _split_recordio(data: bytes, source: str) -> list[bytes]:
    # The framing module finds every record (vectorized when it can) and raises DataFormatError with
    # the byte offset on damage; its ``offsets`` are header offsets in ``data`` (first part for
    # multi-part records), so consecutive offsets delimit whole framed records.
    fr = _frame(np.frombuffer(data, np.uint8), source or "<bytes>")
    starts = fr.offsets.tolist()
    ends = starts[1:] + [len(data)]
    out = [data[s:e] for s, e in zip(starts, ends)]
    if out and len(out[-1]) % 4:
        out[-1] += b"\0" * (-len(out[-1]) % 4)  # the writer left off the final padding
    return out


def recordio_payload(record: bytes) -> bytes:
    """The payload of one framed RecordIO record (header and padding removed, parts rejoined).

    SageMaker's API docs say that for binary split types "padding is removed if BatchStrategy is
    SingleRecord"; a runner that wants to send unframed payloads for SingleRecord can use this.
    ``split_records`` itself always returns complete frames."""
    pos, parts = 0, []
    while pos < len(record):
        if len(record) - pos < 8:
            raise DataFormatError("truncated record header", where=f"byte {pos}")
        magic, lrec = struct.unpack_from("<II", record, pos)
        if magic != MAGIC:
            raise DataFormatError(f"bad magic number 0x{magic:08X}", where=f"byte {pos}")
        n = lrec & _LEN_MASK
        if pos + 8 + n > len(record):
            raise DataFormatError(f"truncated record: header declares {n} payload bytes", where=f"byte {pos}")
        parts.append(record[pos + 8 : pos + 8 + n])
        pos += 8 + n + (-n % 4)
    return _MAGIC_BYTES.join(parts)  # the C++ writer dropped a magic word between parts


def mini_batches(
    records: Sequence[bytes],
    strategy: str,
    max_payload_bytes: int,
    *,
    source: str = "",
    separator_bytes: int = 0,
) -> Iterator[range]:
    """Group records into mini-batches; yields index ranges into ``records``, in order.

    - ``SingleRecord``: every record alone.
    - ``MultiRecord``: as many consecutive records as fit in ``max_payload_bytes``, where a batch
      costs the sum of its record sizes plus ``separator_bytes`` per record (1 for Line splits, whose
      request body is ``b"\\n".join(records) + b"\\n"``; 0 for RecordIO). Batches never span objects
      because each call sees one object.

    ``max_payload_bytes`` is ``MaxPayloadInMB`` × 2^20; 0 means no limit (SageMaker's value for
    chunked streaming): then MultiRecord sends the whole object as one batch. A record that does not
    fit on its own fails the object before anything is sent, for either strategy (SageMaker checks
    every request against MaxPayloadInMB): ValueError naming the source, the 1-based record number
    and both sizes.
    """
    kind = _canonical(strategy, BATCH_STRATEGIES, "BatchStrategy")
    limit = int(max_payload_bytes)
    if limit < 0:
        raise ValueError(f"max_payload_bytes must be >= 0 (0 = no limit); got {max_payload_bytes}")
    n = len(records)
    if n == 0:
        return
    sizes = np.fromiter((len(r) for r in records), np.int64, count=n) + int(separator_bytes)
    if limit:
        over = np.flatnonzero(sizes > limit)
        if over.size:
            i = int(over[0])
            size = len(records[i])
            with_sep = f" ({int(sizes[i])} with its separator)" if separator_bytes else ""
            prefix = f"{source}: " if source else ""
            raise ValueError(
                f"{prefix}record {i + 1} is {size} bytes{with_sep}, over "
                f"MaxPayloadInMB={limit / _MB:g} ({limit} bytes)"
            )
    if kind == "SingleRecord":
        for i in range(n):
            yield range(i, i + 1)
        return
    if not limit:
        yield range(n)
        return
    # cum[j] = bytes of records[:j]; each batch ends at the last j with cum[j] - cum[start] <= limit.
    cum = np.concatenate([[0], np.cumsum(sizes)])
    start = 0
    while start < n:
        end = int(np.searchsorted(cum, cum[start] + limit, side="right")) - 1
        yield range(start, end)  # end > start: every record fits alone (checked above)
        start = end


def join_payload(records: Sequence[bytes], split_type: str) -> bytes:
    """The request body for one mini-batch.

    ``Line``: records joined by ``\\n`` with a final ``\\n`` (one line per record, as in the input);
    ``RecordIO``: the framed records back to back; ``None``: the single record (the whole object).
    """
    kind = _canonical(split_type, SPLIT_TYPES, "SplitType")
    if kind == "Line":
        return b"\n".join(records) + b"\n" if records else b""
    if kind == "RecordIO":
        return b"".join(records)
    if kind == "None":
        if len(records) != 1:
            raise ValueError(
                f"SplitType None sends the whole object as one record; got {len(records)} records"
            )
        return bytes(records[0])
    raise ValueError("SplitType TFRecord is not supported by raymaker batch transform")


def assemble(outputs: Sequence[bytes], assemble_with: str) -> bytes:
    """Join the responses of one object's mini-batches (in input order) into its ``.out`` object.

    ``None``: the responses concatenated as they are (the default; right for binary and JSON output).
    ``Line``: a newline after every response; one that already ends with ``\\n`` gets none added, so a
    CSV/JSON Lines response of several lines is not followed by a blank line.
    """
    kind = _canonical(assemble_with, ASSEMBLE_WITH, "AssembleWith")
    if kind == "None":
        return b"".join(outputs)
    return b"".join(o if o.endswith(b"\n") else bytes(o) + b"\n" for o in outputs)
