"""``raymaker audit``: the audit trail of API calls (raymaker's ``ListAuditEvents``, shaped like
CloudTrail's LookupEvents), as a table or as the full CloudTrail records."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from raymaker.cli.common import Subparsers, clock, get_session, json_default, print_table
from raymaker.sdk import Session

PAGE_SIZE = 50  # the most one LookupEvents page holds in CloudTrail
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def point_in_time(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d`` (that long ago) or an ISO 8601 time (UTC unless it names an offset)."""
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a time ago such as 30s, 10m, 2h or 1d, or an ISO time such as 2025-06-01T09:30"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def audit_events(session: Session, params: dict[str, Any], limit: int) -> Iterator[dict[str, Any]]:
    """Up to ``limit`` events matching ``params``, following NextToken from page to page."""
    params = dict(params)
    left = limit
    while left > 0:
        params["MaxResults"] = min(left, PAGE_SIZE)
        page = session.call("ListAuditEvents", params)
        events = page.get("Events") or []
        yield from events[:left]
        left -= len(events[:left])
        if not page.get("NextToken") or not events:
            return
        params["NextToken"] = page["NextToken"]


def _record(event: dict[str, Any]) -> Any:
    """The full CloudTrail record of an event (the event itself if the backend sent none)."""
    record = event.get("CloudTrailEvent")
    return json.loads(record) if isinstance(record, str) else event


def _time(value: datetime) -> str:
    return clock(value.astimezone(UTC) if value.tzinfo else value)


def cmd_audit(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.event_name:
        params["EventName"] = args.event_name
    if args.since:
        params["StartTime"] = args.since
    if args.until:
        params["EndTime"] = args.until
    if args.errors:
        params["ErrorsOnly"] = True
    if args.user:
        params["Username"] = args.user
    if args.resource:
        params["ResourceName"] = args.resource
    events = audit_events(get_session(args), params, args.max)
    if args.json:
        for event in events:  # one record a line, for jq and grep
            print(json.dumps(_record(event), default=json_default), flush=True)
        return 0
    print_table(
        ["TIME (UTC)", "EVENT NAME", "USER", "ERROR"],
        (
            [_time(e["EventTime"]), e["EventName"], e.get("Username") or "-", e.get("ErrorCode") or "-"]
            for e in events
        ),
    )
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser(
        "audit",
        help="the audit trail: who called which operation, when, and what failed",
        description="Recorded API calls (raymaker's ListAuditEvents, in CloudTrail's shape).",
    )
    p.add_argument("--event-name", metavar="OPERATION", help="only this operation, e.g. CreateTrainingJob")
    p.add_argument(
        "--since", type=point_in_time, metavar="WHEN", help="from this time: 10m, 2h, 1d ago, or an ISO time"
    )
    p.add_argument("--until", type=point_in_time, metavar="WHEN", help="up to this time (as --since)")
    p.add_argument("--errors", action="store_true", help="only the calls that failed")
    p.add_argument("--user", metavar="NAME", help="only the calls this user made")
    p.add_argument("--resource", metavar="NAME_OR_ARN", help="only the calls on this resource (its name or ARN)")
    p.add_argument("--max", type=int, default=50, metavar="N", help="at most N events (default 50)")
    p.add_argument("--json", action="store_true", help="the full CloudTrail records, one JSON a line")
    p.set_defaults(func=cmd_audit)
