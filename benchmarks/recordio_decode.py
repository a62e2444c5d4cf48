"""RecordIO-protobuf decode speed: raymaker's columnar decoder vs the SageMaker training toolkit's reader.

Baseline (same run, same bytes): ``sagemaker_training.recordio._read_recordio`` + ``Record.ParseFromString``
per record, which is how the toolkit reads RecordIO (the parse alone, before any NumPy conversion; a
second baseline figure adds building the feature matrix). Runs pinned to one core.

    python benchmarks/recordio_decode.py [--rows 100000] [--cols 50] [--repeat 15]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sagemaker_training import recordio as toolkit  # noqa: E402
from sagemaker_training.record_pb2 import Record  # noqa: E402

from raymaker.io import recordio  # noqa: E402


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def toolkit_parse(data: bytes) -> int:
    n = 0
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        n += 1
    return n


def toolkit_parse_to_numpy(data: bytes) -> np.ndarray:
    rows = []
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        rows.append(np.asarray(record.features["values"].float32_tensor.values, np.float32))
    return np.stack(rows)


def toolkit_parse_to_csr(data: bytes) -> sp.csr_matrix:
    values, keys, counts, width = [], [], [], 0
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        tensor = record.features["values"].float32_tensor
        values.append(np.asarray(tensor.values, np.float32))
        keys.append(np.asarray(tensor.keys, np.int64))
        counts.append(len(tensor.values))
        width = tensor.shape[0]
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((np.concatenate(values), np.concatenate(keys), indptr), shape=(len(counts), width))


def cold(fn, copies: list[bytes], repeat: int) -> float:
    """Best time when every run decodes a different copy, so the input is not already in cache."""
    times = []
    for i in range(repeat * len(copies)):
        data = copies[i % len(copies)]
        t = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - t)
    return min(times)


def report(label: str, nbytes: int, rows: int, seconds: float) -> None:
    print(
        f"  {label:<44} {seconds * 1e3:9.1f} ms {nbytes / seconds / 1e6:9.0f} MB/s {rows / seconds / 1e6:8.2f} M records/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (pinned to 1), numpy {np.__version__}"
    )
    rng = np.random.default_rng(0)

    x = rng.normal(size=(args.rows, args.cols)).astype(np.float32)
    y = rng.integers(0, 2, args.rows).astype(np.float32)
    buf = io.BytesIO()
    toolkit._write_numpy_to_dense_tensor(buf, x, y)
    dense = buf.getvalue()
    features, labels = recordio.decode(dense)
    assert np.array_equal(features, x) and np.array_equal(labels, y)
    print(
        f"dense {args.rows} x {args.cols} float32 + labels, {len(dense) / 1e6:.1f} MB (written by the toolkit)"
    )
    ours = best_of(lambda: recordio.decode(dense), args.repeat)
    base = best_of(lambda: toolkit_parse(dense), max(3, args.repeat // 2))
    base_np = best_of(lambda: toolkit_parse_to_numpy(dense), 1)
    copies = [bytes(bytearray(dense)) for _ in range(4)]  # 4 x 25 MB: more than the L3 cache holds
    ours_cold = cold(recordio.decode, copies, 3)
    report("raymaker recordio.decode", len(dense), args.rows, ours)
    report("raymaker recordio.decode, input not in cache", len(dense), args.rows, ours_cold)
    report("toolkit _read_recordio + ParseFromString", len(dense), args.rows, base)
    report("toolkit reader + rows to a NumPy matrix", len(dense), args.rows, base_np)
    print(
        f"  speed-up vs toolkit parse: {base / ours:.1f}x (input not in cache: {base / ours_cold:.1f}x); "
        f"vs parse + matrix: {base_np / ours:.1f}x"
    )
    del copies

    s = sp.random(args.rows, 1000, density=0.01, format="csr", dtype=np.float32, random_state=1)
    buf = io.BytesIO()
    toolkit._write_spmatrix_to_sparse_tensor(buf, s, y)
    sparse = buf.getvalue()
    features, _ = recordio.decode(sparse)
    assert (features != s).nnz == 0
    print(
        f"sparse {args.rows} x 1000, 1% dense, float32 + labels, {len(sparse) / 1e6:.1f} MB (written by the toolkit)"
    )
    ours = best_of(lambda: recordio.decode(sparse), args.repeat)
    base = best_of(lambda: toolkit_parse(sparse), max(3, args.repeat // 2))
    base_csr = best_of(lambda: toolkit_parse_to_csr(sparse), 1)
    report("raymaker recordio.decode", len(sparse), args.rows, ours)
    report("toolkit _read_recordio + ParseFromString", len(sparse), args.rows, base)
    report("toolkit reader + rows to a CSR matrix", len(sparse), args.rows, base_csr)
    print(f"  speed-up vs toolkit parse: {base / ours:.1f}x; vs parse + CSR matrix: {base_csr / ours:.1f}x")


if __name__ == "__main__":
    main()
