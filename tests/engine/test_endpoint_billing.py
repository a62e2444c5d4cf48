"""Endpoints billed per variant and instance-second while InService: spans opened and closed as the
endpoint changes, summed by GetResourceCost, cut to a period and grouped by maker in GetCostSummary."""

from __future__ import annotations

import pytest

from raymaker.engine import billing
from raymaker.engine.context import Engine
from raymaker.engine.store import JobStore
from raymaker.io.storage import S3Settings

ARN = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep"


@pytest.fixture
def store(job_store: JobStore) -> JobStore:
    return job_store  # on SQLite and on PostgreSQL


def test_spans_follow_the_endpoint_and_sum_to_its_cost(store: JobStore) -> None:
    # In service at t=1000 with 2 x ml.m5.large (0.115/h) and 1 x ml.m5.xlarge (0.23/h) ...
    store.meter_endpoint("ep", ARN, [("a", "ml.m5.large", 2, 0.115), ("b", "ml.m5.xlarge", 1, 0.23)], now=1000.0)
    # ... variant a autoscales to 3 at t=1100; the endpoint is deleted at t=1200.
    store.meter_endpoint("ep", ARN, [("a", "ml.m5.large", 3, 0.115)], only="a", now=1100.0)
    store.meter_endpoint("ep", ARN, [], now=1200.0)
    cost = billing.endpoint_cost(store, ARN, now=5000.0)  # nothing after the deletion
    assert cost["BillableInstanceSeconds"] == 2 * 100 + 3 * 100 + 1 * 200
    assert cost["Cost"] == pytest.approx((500 * 0.115 + 200 * 0.23) / 3600)
    assert store.meter_rows(ARN, running_only=True) == []


def test_the_summary_cuts_spans_to_the_period_and_groups_by_maker(store: JobStore) -> None:
    store.meter_endpoint("ep", ARN, [("a", "ml.m5.large", 2, 0.115)], now=1000.0)
    store.set_owner(ARN, "alice")
    other = ARN.replace("/ep", "/ep2")
    store.meter_endpoint("ep2", other, [("a", "ml.m5.large", 1, 0.115)], now=1000.0)  # made in-process
    engine = Engine(store, S3Settings(), service=lambda: None)
    out = billing.get_cost_summary(engine, {"StartTime": 1500.0, "EndTime": 1600.0, "GroupBy": "User"})
    assert {e["Key"]: e["BillableInstanceSeconds"] for e in out["Entries"]} == {"alice": 200, billing.LOCAL: 100}
    out = billing.get_cost_summary(engine, {"StartTime": 1500.0, "EndTime": 1600.0})
    assert {e["Key"]: e["ResourceType"] for e in out["Entries"]} == {ARN: "endpoint", other: "endpoint"}
    assert out["TotalCost"] == pytest.approx(300 * 0.115 / 3600, abs=1e-6)
