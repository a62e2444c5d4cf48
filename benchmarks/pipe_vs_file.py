"""Pipe mode vs File mode into a Ray Data iterator, end to end, same data, same run.

Starts its own S3 API server (moto, on 127.0.0.1), uploads RecordIO-protobuf objects, then measures
records/s until a ``iter_batches(batch_format="numpy")`` loop has consumed every row:

* Pipe:        ``pipe_dataset`` streams the objects from S3 into the read tasks; no local copy.
* File, cold:  ``download_channel`` to a fresh directory with an empty cache, then the same datasource
               over the local files.
* File, warm:  the same with the cache already filled (the objects are linked from it, not fetched).

The S3 server runs on the same cores as Ray, so S3-side figures include serving the bytes.

    python benchmarks/pipe_vs_file.py [--objects 16] [--rows 1000000] [--cols 28] [--batch-size 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from raymaker.testing import start_moto_server, stop


def upload(client, bucket: str, objects: int, rows: int, cols: int) -> int:
    from raymaker.io.recordio import write_numpy_to_dense_tensor

    client.create_bucket(Bucket=bucket)
    rng = np.random.default_rng(0)
    total_bytes = 0
    for i, n in enumerate(np.diff(np.linspace(0, rows, objects + 1).astype(int))):
        buf = io.BytesIO()
        write_numpy_to_dense_tensor(
            buf, rng.random((n, cols), dtype=np.float32), rng.random(n, dtype=np.float32)
        )
        client.put_object(Bucket=bucket, Key=f"train/part-{i:04d}.rec", Body=buf.getvalue())
        total_bytes += buf.tell()
    return total_bytes


def consume(ds, batch_size: int) -> int:
    rows = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        rows += len(batch["label"])
    return rows


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    t = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in total, over all objects")
    ap.add_argument("--cols", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="raymaker-bench-")
    log = open(os.path.join(work, "moto.log"), "wb")  # noqa: SIM115 (closed below)
    proc, endpoint = start_moto_server(log)
    try:
        # Before Ray starts, so every Ray process inherits the endpoint and credentials.
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            RAYMAKER_HOME=os.path.join(work, "home"),
        )
        import boto3
        import pyarrow
        import ray

        from raymaker.io.channels import Channel, list_objects
        from raymaker.io.modes.file import download_channel
        from raymaker.io.modes.pipe import pipe_dataset
        from raymaker.io.storage import S3Settings

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        t = time.perf_counter()
        nbytes = upload(client, "bench", args.objects, args.rows, args.cols)
        upload_s = time.perf_counter() - t

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per execution otherwise
        settings = S3Settings().resolve()
        channel = Channel(name="train", s3_uri="s3://bench/train/", input_mode="Pipe")
        objects = list_objects(channel, settings)

        # Warm-up: start Ray's worker processes so the first measured mode does not pay for them.
        consume(pipe_dataset(channel, settings=settings, objects=objects[:1]), args.batch_size)

        def pipe(_: int) -> tuple[int, float | None]:
            return consume(pipe_dataset(channel, settings=settings, objects=objects), args.batch_size), None

        def file_mode(warm: bool) -> Callable[[int], tuple[int, float | None]]:
            def run(i: int) -> tuple[int, float | None]:
                # Cold: an empty cache every run. Warm: a cache filled before the measurements.
                cache = os.path.join(work, "cache-warm" if warm else f"cache-cold-{i}")
                dest = os.path.join(work, f"{'warm' if warm else 'cold'}-{i}")
                t = time.perf_counter()
                report = download_channel(channel, dest, cache_dir=cache, settings=settings, objects=objects)
                copy_s = time.perf_counter() - t
                local = Channel(name="train", s3_uri=report.dest_dir, input_mode="File")
                return consume(pipe_dataset(local), args.batch_size), copy_s

            return run

        # Fill the warm cache outside the measurements.
        download_channel(
            channel, os.path.join(work, "fill"), cache_dir=os.path.join(work, "cache-warm"), settings=settings
        )
        modes = [
            ("Pipe (S3 -> Ray Data, no copy)", pipe),
            ("File cold (download + read local)", file_mode(warm=False)),
            ("File warm cache (link + read local)", file_mode(warm=True)),
        ]
        # Interleaved repeats, so drift on a shared machine hits every mode alike.
        runs: dict[str, list[tuple[int, float, float | None]]] = {label: [] for label, _ in modes}
        for i in range(args.repeat):
            for label, fn in modes:
                t = time.perf_counter()
                rows, copy_s = fn(i)
                runs[label].append((rows, time.perf_counter() - t, copy_s))

        mb = nbytes / 1e6
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"ray {ray.__version__}, pyarrow {pyarrow.__version__}; Ray num_cpus={args.num_cpus}; "
            "moto S3 server on the same cores"
        )
        print(
            f"data: {args.objects} RecordIO-protobuf objects, {args.rows} rows x {args.cols} float32 + label, "
            f"{mb:.1f} MB (upload {upload_s:.1f} s); iter_batches(batch_size={args.batch_size}, numpy)"
        )
        print(
            f"repeats: {args.repeat}, interleaved; figures are the median run (min-max seconds in brackets)"
        )
        print(f"{'mode':<38} {'rows':>9} {'MB':>7} {'seconds':>15} {'records/s':>11} {'MB/s':>7}  copy step")
        for label, rs in runs.items():
            for rows, _, _ in rs:
                if rows != args.rows:
                    raise SystemExit(f"{label}: read {rows} rows, expected {args.rows}")
            secs = float(np.median([r[1] for r in rs]))
            spread = f"({min(r[1] for r in rs):.2f}-{max(r[1] for r in rs):.2f})"
            copies = [r[2] for r in rs if r[2] is not None]
            copy = f"{np.median(copies):.2f} s" if copies else "-"
            print(
                f"{label:<38} {args.rows:>9} {mb:>7.1f} {secs:>5.2f} {spread:>9} "
                f"{args.rows / secs:>11,.0f} {mb / secs:>7.1f}  {copy}"
            )
        ray.shutdown()
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
