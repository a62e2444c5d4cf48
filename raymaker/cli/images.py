"""``raymaker images``: the custom container images on this node's runtime (podman or docker). A
cluster's nodes each run their own runtime: push images to a registry every node can pull from, or
load an archive on each node."""

from __future__ import annotations

import argparse
import sys

from raymaker.cli.common import Subparsers, print_table
from raymaker.containers.runtime import ContainerRuntimeError, find_runtime


def cmd_load(args: argparse.Namespace) -> int:
    try:
        runtime = find_runtime()
        names = runtime.load(args.file)
    except ContainerRuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name in names:
        print(f"loaded {name} ({runtime.name})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        rows = find_runtime().images()
    except ContainerRuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(["IMAGE", "ID", "CREATED", "SIZE"], ([r["Image"], r["Id"], r["Created"], r["Size"]] for r in rows))
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("images", help="custom container images on this node (load an archive, list them)",
                       description="Images for custom containers, in this node's podman or docker.")
    images = p.add_subparsers(dest="images_command", required=True)
    load = images.add_parser("load", help="load an image archive (docker save / podman save)")
    load.add_argument("file", help="the archive, e.g. my-algorithm.tar")
    load.set_defaults(func=cmd_load)
    listing = images.add_parser("list", help="the images this node's runtime holds")
    listing.set_defaults(func=cmd_list)
