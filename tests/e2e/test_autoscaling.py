"""Autoscaling with Ray's own autoscaler (its fake multi-node provider, on this machine): work of an
instance type no running node has makes the autoscaler start nodes of that type, and they go away once
idle; an endpoint autoscaling past one node's capacity gets another node. The scenario runs in its
own process with its own Ray head (autoscaling_scenario.py, started as the session begins); this test
checks what it saw."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def seen(background_scenarios) -> dict:
    out = background_scenarios["test_autoscaling.py"].result()
    print({k: v for k, v in out.items() if k != "stderr"})  # the figures, with -s
    return out


def test_a_job_makes_the_autoscaler_start_its_node_type(seen):
    assert seen.get("error") is None, seen["stderr"]
    assert seen["nodes_at_start"] == 0
    assert seen["job_status"] == "Completed", (seen.get("job_reason"), seen["stderr"])
    assert seen["nodes_during_job"] >= 1
    # While the node starts, the job says what it waits for.
    assert any("waiting for 1 x ml.m5.xlarge" in m for m in seen["job_messages"]), seen["job_messages"]


def test_idle_nodes_go_away(seen):
    assert seen["nodes_after_idle"] == 0, seen


def test_endpoint_autoscaling_adds_a_node(seen):
    assert seen["nodes_with_one_replica"] == 1, seen
    assert seen["replicas_under_load"] == 2 and seen["nodes_under_load"] == 2, seen
