"""ListAuditEvents (raymaker's own): the audit trail of API calls, newest first, shaped as CloudTrail's
LookupEvents answers, so tools written for CloudTrail read it as they are."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from raymaker.engine.context import Engine
from raymaker.engine.metering import epoch_seconds
from raymaker.protocol.errors import ValidationError


def list_audit_events(engine: Engine, params: dict[str, Any]) -> dict[str, Any]:
    token = params.get("NextToken") or ""
    if token and not token.isdigit():
        raise ValidationError(
            f"NextToken {token!r} is not one this API gave: pass the NextToken of the last page"
        )
    size = int(params.get("MaxResults", 50))
    events = engine.store.audit_events(
        params.get("EventName"),
        since=epoch_seconds(params.get("StartTime")),
        until=epoch_seconds(params.get("EndTime")),
        errors_only=bool(params.get("ErrorsOnly")),
        user=params.get("Username"),
        resource=params.get("ResourceName"),
        before_id=int(token) if token else None,
        newest_first=True,  # as CloudTrail's LookupEvents answers
        limit=size + 1,
    )
    page, more = events[:size], len(events) > size
    out: dict[str, Any] = {"Events": [_lookup_event(e) for e in page]}
    if more:
        out["NextToken"] = str(page[-1]["_id"])
    return out


def _lookup_event(event: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in event.items() if k != "_id"}
    identity = record.get("userIdentity") or {}
    out = {
        "EventId": record["eventID"],
        "EventName": record["eventName"],
        "EventTime": datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        "Username": identity.get("userName") or identity.get("type") or "",
        "CloudTrailEvent": json.dumps(record, default=str),
    }
    if record.get("errorCode"):
        out["ErrorCode"] = record["errorCode"]
    return out


OPERATIONS = {"ListAuditEvents": list_audit_events}
