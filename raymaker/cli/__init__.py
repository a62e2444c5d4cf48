"""The ``raymaker`` command line: ``build_parser`` and ``main``. Each area's commands live in their own
module (``cluster``, ``io``, ``quickstart``, ``jobs``, ``hosting``, ``tuning``, ``audit``, ``billing``,
``images``, ``users``, ``server``), built from
the options, printers and ``list|describe|stop`` builder in ``common``; every command talks to raymaker
through the SDK's ``Session``, never the engine (``cluster`` starts and stops Ray itself, through
``raymaker.cluster``; ``server`` hosts the engine behind ``raymaker.server``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from raymaker.cli import (
    audit,
    billing,
    cluster,
    common,
    hosting,
    images,
    io,
    jobs,
    quickstart,
    server,
    tuning,
    users,
)
from raymaker.protocol.errors import SageMakerError
from raymaker.sdk import Session

AREAS = (cluster, io, quickstart, jobs, hosting, tuning, audit, billing, images, users, server)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raymaker", description="A self-hosted SageMaker on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    for area in AREAS:
        area.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, session: Session | None = None) -> int:
    """Run one command; 0 on success, 2 (with the error on stderr) when raymaker refuses it. A script or
    a test may hand in the ``session`` (its backend) to use; by default each command makes a local one."""
    args = build_parser().parse_args(argv)
    args.session = session
    try:
        return args.func(args)
    except SageMakerError as e:  # ValidationException, ResourceInUse, ResourceNotFound, ...
        common.print_error(f"{e.code}: {e}")
        return 2
    except (ValueError, PermissionError, FileNotFoundError, ConnectionError) as e:
        common.print_error(str(e))
        return 2


__all__ = ["build_parser", "main"]
