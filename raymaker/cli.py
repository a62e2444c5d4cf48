"""The ``raymaker`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

_EXTENSIONS = {
    ".csv": "text/csv",
    ".libsvm": "text/libsvm",
    ".svm": "text/libsvm",
    ".jsonl": "application/jsonlines",
    ".json": "application/json",
    ".parquet": "application/x-parquet",
    ".rec": "application/x-recordio-protobuf",
    ".pbr": "application/x-recordio-protobuf",
    ".recordio": "application/x-recordio-protobuf",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}


def guess_content_type(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext not in _EXTENSIONS:
        raise SystemExit(f"cannot tell the format of {path!r} from its extension: pass --content-type")
    return _EXTENSIONS[ext]


def _read_uri(uri: str, content_type: str | None):
    """Every object under ``uri`` (a file, a directory, or an s3:// prefix) decoded into one Batch."""
    import gzip
    import io

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
    batch, n_objects, nbytes = _read_uri(args.uri, args.content_type)
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

    batch, _, _ = _read_uri(args.source, args.content_type)
    target = args.to or guess_content_type(args.dest)
    storage = storage_for(args.dest)
    import io

    buf = io.BytesIO()
    write(batch, buf, target)
    storage.put_bytes(args.dest, buf.getvalue())
    print(f"wrote {len(batch)} rows as {target} to {args.dest} ({buf.tell() / 1e6:.2f} MB)")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from raymaker.quickstart import run_quickstart

    return run_quickstart(args.algorithm)


def cmd_demo(args: argparse.Namespace) -> int:
    from raymaker.io.demo import run_demo

    return run_demo(args.dir, rows=args.rows, with_ray=not args.no_ray)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raymaker", description="A self-hosted SageMaker on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    io_parser = sub.add_parser("io", help="data formats and channels")
    io_sub = io_parser.add_subparsers(dest="io_command", required=True)

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

    from raymaker.cli_jobs import add_commands

    p = sub.add_parser("quickstart", help="train XGBoost on a small real dataset in local mode")
    p.add_argument("--algorithm", default="xgboost", choices=["xgboost", "linear-learner"])
    p.set_defaults(func=cmd_quickstart)
    add_commands(sub)
    from raymaker.cli_hosting import add_commands as add_hosting_commands

    add_hosting_commands(sub)
    from raymaker.cli_tuning import add_commands as add_tuning_commands

    add_tuning_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from raymaker.protocol.errors import SageMakerError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SageMakerError as e:  # ValidationException, ResourceInUse, ResourceNotFound, ...
        print(f"raymaker: error: {e.code}: {e}", file=sys.stderr)
        return 2
    except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
        print(f"raymaker: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
