"""Autoscaling with Ray's own autoscaler (its fake multi-node provider, on this machine): work of an
instance type no running node has makes the autoscaler start nodes of that type, and they go away once
idle; an endpoint autoscaling past one node's capacity gets another node. The scenario runs in its
own process with its own Ray head (autoscaling_scenario.py); this test checks what it saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCENARIO = Path(__file__).with_name("autoscaling_scenario.py")


@pytest.fixture(scope="module")
def seen(s3_server, tmp_path_factory) -> dict:
    env = {
        **os.environ,
        "BUCKET": s3_server.new_bucket(),
        "RAYMAKER_HOME": str(tmp_path_factory.mktemp("autoscaling-home")),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # Nothing of the test session's own Ray (its address, its Serve ports) may leak into this one.
    for key in (
        "RAY_ADDRESS",
        "RAYMAKER_CLUSTER_CONFIG",
        "RAYMAKER_DEFAULT_BUCKET",
        "RAYMAKER_RUNTIME_URL",
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
    ):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(SCENARIO)], env=env, capture_output=True, text=True, timeout=480)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the scenario printed nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    out = json.loads(lines[-1])
    out["stderr"] = proc.stderr[-4000:]
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
