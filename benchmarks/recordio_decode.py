"""RecordIO-protobuf decode speed: raymaker's columnar decoder vs the SageMaker training toolkit's reader.

Baseline (same run, same bytes): ``sagemaker_training.recordio._read_recordio`` + ``Record.ParseFromString``
per record, which is how the toolkit reads RecordIO (the parse alone, before any NumPy conversion; a
second baseline figure adds building the feature matrix and the label vector, the output
``recordio.decode`` gives). Runs pinned to one core. Every figure, on either side, is the best of the
same ``--repeat`` runs. "Input not in cache": before each of those runs, on both sides, a buffer of
8 x the L3 cache is read, so the input is not in any CPU cache when the run starts.

    python benchmarks/recordio_decode.py [--rows 100000] [--cols 50] [--repeat 15]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sagemaker_training import recordio as toolkit  # noqa: E402
from sagemaker_training.record_pb2 import Record  # noqa: E402

from raymaker.io import recordio  # noqa: E402


def best_of(fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None) -> float:
    """Best of ``repeat`` timed calls of ``fn``; ``before`` runs untimed ahead of each."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def l3_bytes() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip()
        return int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1], 0)
    except (OSError, ValueError):
        return 32 << 20


def cache_evictor() -> Callable[[], object]:
    """Reading 8 x L3 (at least 256 MB) of other memory leaves none of the input in any CPU cache."""
    scratch = np.ones(max(8 * l3_bytes(), 256 << 20) // 8, np.uint64)
    return lambda: int(scratch.sum())


def toolkit_parse(data: bytes) -> int:
    n = 0
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        n += 1
    return n


def toolkit_parse_to_numpy(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels, as ``recordio.decode`` returns them."""
    rows, labels = [], []
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        rows.append(np.asarray(record.features["values"].float32_tensor.values, np.float32))
        labels.append(record.label["values"].float32_tensor.values[0])
    return np.stack(rows), np.asarray(labels, np.float32)


def toolkit_parse_to_csr(data: bytes) -> tuple[sp.csr_matrix, np.ndarray]:
    """CSR features and labels, as ``recordio.decode`` returns them."""
    values, keys, counts, labels, width = [], [], [], [], 0
    record = Record()
    for payload in toolkit._read_recordio(io.BytesIO(data)):
        record.ParseFromString(payload)
        tensor = record.features["values"].float32_tensor
        values.append(np.asarray(tensor.values, np.float32))
        keys.append(np.asarray(tensor.keys, np.int64))
        counts.append(len(tensor.values))
        width = tensor.shape[0]
        labels.append(record.label["values"].float32_tensor.values[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    matrix = sp.csr_matrix((np.concatenate(values), np.concatenate(keys), indptr), shape=(len(counts), width))
    return matrix, np.asarray(labels, np.float32)


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
    tx, ty = toolkit_parse_to_numpy(dense)  # the baseline decodes the same bytes to the same arrays
    assert np.array_equal(tx, x) and np.array_equal(ty, y)
    evict = cache_evictor()
    ours = best_of(lambda: recordio.decode(dense), args.repeat)
    ours_cold = best_of(lambda: recordio.decode(dense), args.repeat, before=evict)
    base = best_of(lambda: toolkit_parse(dense), args.repeat)
    base_cold = best_of(lambda: toolkit_parse(dense), args.repeat, before=evict)
    base_np = best_of(lambda: toolkit_parse_to_numpy(dense), args.repeat)
    del evict
    report("raymaker recordio.decode", len(dense), args.rows, ours)
    report("raymaker recordio.decode, input not in cache", len(dense), args.rows, ours_cold)
    report("toolkit _read_recordio + ParseFromString", len(dense), args.rows, base)
    report("toolkit parse, input not in cache", len(dense), args.rows, base_cold)
    report("toolkit reader + rows to a NumPy matrix", len(dense), args.rows, base_np)
    print(
        f"  speed-up vs toolkit parse: {base / ours:.1f}x (input not in cache, both: {base_cold / ours_cold:.1f}x); "
        f"vs parse + matrix: {base_np / ours:.1f}x"
    )

    s = sp.random(args.rows, 1000, density=0.01, format="csr", dtype=np.float32, random_state=1)
    buf = io.BytesIO()
    toolkit._write_spmatrix_to_sparse_tensor(buf, s, y)
    sparse = buf.getvalue()
    features, _ = recordio.decode(sparse)
    assert (features != s).nnz == 0
    print(
        f"sparse {args.rows} x 1000, 1% dense, float32 + labels, {len(sparse) / 1e6:.1f} MB (written by the toolkit)"
    )
    tx, ty = toolkit_parse_to_csr(sparse)
    assert (tx != s).nnz == 0 and np.array_equal(ty, y)
    ours = best_of(lambda: recordio.decode(sparse), args.repeat)
    base = best_of(lambda: toolkit_parse(sparse), args.repeat)
    base_csr = best_of(lambda: toolkit_parse_to_csr(sparse), args.repeat)
    report("raymaker recordio.decode", len(sparse), args.rows, ours)
    report("toolkit _read_recordio + ParseFromString", len(sparse), args.rows, base)
    report("toolkit reader + rows to a CSR matrix", len(sparse), args.rows, base_csr)
    print(f"  speed-up vs toolkit parse: {base / ours:.1f}x; vs parse + CSR matrix: {base_csr / ours:.1f}x")


if __name__ == "__main__":
    main()
