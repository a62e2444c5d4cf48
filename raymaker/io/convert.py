"""Write a Batch in a SageMaker training format: the inverse of the readers, for ``raymaker io convert``."""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raymaker.io import recordio
from raymaker.io.batch import Batch
from raymaker.io.formats import parse_content_type

WRITABLE = ("application/x-recordio-protobuf", "text/csv", "text/libsvm", "application/x-parquet")


def write(batch: Batch, file: BinaryIO, content_type: str) -> None:
    """Write ``batch`` to a binary file in ``content_type`` (label first, as SageMaker's built-ins read)."""
    mime = parse_content_type(content_type).mime
    if mime == "application/x-recordio-protobuf":
        recordio.write_batch(file, batch)
    elif mime == "text/csv":
        pacsv.write_csv(_table(_dense(batch)), file, pacsv.WriteOptions(include_header=False))
    elif mime in ("text/libsvm", "text/x-libsvm"):
        _write_libsvm(batch, file)
    elif mime == "application/x-parquet":
        pq.write_table(_table(_dense(batch)), file)
    else:
        raise ValueError(f"cannot write {mime!r}; writable content types: {', '.join(WRITABLE)}")


def to_bytes(batch: Batch, content_type: str) -> bytes:
    buf = io.BytesIO()
    write(batch, buf, content_type)
    return buf.getvalue()


def _dense(batch: Batch) -> Batch:
    if batch.is_sparse:
        return Batch(batch.features.toarray(), batch.labels)
    if batch.features.ndim != 2:
        raise ValueError(
            f"only 2-D feature matrices can be written as tables, not shape {batch.features.shape}"
        )
    return batch


def _table(batch: Batch) -> pa.Table:
    cols = {}
    if batch.labels is not None:
        cols["label"] = pa.array(np.asarray(batch.labels))
    for j in range(batch.features.shape[1]):
        cols[f"f{j}"] = pa.array(batch.features[:, j])
    return pa.table(cols)


def _write_libsvm(batch: Batch, file: BinaryIO) -> None:
    # libsvm is row text by nature; this writer is for small conversions, not a hot path.
    import scipy.sparse as sp

    csr = sp.csr_matrix(batch.features)
    labels = batch.labels if batch.labels is not None else np.zeros(csr.shape[0])
    lines = []
    for i in range(csr.shape[0]):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        pairs = " ".join(f"{j}:{v:.9g}" for j, v in zip(csr.indices[lo:hi], csr.data[lo:hi]))
        lines.append(f"{labels[i]:.9g} {pairs}".rstrip())
    file.write(("\n".join(lines) + "\n").encode())
