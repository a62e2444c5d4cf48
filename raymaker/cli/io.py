"""``raymaker io inspect|convert|demo``: training data formats and channels, locally (no session)."""

from __future__ import annotations

import argparse
import gzip
import io
import time
from typing import Any

from raymaker.cli.common import Subparsers, content_type_of


def guess_content_type(path: str) -> str:
    content_type = content_type_of(path)
    if content_type is None:
        raise SystemExit(f"cannot tell the format of {path!r} from its extension: pass --content-type")
    return content_type


def read_uri(uri: str, content_type: str | None) -> tuple[Any, int, int]:
    """Every object under ``uri`` (a file, a directory, or an s3:// prefix) decoded into one Batch; with
    the number of objects and of bytes read."""
    from raymaker.io.batch import Batch
    from raymaker.io.formats import get_format
    from raymaker.io.storage import storage_for

    storage = storage_for(uri)
    objects = storage.list(uri)
    batches, nbytes = [], 0
    for obj in objects:
        fmt, params = get_format(content_type or guess_content_type(obj.key))
        data = storage.read_bytes(obj.uri)
        nbytes += len(data)
        if obj.key.endswith(".gz"):
            data = gzip.decompress(data)
        stream = io.BytesIO(data)
        stream.name = obj.uri  # errors name the object, not "<bytes>"
        batches.append(fmt.read(stream, **params))
    return Batch.concat(batches), len(objects), nbytes


def cmd_inspect(args: argparse.Namespace) -> int:
    t = time.perf_counter()
    batch, n_objects, nbytes = read_uri(args.uri, args.content_type)
    seconds = time.perf_counter() - t
    kind = "sparse CSR" if batch.is_sparse else "dense"
    print(f"{args.uri}: {n_objects} object(s), {nbytes / 1e6:.2f} MB read in {seconds:.3f} s")
    print(f"  rows: {len(batch)}  features: {batch.features.shape[1:]} {kind} {batch.features.dtype}")
    if batch.is_sparse:
        print(f"  non-zeros: {batch.features.nnz}")
    if batch.labels is None:
        print("  labels: none")
    else:
        import numpy as np

        values = np.unique(batch.labels)
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (" ..." if values.size > 10 else "")
        print(f"  labels: {batch.labels.dtype}, {values.size} distinct: {shown}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from raymaker.io.convert import write
    from raymaker.io.storage import storage_for

    batch, _, _ = read_uri(args.source, args.content_type)
    target = args.to or guess_content_type(args.dest)
    buf = io.BytesIO()
    write(batch, buf, target)
    storage_for(args.dest).put_bytes(args.dest, buf.getvalue())
    print(f"wrote {len(batch)} rows as {target} to {args.dest} ({buf.tell() / 1e6:.2f} MB)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from raymaker.io.demo import run_demo

    return run_demo(args.dir, rows=args.rows, with_ray=not args.no_ray)


def add_commands(sub: Subparsers) -> None:
    io_sub = sub.add_parser("io", help="data formats and channels").add_subparsers(
        dest="io_command", required=True
    )
    p = io_sub.add_parser("inspect", help="decode a file, directory or s3:// prefix and describe it")
    p.add_argument("uri")
    p.add_argument("--content-type", help="e.g. text/csv;label_size=0 (default: from the file extension)")
    p.set_defaults(func=cmd_inspect)

    p = io_sub.add_parser("convert", help="convert training data between formats")
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument("--content-type", help="the source's content type (default: from its extension)")
    p.add_argument("--to", help="the destination content type (default: from its extension)")
    p.set_defaults(func=cmd_convert)

    p = io_sub.add_parser("demo", help="make a small dataset and run it through every format and input mode")
    p.add_argument(
        "--dir", default="raymaker-demo", help="where to write the demo data (default ./raymaker-demo)"
    )
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray Data (Pipe mode) part")
    p.set_defaults(func=cmd_demo)
