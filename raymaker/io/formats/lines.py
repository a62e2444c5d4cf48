"""Helpers shared by the line-oriented formats (CSV, libsvm, JSON lines): option parsing, reading in
blocks cut at line ends, and re-cutting a stream of Batches to a fixed row count."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from raymaker.io.batch import Batch, Source, open_binary


def positive_int(what: str, value: int | str | None) -> int | None:
    """An optional positive integer option that may arrive as a string."""
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return n


def iter_line_blocks(source: Source, block_size: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of about ``block_size`` bytes that end at a line end, with the first line's number."""
    stream, must_close = open_binary(source)
    try:
        carry = b""
        line = 1
        while True:
            chunk = stream.read(block_size)
            if not chunk:
                break
            buf = carry + chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the block: keep reading
                carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
            yield block, line
            line += block.count(b"\n")
        if carry:
            yield carry, line
    finally:
        if must_close:
            stream.close()


def rebatch(batches: Iterable[Batch], batch_rows: int | None) -> Iterator[Batch]:
    """Re-cut a stream of Batches into Batches of exactly ``batch_rows`` rows (the last may be shorter);
    passes them through unchanged when ``batch_rows`` is None. Empty Batches are dropped."""
    pending: list[Batch] = []
    rows = 0
    for batch in batches:
        if not len(batch):
            continue
        if batch_rows is None:
            yield batch
            continue
        pending.append(batch)
        rows += len(batch)
        if rows < batch_rows:
            continue
        merged = Batch.concat(pending)
        start = 0
        while rows - start >= batch_rows:
            yield _slice(merged, start, start + batch_rows)
            start += batch_rows
        pending = [_slice(merged, start, rows)] if start < rows else []
        rows -= start
    if pending:
        yield Batch.concat(pending)


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    labels = None if batch.labels is None else batch.labels[start:stop]
    return Batch(batch.features[start:stop], labels)
