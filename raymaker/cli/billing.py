"""``raymaker billing``: what everything cost over a period (raymaker's GetCostSummary), per resource
or per user: training and transform jobs by when they ended, endpoints per instance-second while
InService, at the instance types' hourly prices from the cluster definition."""

from __future__ import annotations

import argparse
from typing import Any

from raymaker.cli.audit import point_in_time
from raymaker.cli.common import Subparsers, get_session, print_table


def cmd_billing(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"GroupBy": "User" if args.by == "user" else "Resource"}
    if args.since:
        params["StartTime"] = args.since
    if args.until:
        params["EndTime"] = args.until
    summary = get_session(args).call("GetCostSummary", params)
    first = "USER" if args.by == "user" else "RESOURCE"
    rows = [
        [e["Key"], *([] if args.by == "user" else [e["ResourceType"]]), e["BillableInstanceSeconds"], f"{e['Cost']:.4f}"]
        for e in summary["Entries"]
    ]
    print_table([first, *([] if args.by == "user" else ["TYPE"]), "INSTANCE-SECONDS", "COST"], rows)
    print(f"total: {summary['TotalCost']:.4f}")
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("billing", help="costs over a period, per resource or per user",
                       description="What training jobs, transform jobs and endpoints cost over a period "
                                   "(per second, at the cluster definition's prices).")
    p.add_argument("--since", type=point_in_time, metavar="WHEN", help="from this time: 10m, 2h, 1d ago, or an ISO time")
    p.add_argument("--until", type=point_in_time, metavar="WHEN", help="up to this time (as --since)")
    p.add_argument("--by", choices=("resource", "user"), default="resource", help="group by (default resource)")
    p.set_defaults(func=cmd_billing)
