"""What the streaming unsupervised algorithms (k-means, PCA) share: fixed-size mini-batches from a
channel, feature-width checks, squared distances that work for dense and CSR rows, the same mini-batch
math in torch on a device (``TorchRows``, used when the worker has a GPU), and NumPy collectives over
``torch.distributed`` (the process group the engine sets up across an instance group, gloo or NCCL).

Mini-batches are re-cut to exactly ``size`` rows whatever Batches the channel yields, so a result does
not depend on how the input happened to be split into files or records.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from raymaker.algorithms import devices as dv
from raymaker.algorithms.base import TrainContext, TrainingData

Matrix = np.ndarray | sp.csr_matrix


def as_matrix(features: Any, feature_dim: int, where: str) -> Matrix:
    """float64 rows of width ``feature_dim``: dense stays dense, sparse becomes CSR (never densified)."""
    if sp.issparse(features):
        x = sp.csr_matrix(features, dtype=np.float64)
        if x.shape[1] > feature_dim:
            raise ValueError(
                f"{where}: rows have {x.shape[1]} features but feature_dim is {feature_dim}; "
                f"set feature_dim to {x.shape[1]}"
            )
        if x.shape[1] < feature_dim:  # libsvm-style data may not reach the last column
            x = sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], feature_dim))
        return x
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D table of features, got an array of shape {x.shape}")
    if x.shape[1] != feature_dim:
        raise ValueError(
            f"{where}: rows have {x.shape[1]} features but feature_dim is {feature_dim}; "
            f"set feature_dim to {x.shape[1]} (for CSV without a label use text/csv;label_size=0)"
        )
    return np.ascontiguousarray(x, dtype=np.float64)


def stack(parts: list[Matrix]) -> Matrix:
    """Rows of ``parts`` in order: CSR if any part is sparse, else dense."""
    if len(parts) == 1:
        return parts[0]
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.concatenate(parts)


def iter_minibatches(data: TrainingData, channel: str, size: int, feature_dim: int) -> Iterator[Matrix]:
    """The channel's rows in order, as float64 mini-batches of exactly ``size`` rows (the last may be
    short), converted one mini-batch at a time so a large Batch is never copied whole. Labels, if the
    channel has any, are ignored: these algorithms are unsupervised."""
    parts: list[Matrix] = []
    held = 0
    for batch in data.iter(channel):
        if not len(batch):
            continue
        x = batch.features
        if sp.issparse(x) and x.format != "csr":
            x = sp.csr_matrix(x)
        start = 0
        while start < x.shape[0]:
            take = min(size - held, x.shape[0] - start)
            parts.append(as_matrix(x[start : start + take], feature_dim, f"channel {channel!r}"))
            held += take
            start += take
            if held == size:
                yield stack(parts)
                parts, held = [], 0
    if held:
        yield stack(parts)


def row_sq_norms(x: Matrix) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray(x.multiply(x).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", x, x)


def sq_distances(x: Matrix, centers: np.ndarray, center_sq: np.ndarray | None = None) -> np.ndarray:
    """(rows, centers) squared Euclidean distances, via ||x||^2 - 2 x.c + ||c||^2 so CSR rows stay sparse."""
    if center_sq is None:
        center_sq = np.einsum("ij,ij->i", centers, centers)
    cross = x @ centers.T
    d2 = row_sq_norms(x)[:, None] - 2.0 * np.asarray(cross) + center_sq[None, :]
    return np.maximum(d2, 0.0, out=d2)  # rounding can make a zero distance slightly negative


def sum_rows_by(x: Matrix, assign: np.ndarray, groups: int) -> np.ndarray:
    """(groups, features) sums of the rows of ``x`` grouped by ``assign``, without densifying CSR."""
    onehot = sp.csr_matrix(
        (np.ones(len(assign)), (assign, np.arange(len(assign)))), shape=(groups, len(assign))
    )
    out = onehot @ x
    return out.toarray() if sp.issparse(out) else np.asarray(out)


def gram(x: Matrix) -> np.ndarray:
    """X^T X as a dense float64 matrix."""
    g = x.T @ x
    return g.toarray() if sp.issparse(g) else g


# --- the mini-batch math in torch, on a device ------------------------------------------------------


def compute_device(ctx: TrainContext, algorithm: str, compute: str = "auto") -> Any | None:
    """Where k-means / PCA do their mini-batch math: None for NumPy on the CPU (a worker without a
    GPU), else the ``torch.device`` (the worker's GPU; the CPU too when ``compute`` is "torch", which
    tests and benchmarks use to run the torch path without a GPU). DeviceError for unusable GPUs."""
    devices = dv.context_devices(ctx)
    if not devices.cuda and compute != "torch":
        return None
    dv.log_devices(ctx, algorithm, devices)
    return dv.torch_device(devices)


class TorchRows:
    """A mini-batch as float64 torch tensors on ``device``: dense rows, or CSR rows kept sparse (a
    row-major COO tensor plus its row / column / value vectors). Its methods mirror the NumPy helpers
    above; results are tensors on the same device."""

    def __init__(self, x: Matrix, device: Any):
        import torch

        self.torch = torch
        self.shape = tuple(x.shape)
        self.device = device
        if sp.issparse(x):
            csr = sp.csr_matrix(x)
            if not csr.has_canonical_format:  # sorted columns, no duplicates: a coalesced COO
                csr = csr.copy()
                csr.sum_duplicates()
            coo = csr.tocoo()
            self.rows = torch.from_numpy(coo.row.astype(np.int64)).to(device)
            self.cols = torch.from_numpy(coo.col.astype(np.int64)).to(device)
            self.vals = torch.from_numpy(np.asarray(coo.data, dtype=np.float64)).to(device)
            self.sparse = torch.sparse_coo_tensor(
                torch.stack([self.rows, self.cols]),
                self.vals,
                self.shape,
                is_coalesced=True,
                check_invariants=False,
            )
            self.dense = None
        else:
            self.sparse = None
            self.dense = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(device)

    def matmul(self, m: Any) -> Any:
        """X @ m."""
        if self.dense is not None:
            return self.dense @ m
        return self.torch.sparse.mm(self.sparse, m)

    def t_matmul(self, m: Any) -> Any:
        """X^T @ m, (features, m's columns)."""
        if self.dense is not None:
            return self.dense.T @ m
        return self.torch.sparse.mm(self.sparse.t(), m)

    def row_sq_norms(self) -> Any:
        if self.dense is not None:
            return (self.dense * self.dense).sum(dim=1)
        out = self.torch.zeros(self.shape[0], dtype=self.torch.float64, device=self.device)
        return out.index_add_(0, self.rows, self.vals * self.vals)

    def col_sums(self) -> Any:
        if self.dense is not None:
            return self.dense.sum(dim=0)
        out = self.torch.zeros(self.shape[1], dtype=self.torch.float64, device=self.device)
        return out.index_add_(0, self.cols, self.vals)

    def sum_rows_by(self, assign: Any, groups: int) -> Any:
        """(groups, features) sums of the rows grouped by ``assign`` (a long tensor), CSR not densified."""
        out = self.torch.zeros((groups, self.shape[1]), dtype=self.torch.float64, device=self.device)
        if self.dense is not None:
            return out.index_add_(0, assign, self.dense)
        return out.index_put_((assign[self.rows], self.cols), self.vals, accumulate=True)

    def gram(self) -> Any:
        """X^T X, dense. CSR rows are densified one mini-batch at a time on the device (the result is
        a dense features x features matrix anyway)."""
        if self.dense is not None:
            return self.dense.T @ self.dense
        return self.torch.sparse.mm(self.sparse.t(), self.sparse.to_dense())

    def sq_distances(self, centers: Any, center_sq: Any | None = None) -> Any:
        """(rows, centers) squared Euclidean distances, as ``sq_distances`` computes them."""
        if center_sq is None:
            center_sq = (centers * centers).sum(dim=1)
        d2 = self.row_sq_norms()[:, None] - 2.0 * self.matmul(centers.T) + center_sq[None, :]
        return d2.clamp_(min=0.0)


def to_device(array: np.ndarray, device: Any) -> Any:
    """A float64 copy of ``array`` on ``device`` (a copy even on the CPU: it may be updated in place)."""
    import torch

    return torch.tensor(np.asarray(array, dtype=np.float64), dtype=torch.float64, device=device)


def to_numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


# --- collectives ------------------------------------------------------------------------------------


def _dist() -> Any | None:
    """``torch.distributed`` if a process group is up, else None. torch is never imported just to ask:
    if nothing imported it, no process group can exist."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _collective_device(dist: Any) -> Any:
    """Where the process group's backend takes tensors: the current CUDA device under NCCL (Ray
    Train's default when workers have GPUs), else the CPU (gloo)."""
    import torch

    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and "cpu:" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_tensor(t: Any, op: str = "sum") -> Any:
    """``t`` summed (or its maximum, ``op="max"``) over all workers, on ``t``'s device; ``t`` itself
    is left alone. Unchanged in one process."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return t
    buf = t.detach().to(_collective_device(dist), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return buf.to(t.device)


def world() -> tuple[int, int]:
    """(rank, world size) of this worker; (0, 1) when training in one process."""
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def allreduce_sum(*arrays: np.ndarray | float) -> list[np.ndarray]:
    """Elementwise sums over all workers (float64), packed into one all-reduce; unchanged in one process."""
    arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return arrs
    import torch

    flat = torch.from_numpy(np.concatenate([a.ravel() for a in arrs]))
    values = to_numpy(all_reduce_tensor(flat))
    out, pos = [], 0
    for a in arrs:
        out.append(values[pos : pos + a.size].reshape(a.shape).copy())
        pos += a.size
    return out


def broadcast(array: np.ndarray, src: int = 0) -> np.ndarray:
    """Rank ``src``'s ``array`` (float64) on every worker; every worker passes an array of the same shape."""
    arr = np.ascontiguousarray(array, dtype=np.float64)
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return arr
    import torch

    t = torch.from_numpy(arr.copy()).to(_collective_device(dist))
    dist.broadcast(t, src=src)
    return to_numpy(t)


def all_gather_object(obj: Any) -> list[Any]:
    """Every worker's ``obj``, in rank order."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
