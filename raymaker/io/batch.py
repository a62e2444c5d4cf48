"""The one shape every format decodes into, and the error every decoder raises."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

# What a decoder reads: raw bytes, a local path, or an open binary stream.
Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


class DataFormatError(ValueError):
    """Malformed input. The message names the source and where (line, record or byte) it broke."""

    def __init__(self, message: str, *, source: str | None = None, where: str | None = None):
        self.source = source
        self.where = where
        parts = [p for p in (source, where) if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)


@dataclass
class Batch:
    """Columnar training/inference data.

    features: a 2-D NumPy array (dense) or a ``scipy.sparse.csr_matrix`` (sparse), or for images a
    4-D uint8 array (N, H, W, C). labels: a 1-D NumPy array, or None for unlabelled data.
    """

    features: np.ndarray | sp.csr_matrix
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.features)

    def to_arrow(self) -> pa.Table:
        """An Arrow table for Ray Data: dense rows as a fixed-shape tensor column, sparse rows as
        ``indices``/``values`` list columns plus ``num_features``; built from buffers, no per-row Python."""
        from ray.data._internal.tensor_extensions.arrow import ArrowTensorArray

        cols: dict[str, pa.Array] = {}
        if self.is_sparse:
            csr = self.features
            offsets = pa.array(csr.indptr.astype(np.int32, copy=False))
            cols["indices"] = pa.ListArray.from_arrays(offsets, pa.array(csr.indices.astype(np.int64)))
            cols["values"] = pa.ListArray.from_arrays(offsets, pa.array(csr.data))
            cols["num_features"] = pa.array(np.full(csr.shape[0], csr.shape[1], dtype=np.int64))
        else:
            cols["features"] = ArrowTensorArray.from_numpy(np.ascontiguousarray(self.features))
        if self.labels is not None:
            cols["label"] = pa.array(np.asarray(self.labels))
        return pa.table(cols)

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        if not batches:
            raise ValueError("no batches to concatenate")
        if len(batches) == 1:
            return batches[0]
        if any(b.is_sparse for b in batches):
            width = max(b.features.shape[1] for b in batches)
            feats = sp.vstack(
                [sp.csr_matrix(b.features, shape=(b.features.shape[0], width)) for b in batches], format="csr"
            )
        else:
            feats = np.concatenate([b.features for b in batches])
        labels = None
        if all(b.labels is not None for b in batches):
            labels = np.concatenate([b.labels for b in batches])
        elif any(b.labels is not None for b in batches):
            raise ValueError("cannot concatenate labelled and unlabelled batches")
        return cls(feats, labels)


def read_all(source: Source) -> tuple[bytes | memoryview, str]:
    """Whole contents of a source and a name for error messages."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source) if isinstance(source, bytearray) else source, "<bytes>"
    if isinstance(source, memoryview):
        return source, "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as f:
            return f.read(), path
    if hasattr(source, "read"):
        return source.read(), getattr(source, "name", None) or "<stream>"
    raise TypeError(f"cannot read data from {type(source).__name__}: pass bytes, a path or a binary stream")


def source_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(source, "name", None) or "<stream>")


def open_binary(source: Source) -> tuple[BinaryIO, bool]:
    """A readable binary stream for a source, and whether the caller must close it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source), True
    if isinstance(source, (str, os.PathLike)):
        return open(os.fspath(source), "rb"), True
    if hasattr(source, "read"):
        return source, False
    raise TypeError(f"cannot read data from {type(source).__name__}: pass bytes, a path or a binary stream")
