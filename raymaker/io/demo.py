"""``raymaker io demo``: a small dataset through every training format and input mode, locally.

No cloud account and no server: channels point at ``file://`` URIs, the same code path as ``s3://``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from raymaker.io.batch import Batch
from raymaker.io.channels import Channel, list_objects, shard_objects
from raymaker.io.convert import to_bytes
from raymaker.io.formats import get_format

_FORMATS = {
    "csv": ("text/csv", ".csv"),
    "libsvm": ("text/libsvm", ".libsvm"),
    "parquet": ("application/x-parquet", ".parquet"),
    "recordio": ("application/x-recordio-protobuf", ".rec"),
}


def make_dataset(rows: int, cols: int = 28, seed: int = 0) -> Batch:
    """A binary classification problem with a known linear boundary (HIGGS-like width)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    w = rng.normal(size=cols).astype(np.float32)
    y = (x @ w + 0.5 * rng.normal(size=rows) > 0).astype(np.float32)
    return Batch(x, y)


def run_demo(directory: str, *, rows: int = 20_000, shards: int = 4, with_ray: bool = True) -> int:
    directory = os.path.abspath(directory)
    data = make_dataset(rows)
    print(f"dataset: {rows} rows x {data.features.shape[1]} float32 features + a 0/1 label -> {directory}")
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    for name, (content_type, ext) in _FORMATS.items():
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        for i in range(shards):
            part = Batch(data.features[bounds[i] : bounds[i + 1]], data.labels[bounds[i] : bounds[i + 1]])
            with open(os.path.join(directory, name, f"part-{i}{ext}"), "wb") as f:
                f.write(to_bytes(part, content_type))

    print("\nformats (each decoded back and compared with the original):")
    for name, (content_type, _) in _FORMATS.items():
        channel = Channel(name="train", s3_uri=f"file://{directory}/{name}/", content_type=content_type)
        objects = list_objects(channel)
        fmt, params = get_format(content_type)
        t = time.perf_counter()
        batch = Batch.concat([fmt.read(obj.key, **params) for obj in objects])
        seconds = time.perf_counter() - t
        features = batch.features.toarray() if batch.is_sparse else batch.features
        ok = np.allclose(features, data.features, rtol=1e-6) and np.array_equal(batch.labels, data.labels)
        size = sum(o.size for o in objects)
        print(
            f"  {content_type:<34} {len(objects)} objects {size / 1e6:6.2f} MB  "
            f"{len(batch)} rows in {seconds * 1e3:7.1f} ms  {'matches' if ok else 'MISMATCH'}"
        )
        if not ok:
            return 1

    print("\nShardedByS3Key across 2 workers (each gets whole objects, disjoint, union = all):")
    channel = Channel(
        name="train",
        s3_uri=f"file://{directory}/recordio/",
        content_type="application/x-recordio-protobuf",
        distribution="ShardedByS3Key",
    )
    objects = list_objects(channel)
    for rank in range(2):
        mine = shard_objects(objects, num_workers=2, rank=rank, distribution="ShardedByS3Key")
        print(f"  worker {rank}: {[os.path.basename(o.key) for o in mine]}")

    from raymaker.io.modes.file import download_channel

    report = download_channel(channel, os.path.join(directory, "input", "data", "train"))
    print(
        f"\nFile mode: {report.objects} objects, {(report.bytes_downloaded + report.bytes_from_cache) / 1e6:.2f} MB "
        f"copied to input/data/train in {report.seconds:.3f} s"
    )
    if with_ray:
        _pipe_demo(channel, rows)
    print("\ndone.")
    return 0


def _pipe_demo(channel: Channel, rows: int) -> None:
    import logging

    import ray

    from raymaker.io.modes.pipe import pipe_dataset

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset progress log in the demo

    print("\nPipe mode: streaming the channel into a Ray Data dataset (starting Ray locally) ...")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=min(2, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        t = time.perf_counter()
        n = 0
        for batch in pipe_dataset(channel).iter_batches(batch_size=4096, batch_format="numpy"):
            n += len(batch["label"])
        seconds = time.perf_counter() - t
        print(
            f"  {n} of {rows} rows streamed in {seconds:.2f} s ({n / seconds:,.0f} records/s, including task start-up)"
        )
    finally:
        if started:
            ray.shutdown()
