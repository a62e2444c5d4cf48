"""``raymaker up`` / ``down`` / ``status``: a local Ray cluster that outlives the scripts using it,
with Ray's Jobs server, so ``ray job submit`` runs a raymaker script on it as is."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from raymaker.cli.common import Subparsers, print_error, print_json
from raymaker.cluster import local
from raymaker.protocol.environment import raymaker_home


def how_to_reach(cluster: local.LocalCluster) -> list[str]:
    """The lines ``up`` and ``status`` print: the addresses, and the exact commands that reach it."""
    lines = [
        f"dashboard:       {cluster.dashboard_url}",
        f"Ray address:     {cluster.gcs_address}   (raymaker scripts and commands join it by themselves)",
        f"RAYMAKER_HOME:   {cluster.home}",
        f"Ray temp dir:    {cluster.temp_dir}   (logs: {cluster.temp_dir}/session_latest/logs)",
        "",
    ]
    exports = cluster.cli_exports()
    if exports:
        lines += [
            "Ray's own CLI sends the cluster's token only in token mode; in each shell that uses it:",
            *(f"  {line}" for line in exports),
            f"  (the token: {local.token_source(os.environ)}; Ray's CLI reads it from there)",
        ]
    lines += [
        "Run a raymaker script on it as a Ray job:",
        f"  {cluster.submit_command()}",
        f"  ray job logs --address {cluster.dashboard_url} <submission id>",
        f"Cluster state:   ray status --address {cluster.gcs_address}",
        "Stop it:         raymaker down",
    ]
    return lines


def cmd_up(args: argparse.Namespace) -> int:
    notes: list[str] = []
    started_at = time.monotonic()
    try:
        cluster, started = local.up(
            num_cpus=args.num_cpus,
            gcs_port=args.port,
            dashboard_port=args.dashboard_port,
            temp_dir=args.temp_dir,
            timeout=args.timeout,
            notes=notes,
        )
    except local.StartError as e:
        print_error(f"the local cluster did not start: {e}")
        return 1
    if started:
        print(f"raymaker: local Ray cluster up in {time.monotonic() - started_at:.1f} s (pid {cluster.pid})")
    else:
        print(f"raymaker: the local Ray cluster is already up (pid {cluster.pid}); `raymaker down` stops it")
    for note in notes:
        print(f"  note: {note}")
    if started and cluster.carried:
        print(f"  carried to every Ray process: {', '.join(cluster.carried)}")
    print()
    for line in how_to_reach(cluster):
        print(line)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = local.down(timeout=args.timeout)
    if cluster is None:
        print(f"raymaker: no local cluster is up for RAYMAKER_HOME={raymaker_home()}")
        return 0
    left = local.processes_of(cluster)
    if left:
        print_error(f"the local cluster's processes {left} are still running")
        return 1
    print(f"raymaker: local Ray cluster stopped ({cluster.gcs_address}, dashboard {cluster.dashboard_url})")
    return 0


def _resources(nodes: list[dict[str, Any]]) -> str:
    total: dict[str, float] = {}
    for node in nodes:
        for name, amount in (node.get("resources_total") or {}).items():
            if not name.startswith("node:"):
                total[name] = total.get(name, 0.0) + float(amount)
    gib = {"memory", "object_store_memory"}
    return ", ".join(
        f"{name} {amount / 2**30:.1f} GiB" if name in gib else f"{name} {amount:g}"
        for name, amount in sorted(total.items())
    )


def cmd_status(args: argparse.Namespace) -> int:
    cluster = local.running()
    if cluster is None:
        print(
            f"raymaker: no local cluster is up for RAYMAKER_HOME={raymaker_home()} (`raymaker up` starts one)"
        )
        return 3  # as `systemctl status` of a stopped unit: scripts can test it
    info = local.describe(cluster)
    if args.json:
        print_json({"up": True, **vars(cluster), **info})
        return 0
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cluster.started))
    print(f"raymaker: local Ray cluster up since {since} (pid {cluster.pid})")
    version = info.get("version") or {}
    if "version_error" in info:
        print(f"Jobs server:     not answering ({info['version_error']})")
    else:
        jobs = info.get("ray_jobs") or {}
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(jobs.items())) or "none yet"
        print(
            f"Jobs server:     {cluster.dashboard_url} (Ray {version.get('ray_version', '?')}; Ray jobs: {counts})"
        )
    if "nodes_error" in info:
        print(f"nodes:           not known ({info['nodes_error']})")
    else:
        nodes = info["nodes"]
        print(f"nodes:           {len(nodes)} alive; {_resources(nodes)}")
    if "job_services_error" in info:
        print(f"job service:     not known ({info['job_services_error']})")
    else:
        services = info["job_services"]
        print(
            f"job service:     {', '.join(services) if services else 'not started yet (the first request starts it)'}"
        )
    print()
    for line in how_to_reach(cluster):
        print(line)
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser(
        "up", help="start a local Ray cluster that outlives your scripts (ray job submit works)"
    )
    p.add_argument("--num-cpus", type=float, help="CPUs the cluster offers (default: all of this machine's)")
    p.add_argument(
        "--dashboard-port",
        type=int,
        help=f"the dashboard and Jobs server port on 127.0.0.1 (default {local.DEFAULT_DASHBOARD_PORT}, "
        "or a free one if that is taken)",
    )
    p.add_argument(
        "--port",
        type=int,
        help=f"the Ray (GCS) port (default {local.DEFAULT_GCS_PORT}, or a free one if that is taken)",
    )
    p.add_argument("--temp-dir", help="Ray's temp dir: sessions and logs (default: Ray's, /tmp/ray)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it to come up")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the local Ray cluster `raymaker up` started (nothing else)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to let Ray stop before killing it")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="whether the local cluster is up, its addresses, nodes and resources")
    p.add_argument("--json", action="store_true", help="everything as JSON")
    p.set_defaults(func=cmd_status)
